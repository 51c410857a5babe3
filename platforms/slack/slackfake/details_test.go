package slackfake

import (
	"context"
	"errors"
	"strings"
	"testing"

	slackgo "github.com/slack-go/slack"
)

// TestPermalinkEphemeralAndDelete: chat.getPermalink answers Slack's
// link (with thread_ts and cid for a reply) and message_not_found for a
// deleted message; chat.postEphemeral keeps its blocks, whose buttons can
// be clicked; chat.delete removes only the bot's own messages.
func TestPermalinkEphemeralAndDelete(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	ch := s.CreateChannel("c", true)
	root := s.Say("U1", ch, "", "hello")
	ctx := context.Background()
	api := slackgo.New(s.Options().BotToken, slackgo.OptionAPIURL(s.APIURL()), slackgo.OptionHTTPClient(&bearer{}))
	_, reply, err := api.PostMessageContext(ctx, ch, slackgo.MsgOptionText("a reply", false), slackgo.MsgOptionTS(root.TS))
	if err != nil {
		t.Fatal(err)
	}
	base := "https://" + s.Options().TeamDomain + ".slack.com/archives/" + ch + "/p"
	tests := []struct {
		name, ts, want, wantErr string
	}{
		{"top level", root.TS, base + strings.ReplaceAll(root.TS, ".", ""), ""},
		{"in a thread", reply, base + strings.ReplaceAll(reply, ".", "") + "?thread_ts=" + root.TS + "&cid=" + ch, ""},
		{"unknown", "1.000001", "", "message_not_found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := api.GetPermalinkContext(ctx, &slackgo.PermalinkParameters{Channel: ch, Ts: tc.ts})
			var se slackgo.SlackErrorResponse
			switch {
			case tc.wantErr != "" && (!errors.As(err, &se) || se.Err != tc.wantErr):
				t.Errorf("got %q, %v; want %s", got, err, tc.wantErr)
			case tc.wantErr == "" && (err != nil || got != tc.want):
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}

	// The bot may delete its reply, not a person's message.
	if _, _, err := api.DeleteMessageContext(ctx, ch, root.TS); err == nil || !strings.Contains(err.Error(), "cant_delete_message") {
		t.Errorf("deleting a person's message: %v, want cant_delete_message", err)
	}
	if _, _, err := api.DeleteMessageContext(ctx, ch, reply); err != nil {
		t.Fatal(err)
	}
	if _, err := api.GetPermalinkContext(ctx, &slackgo.PermalinkParameters{Channel: ch, Ts: reply}); err == nil {
		t.Error("a deleted message still has a permalink")
	}

	// An ephemeral message keeps its blocks; its button can be pressed.
	blocks := slackgo.MsgOptionBlocks(slackgo.NewActionBlock("b", slackgo.NewButtonBlockElement("use", "v1", slackgo.NewTextBlockObject("plain_text", "Use", false, false))))
	if _, err := api.PostEphemeralContext(ctx, ch, "U1", slackgo.MsgOptionText("details", false), blocks); err != nil {
		t.Fatal(err)
	}
	es := s.Ephemerals("U1")
	if len(es) != 1 || es[0].TS == "" || !strings.Contains(string(es[0].Blocks), `"action_id":"use"`) {
		t.Fatalf("ephemerals %+v", es)
	}
	if _, err := s.ClickEphemeral(es[0], "nope"); err == nil {
		t.Error("a button the ephemeral does not have was pressed")
	}
	if p := s.Problems(); len(p) != 0 {
		t.Errorf("problems: %q", p)
	}
}

// TestInitialValueBounds: a plain_text_input's initial_value must fit its
// max_length (else Slack's 3000).
func TestInitialValueBounds(t *testing.T) {
	ptr := func(n int) *int { return &n }
	str := func(s string) *string { return &s }
	tests := []struct {
		name string
		e    element
		ok   bool
	}{
		{"fits", element{Type: "plain_text_input", ActionID: "a", InitialValue: str("add sails --seed 7"), MaxLength: ptr(100)}, true},
		{"over max_length", element{Type: "plain_text_input", ActionID: "a", InitialValue: str(strings.Repeat("x", 101)), MaxLength: ptr(100)}, false},
		{"over 3000", element{Type: "plain_text_input", ActionID: "a", InitialValue: str(strings.Repeat("x", 3001))}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkElement("e", &tc.e); (err == nil) != tc.ok {
				t.Errorf("got %v, want ok %v", err, tc.ok)
			}
		})
	}
}
