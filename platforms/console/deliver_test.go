package console_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"kontextbot/bot"
	"kontextbot/platforms/console"
)

// TestDeliverToTheAskingChat: with several chats on one database, any of
// them may run a job; its image goes to the folder of the chat it was
// asked in (the job's origin), once per turn, even when a process that
// stopped before recording the delivery already wrote it there.
func TestDeliverToTheAskingChat(t *testing.T) {
	mine, theirs := t.TempDir(), t.TempDir()
	tests := []struct {
		name    string
		origin  map[string]string
		earlier bool // theirs already holds the turn's file
		wantDir string
		// wantFiles is how many files theirs holds afterwards.
		wantFiles int
	}{
		{name: "asked in another chat", origin: map[string]string{"dir": theirs}, wantDir: theirs, wantFiles: 1},
		{name: "written there already", origin: map[string]string{"dir": theirs}, earlier: true, wantDir: theirs, wantFiles: 1},
		{name: "no folder in the origin", wantDir: mine},
		{name: "a relative folder", origin: map[string]string{"dir": "elsewhere"}, wantDir: mine},
		{name: "a folder that is gone", origin: map[string]string{"dir": filepath.Join(theirs, "gone")}, wantDir: mine},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, d := range []string{mine, theirs} {
				entries, _ := os.ReadDir(d)
				for _, e := range entries {
					os.Remove(filepath.Join(d, e.Name()))
				}
			}
			turn := bot.Turn{ID: "iturn" + string(rune('a'+i)), Kind: bot.KindImagine, Format: "png", Width: 1, Height: 1}
			if tc.earlier {
				if err := os.WriteFile(filepath.Join(theirs, "007-imagine-"+turn.ID+".png"), []byte("earlier"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			c, err := console.New(nil, io.Discard, mine, "ada", "default")
			if err != nil {
				t.Fatal(err)
			}
			job := &bot.Job{ID: "j1", Origin: tc.origin}
			if _, err := c.Deliver(context.Background(), job, &bot.Delivery{Turn: turn, Image: []byte("png bytes")}); err != nil {
				t.Fatal(err)
			}
			got, _ := filepath.Glob(filepath.Join(tc.wantDir, "*-"+turn.ID+".png"))
			if len(got) != 1 {
				t.Fatalf("files of the turn in %s: %v, want one", tc.wantDir, got)
			}
			if all, _ := filepath.Glob(filepath.Join(theirs, "*")); tc.wantDir == theirs && len(all) != tc.wantFiles {
				t.Errorf("files in the asking chat's folder: %v, want %d", all, tc.wantFiles)
			}
			if data, _ := os.ReadFile(got[0]); tc.earlier && string(data) != "earlier" {
				t.Errorf("the earlier file was written again: %q", data)
			}
		})
	}
}
