package discordtest

import (
	"strings"
	"testing"
)

// TestModalPrefill: a modal's text input may carry a pre-filled value
// within its own length bounds (and Discord's 4000), which the fake
// records; a longer one is refused as Discord does.
func TestModalPrefill(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	s.AddTextChannel("1", "10", "art")
	c := newClient(t, s)
	c.connect(s.Token(), IntentGuildMessages)
	register(t, c, "1")
	modal := func(value string, maxLength int) map[string]any {
		input := map[string]any{"type": 4, "custom_id": "prompt", "label": "What should change?", "style": 2, "value": value}
		if maxLength > 0 {
			input["max_length"] = maxLength
		}
		return map[string]any{"type": 9, "data": map[string]any{"custom_id": "k:editm:i1", "title": "Edit image",
			"components": []any{map[string]any{"type": 1, "components": []any{input}}}}}
	}
	tests := []struct {
		name      string
		value     string
		maxLength int
		wantCode  int
	}{
		{"within max_length", "add sails --seed 7", 100, 204},
		{"over max_length", strings.Repeat("x", 101), 100, 400},
		{"over 4000 without max_length", strings.Repeat("x", 4001), 0, 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, err := s.Slash("10", "5", "imagine", String("prompt", "x"))
			if err != nil {
				t.Fatal(err)
			}
			c.next("INTERACTION_CREATE")
			code, body, _ := c.do("POST", "/interactions/"+in.ID+"/"+in.Token+"/callback", modal(tc.value, tc.maxLength))
			if code != tc.wantCode {
				t.Fatalf("callback: got %d %v, want %d", code, body, tc.wantCode)
			}
			if code != 204 {
				return
			}
			if got := s.Interaction(in.ID).Modal.Values["prompt"]; got != tc.value {
				t.Errorf("recorded value: got %q, want %q", got, tc.value)
			}
		})
	}
}
