package discord

import (
	"fmt"
	"testing"
	"unicode/utf8"

	"github.com/bwmarrin/discordgo"

	"kontextbot/bot"
)

// TestHistoryMessage: the history's menus fit Discord's limits (at most
// 25 options, the last images when there are more; labels and values of
// at most 100 characters; custom ids of at most 100 that read back to the
// conversation), and a DM, where no thread can open, gets only the
// "make current" menu.
func TestHistoryMessage(t *testing.T) {
	long := ""
	for range 300 {
		long += "é"
	}
	sheet := func(conv bot.ConvKey, n int) *bot.HistorySheet {
		h := &bot.HistorySheet{Conv: conv, PNG: []byte("png")}
		for i := range n {
			h.Items = append(h.Items, bot.HistoryItem{Number: i + 1, Turn: bot.Turn{ID: fmt.Sprintf("i%016d", i), Prompt: long}, Head: i == n-1})
		}
		return h
	}
	thread := bot.ConvKey{Platform: Platform, Workspace: "800000000000000001", Channel: "800000000000000002", Thread: "800000000000000003"}
	dm := bot.ConvKey{Platform: Platform, Channel: "800000000000000004"}
	tests := []struct {
		name      string
		h         *bot.HistorySheet
		menus     int
		options   int
		firstItem int
	}{
		{"a thread", sheet(thread, 4), 2, 4, 1},
		{"more images than a menu holds", sheet(thread, 30), 2, 25, 6},
		{"a DM", sheet(dm, 3), 1, 3, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, file := historyMessage(tt.h)
			if file == nil || file.ContentType != "image/png" || len(m.Attachments) != 1 {
				t.Fatalf("no PNG attached: %+v", m.Attachments)
			}
			if len(m.Components) != tt.menus {
				t.Fatalf("got %d rows, want %d", len(m.Components), tt.menus)
			}
			for _, row := range m.Components {
				sel := row.(discordgo.ActionsRow).Components[0].(discordgo.SelectMenu)
				if len(sel.CustomID) > 100 {
					t.Errorf("custom id %q longer than 100", sel.CustomID)
				}
				action, conv, ok := parseHistorySelectID(sel.CustomID, tt.h.Conv.Workspace)
				if !ok || conv != tt.h.Conv || (action != actHistUse && action != actBranch) {
					t.Errorf("custom id %q reads back as %q %+v %v", sel.CustomID, action, conv, ok)
				}
				if len(sel.Options) != tt.options {
					t.Fatalf("got %d options, want %d", len(sel.Options), tt.options)
				}
				if got := sel.Options[0].Value; got != tt.h.Items[tt.firstItem-1].Turn.ID {
					t.Errorf("first option %q, want image %d", got, tt.firstItem)
				}
				for _, o := range sel.Options {
					if utf8.RuneCountInString(o.Label) > 100 || len(o.Value) > 100 || o.Label == "" {
						t.Errorf("option %q = %q past Discord's limits", o.Label, o.Value)
					}
				}
			}
		})
	}
	if _, _, ok := parseHistorySelectID("k:hu:not-a-snowflake:", ""); ok {
		t.Error("a custom id with a bad channel was read")
	}
}
