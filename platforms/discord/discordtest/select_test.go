package discordtest

import (
	"fmt"
	"strings"
	"testing"
)

// TestStringSelectRules: a string select is checked as Discord checks it
// (alone in its row, 1 to 25 options, label and value 1 to 100
// characters, distinct values), and Choose picks only what it offers.
func TestStringSelectRules(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	s.AddTextChannel("1", "10", "art")
	c := newClient(t, s)
	c.connect(s.Token(), IntentGuildMessages)
	quiet := map[string]any{"parse": []string{}}
	opts := func(n int, label, value func(i int) string) []any {
		var out []any
		for i := range n {
			out = append(out, map[string]any{"label": label(i), "value": value(i)})
		}
		return out
	}
	num := func(i int) string { return fmt.Sprint(i) }
	sel := func(id string, options []any) map[string]any {
		return map[string]any{"type": 3, "custom_id": id, "options": options}
	}
	row := func(cs ...any) map[string]any { return map[string]any{"type": 1, "components": cs} }
	button := map[string]any{"type": 2, "style": 1, "label": "b", "custom_id": "b"}
	tests := []struct {
		name string
		rows []any
		want int
	}{
		{"one select", []any{row(sel("k:s", opts(3, num, num)))}, 200},
		{"25 options", []any{row(sel("k:s", opts(25, num, num)))}, 200},
		{"26 options", []any{row(sel("k:s", opts(26, num, num)))}, 400},
		{"no options", []any{row(sel("k:s", nil))}, 400},
		{"101-character label", []any{row(sel("k:s", opts(1, func(int) string { return strings.Repeat("é", 101) }, num)))}, 400},
		{"101-character value", []any{row(sel("k:s", opts(1, num, func(int) string { return strings.Repeat("v", 101) })))}, 400},
		{"empty label", []any{row(sel("k:s", opts(1, func(int) string { return "" }, num)))}, 400},
		{"duplicate values", []any{row(sel("k:s", opts(2, num, func(int) string { return "same" })))}, 400},
		{"101-character custom id", []any{row(sel(strings.Repeat("c", 101), opts(1, num, num)))}, 400},
		{"a select and a button in one row", []any{row(sel("k:s", opts(1, num, num)), button)}, 400},
		{"a select and buttons in two rows", []any{row(sel("k:s", opts(1, num, num))), row(button)}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, _ := c.do("POST", "/channels/10/messages", map[string]any{"content": "x", "allowed_mentions": quiet, "components": tt.rows})
			if code != tt.want {
				t.Errorf("got %d, want %d", code, tt.want)
			}
		})
	}
	code, m, _ := c.do("POST", "/channels/10/messages", map[string]any{"content": "pick", "allowed_mentions": quiet,
		"components": []any{row(sel("k:s", opts(3, num, num)))}})
	if code != 200 {
		t.Fatalf("post: %d", code)
	}
	id := m["id"].(string)
	got, ok := s.Message(id)
	if !ok || len(got.Selects) != 1 || len(got.Selects[0].Options) != 3 || got.Selects[0].Options[2].Value != "2" {
		t.Fatalf("the select as stored: %+v", got.Selects)
	}
	for _, bad := range [][]string{{"7"}, {}, {"0", "1"}} {
		if _, err := s.Choose("u1", id, "k:s", bad...); err == nil {
			t.Errorf("choosing %q succeeded", bad)
		}
	}
	if _, err := s.Choose("u1", id, "k:nope", "1"); err == nil {
		t.Error("choosing in a select the message lacks succeeded")
	}
}
