package bot_test

import (
	"strings"
	"testing"

	"kontextbot/bot"
)

// TestNumbered: turns keep the order they were stored in, except that the
// images of one variations group take their group's places in the order
// of their numbers.
func TestNumbered(t *testing.T) {
	turn := func(id, group string, v int) bot.Turn { return bot.Turn{ID: id, Group: group, Variation: v} }
	tests := []struct {
		name  string
		turns []bot.Turn
		want  string
	}{
		{name: "no groups", turns: []bot.Turn{turn("a", "", 0), turn("b", "", 0)}, want: "a b"},
		{name: "a group stored out of order", turns: []bot.Turn{turn("v3", "g", 3), turn("v1", "g", 1), turn("v2", "g", 2)}, want: "v1 v2 v3"},
		{name: "a group after other images", turns: []bot.Turn{turn("a", "", 0), turn("v2", "g", 2), turn("b", "", 0), turn("v1", "g", 1)}, want: "a v1 b v2"},
		{name: "two groups", turns: []bot.Turn{turn("g2", "g", 2), turn("h2", "h", 2), turn("g1", "g", 1), turn("h1", "h", 1)}, want: "g1 h1 g2 h2"},
		{name: "empty", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conv := &bot.Conversation{Turns: tt.turns}
			var ids []string
			for _, t := range conv.Numbered() {
				ids = append(ids, t.ID)
			}
			if got := strings.Join(ids, " "); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if len(tt.turns) > 0 && tt.turns[0].ID != conv.Turns[0].ID {
				t.Error("Numbered changed the conversation's own turns")
			}
		})
	}
	var none *bot.Conversation
	if got := none.Numbered(); got != nil {
		t.Errorf("nil conversation: got %v, want nil", got)
	}
}
