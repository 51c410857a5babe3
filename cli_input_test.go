package main

import (
	"bytes"
	"context"
	"errors"
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
