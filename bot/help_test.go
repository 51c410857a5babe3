package bot_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"kontextbot/bot"
)

func TestHelp(t *testing.T) {
	tests := []struct {
		name  string
		style bot.HelpStyle
		want  []string
		not   []string
	}{
		{name: "Buttons", style: bot.HelpStyle{Bold: "**%s**", Imagine: "/imagine prompt", Edit: "/edit prompt", Usage: "/usage", Help: "/help",
			Options: "Options: aspect_ratio, seed, model.", Menu: "Apps → Edit image", Buttons: true, Thread: "picture's thread",
			Reply: "A reply to an image edits it.", Mention: "@kontextbot PROMPT makes a picture.", Settings: "/kontext settings",
			Variations: "count:4"},
			want: []string{"**/imagine prompt count:4**: up to 4 variations", "**Use N**", "**/kontext settings**: for admins", "picture. A reply to an image edits it.\n@kontextbot PROMPT makes a picture.\n", "**/imagine prompt**", "**Edit image** (Apps → Edit image)", "**Reroll**", "**Undo**", "**Cancel**", "**/help**", "> /imagine a lighthouse", "> Undo",
				"**Details**: prompt, seed", "**Use these settings**", "**Delete**: removes the post"},
			not: []string{"/reroll"}},
		{name: "Typed", style: bot.HelpStyle{Imagine: "/imagine PROMPT", Edit: "/edit PROMPT", Usage: "/usage", Help: "/help", Thread: "conversation",
			Details: "/details [N]", Delete: "/delete [N]", Variations: "--n 4"},
			want: []string{"/reroll", "/undo", "> /undo", "/details [N]: prompt, seed", "/delete [N]: deletes", "/imagine PROMPT --n 4: up to 4 variations", "/use N picks another"},
			not:  []string{"Edit image", "Cancel", "**", "%s", "settings"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := bot.Help(tt.style)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("the help lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(got, w) {
					t.Errorf("the help has %q:\n%s", w, got)
				}
			}
			if n := utf8.RuneCountInString(got); n > 2000 {
				t.Errorf("the help has %d characters, over Discord's 2,000", n)
			}
		})
	}
}
