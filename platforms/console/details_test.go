package console_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/console"
)

// TestDetailsDeleteEnhance: --enhance reaches the provider; /details
// shows the current image's prompt, seed, enhance and parent, /details N
// an older one; deleting an image a later one was made from keeps it
// hidden, and deleting that later one then leaves nothing.
func TestDetailsDeleteEnhance(t *testing.T) {
	h := newHarness(t)
	var out strings.Builder
	chat, err := console.New(h.core, &syncWriter{w: &out}, h.dir, "ada", "t")
	if err != nil {
		t.Fatal(err)
	}
	h.core.Register(chat)
	script := strings.Join([]string{
		"/imagine a boat --seed 5",
		"/edit add sails --enhance --seed 6",
		"/details",
		"/details 1",
		"/delete 1",
		"/details 9",
		"/delete",
		"/quit",
	}, "\n") + "\n"
	if err := chat.Run(context.Background(), strings.NewReader(script)); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{
		"Prompt: add sails", "Seed: 6", "Enhance: on", "Made from: image ", "Settings: add sails --seed 6 --model flux-kontext-max --enhance",
		"Prompt: a boat", "Seed: 5", "Enhance: off",
		"(a later image was made from it: it stays hidden, for /undo)",
		"There is no image 9 here",
		"no image is left here",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the chat lacks %q:\n%s", want, text)
		}
	}
	files, err := kontexttest.ReadProvenance(mustRead(t, h.dir, "edit"))
	if err != nil {
		t.Fatal(err)
	}
	if !files.PromptUpsampling {
		t.Errorf("the edit's provenance: %+v, want prompt_upsampling", files)
	}
}

// mustRead reads the one image file of kind in dir.
func mustRead(t *testing.T, dir, kind string) []byte {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, "*-"+kind+"-*"))
	if err != nil || len(matches) != 1 {
		t.Fatalf("%s images in %s: %v, %v", kind, dir, matches, err)
	}
	data, err := os.ReadFile(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	return data
}
