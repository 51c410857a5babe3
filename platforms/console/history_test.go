package console_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/console"
)

// TestHistorySheetAndUse: /history writes the contact sheet into the
// folder and says where; /use N makes image N current, so the next edit
// starts from it; a number that is not there gets a sentence.
func TestHistorySheetAndUse(t *testing.T) {
	h := newHarness(t)
	var out strings.Builder
	chat, err := console.New(h.core, &syncWriter{w: &out}, h.dir, "ada", "t")
	if err != nil {
		t.Fatal(err)
	}
	h.core.Register(chat)
	script := strings.Join([]string{"/imagine a lighthouse", "at night", "in a storm", "/undo", "make it snow",
		"/history", "/use 3", "/use 9", "/use", "add a boat", "/quit"}, "\n")
	if err := chat.Run(context.Background(), strings.NewReader(script)); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	m := regexp.MustCompile(`▦ (\S+history-[0-9-]+\.png)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("/history printed no sheet:\n%s", text)
	}
	data, err := os.ReadFile(m[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(bytes.NewReader(data)); err != nil {
		t.Errorf("the sheet is not a PNG: %v", err)
	}
	if filepath.Dir(m[1]) != h.dir {
		t.Errorf("sheet written to %s, want the folder %s", m[1], h.dir)
	}
	for _, want := range []string{"● image 3 is current", "There is no image 9 here: pick one from 1 to 4.", "/use N"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	images, _ := filepath.Glob(filepath.Join(h.dir, "0*.png"))
	slices.Sort(images)
	if len(images) != 5 {
		t.Fatalf("got %d images, want 5 (imagine, 3 edits, the boat):\n%s", len(images), text)
	}
	third, _ := os.ReadFile(images[2]) // "in a storm": image 3
	boat, _ := os.ReadFile(images[4])
	p, err := kontexttest.ReadProvenance(boat)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(third)
	if got, want := p.InputSHA256, hex.EncodeToString(sum[:]); got != want || p.Prompt != "add a boat" {
		t.Errorf("the edit after /use 3 started from %s (%q), want image 3 %s", got, p.Prompt, want)
	}
}
