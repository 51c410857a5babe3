package main

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kontextbot/bot"
	"kontextbot/kontext/kontexttest"
)

// TestOneShotCleansPromptsLikeTheChat checks that imagine and edit pass
// their prompt through the same cleaner and limits as the chat platforms:
// what the chat refuses the command line refuses with the same sentence,
// before any call to the provider, and what it cleans arrives cleaned.
func TestOneShotCleansPromptsLikeTheChat(t *testing.T) {
	s, env := fakeEnv(t, kontexttest.Options{Pixels: 64 * 64})
	if err := os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env["KONTEXT_FIRST_POLL"] = "100ms" // ignored where the setting does not exist
	dir := t.TempDir()
	in := filepath.Join(dir, "in.png")
	writeTestPNG(t, in, 64, 48)
	tests := []struct {
		name       string
		cmd        string
		prompt     string
		wantErr    string // the sentence printed; "" for success
		wantPrompt string // what the provider received
	}{
		{name: "TooLongImagine", cmd: "imagine", prompt: strings.Repeat("a", 4999), wantErr: bot.Explain(bot.ErrPromptTooLong)},
		{name: "TooLongEdit", cmd: "edit", prompt: strings.Repeat("ж", bot.MaxPromptRunes+1), wantErr: bot.Explain(bot.ErrPromptTooLong)},
		{name: "OnlyControls", cmd: "imagine", prompt: "\x1b\x07\x7f", wantErr: bot.Explain(bot.ErrEmptyPrompt)},
		{name: "EscapeBellDelete", cmd: "imagine", prompt: "a red\x1b[31m fox\x07 in\x7f snow\u009b", wantPrompt: "a red[31m fox in snow"},
		{name: "LineBreaks", cmd: "edit", prompt: "make it\nwinter\r\nplease", wantPrompt: "make it winter please"},
		{name: "PersianKeepsZWNJ", cmd: "imagine", prompt: "می\u200cخواهم یک روباه", wantPrompt: "می\u200cخواهم یک روباه"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.Stats().Creates
			out := filepath.Join(dir, tt.name+".png")
			args := []string{tt.cmd, "-prompt", tt.prompt, "-o", out}
			if tt.cmd == "edit" {
				args = append(args, "-image", in)
			}
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), args, envMap(env), &stdout, &stderr)
			creates := s.Stats().Creates - before
			if tt.wantErr != "" {
				var ue usageError
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.As(err, &ue) {
					t.Fatalf("got %v, want a usage error saying %q", err, tt.wantErr)
				}
				if creates != 0 {
					t.Errorf("creates: got %d, want 0 (refused before any call)", creates)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s: %v\n%s", tt.cmd, err, stderr.String())
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			p, err := kontexttest.ReadProvenance(data)
			if err != nil {
				t.Fatal(err)
			}
			if p.Prompt != tt.wantPrompt {
				t.Errorf("the provider got %+q, want %+q", p.Prompt, tt.wantPrompt)
			}
			if creates != 1 {
				t.Errorf("creates: got %d, want 1", creates)
			}
		})
	}
}

// TestEditRefusesAnImageTooLargeToDecode gives `edit` the header of a
// 6000×6000 PNG at 16 bits per channel (288 MB once decoded): it is
// refused from the header with the chat's sentence, before any call.
func TestEditRefusesAnImageTooLargeToDecode(t *testing.T) {
	s, env := fakeEnv(t, kontexttest.Options{})
	if err := os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := []byte("IHDR\x00\x00\x17\x70\x00\x00\x17\x70\x10\x06\x00\x00\x00") // 6000×6000, 16-bit RGBA
	b.WriteString("\x00\x00\x00\x0d")                                          // the chunk's length
	b.Write(ihdr)
	crc := crc32.ChecksumIEEE(ihdr)
	b.Write([]byte{byte(crc >> 24), byte(crc >> 16), byte(crc >> 8), byte(crc)})
	in := filepath.Join(t.TempDir(), "deep.png")
	if err := os.WriteFile(in, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"edit", "-image", in, "-prompt", "make it winter", "-o", in + ".out.png"}, envMap(env), &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "That image is too large to open: 6000×6000 pixels") {
		t.Fatalf("got %v, want the sentence that the image is too large to open", err)
	}
	if st := s.Stats(); st.Creates != 0 {
		t.Errorf("creates: got %d, want 0", st.Creates)
	}
}
