package slackfake

import (
	"context"
	"fmt"
	"strings"
	"testing"

	slackgo "github.com/slack-go/slack"
)

// TestStaticSelectInMessages: chat.postMessage checks a message's
// static_select as Block Kit does (1 to 100 options, option text 1 to 75
// characters, value 1 to 150, unique action ids in a block), and Choose
// picks only an option the menu offers.
func TestStaticSelectInMessages(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	ch := s.CreateChannel("c", true)
	api := slackgo.New(s.Options().BotToken, slackgo.OptionAPIURL(s.APIURL()), slackgo.OptionHTTPClient(&bearer{}))
	text := func(s string) *slackgo.TextBlockObject {
		return slackgo.NewTextBlockObject("plain_text", s, false, false)
	}
	menu := func(id string, n int, label, value func(i int) string) *slackgo.SelectBlockElement {
		var opts []*slackgo.OptionBlockObject
		for i := range n {
			opts = append(opts, slackgo.NewOptionBlockObject(value(i), text(label(i)), nil))
		}
		return slackgo.NewOptionsSelectBlockElement(slackgo.OptTypeStatic, text("Pick"), id, opts...)
	}
	num := func(i int) string { return fmt.Sprint(i) }
	tests := []struct {
		name     string
		elements []slackgo.BlockElement
		ok       bool
	}{
		{"one menu", []slackgo.BlockElement{menu("a", 3, num, num)}, true},
		{"100 options", []slackgo.BlockElement{menu("a", 100, num, num)}, true},
		{"101 options", []slackgo.BlockElement{menu("a", 101, num, num)}, false},
		{"no options", []slackgo.BlockElement{menu("a", 0, num, num)}, false},
		{"76-character option text", []slackgo.BlockElement{menu("a", 1, func(int) string { return strings.Repeat("é", 76) }, num)}, false},
		{"151-character value", []slackgo.BlockElement{menu("a", 1, num, func(int) string { return strings.Repeat("v", 151) })}, false},
		{"256-character action id", []slackgo.BlockElement{menu(strings.Repeat("a", 256), 1, num, num)}, false},
		{"two menus, one action id", []slackgo.BlockElement{menu("a", 1, num, num), menu("a", 1, num, num)}, false},
		{"two menus and a button", []slackgo.BlockElement{menu("a", 1, num, num), menu("b", 1, num, num),
			slackgo.NewButtonBlockElement("c", "v", text("Go"))}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := api.PostMessageContext(context.Background(), ch, slackgo.MsgOptionText("pick", false),
				slackgo.MsgOptionBlocks(slackgo.NewActionBlock("menus", tt.elements...)))
			if got := err == nil; got != tt.ok {
				t.Errorf("posted: %v (%v), want %v", got, err, tt.ok)
			}
		})
	}
	_, ts, err := api.PostMessageContext(context.Background(), ch, slackgo.MsgOptionText("pick", false),
		slackgo.MsgOptionBlocks(slackgo.NewActionBlock("menus", menu("a", 3, num, num))))
	if err != nil {
		t.Fatal(err)
	}
	msg := Message{Channel: ch, TS: ts}
	for _, bad := range []struct{ action, value string }{{"a", "7"}, {"b", "1"}} {
		if _, err := s.Choose("U1", msg, bad.action, bad.value); err == nil {
			t.Errorf("choosing %q in %q succeeded", bad.value, bad.action)
		}
	}
}
