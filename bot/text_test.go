package bot_test

import (
	"testing"

	"kontextbot/bot"
	"kontextbot/kontext"
)

func TestQueuedText(t *testing.T) {
	tests := []struct {
		pos  int
		want string
	}{
		{1, "Queued · 1st in line"},
		{kontext.ExactPositions, "Queued · 50th in line"},
		{kontext.PositionBeyond, "Queued · over 50 in line"},
		{kontext.PositionBeyond + 1, "Queued · over 50 in line"},
	}
	for _, tt := range tests {
		if got := bot.QueuedText(tt.pos); got != tt.want {
			t.Errorf("QueuedText(%d): got %q, want %q", tt.pos, got, tt.want)
		}
	}
}
