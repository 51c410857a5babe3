package main

import (
	"strings"
	"testing"
)

// helpMarks are what every platform's help says: each command, button and
// the Edit image menu, and the example conversation.
var helpMarks = []string{"/imagine", "/edit", "/usage", "Edit image", "Reroll", "Undo", "Cancel",
	"Details", "Use these settings", "Delete", "enhance",
	"a lighthouse on a cliff at dusk", "add a rainbow over the sea", "back to the rainbow picture"}

// TestHelpOnDiscord: /help is registered and answered only to its user.
func TestHelpOnDiscord(t *testing.T) {
	h := dcFakes(t, dcOptions{})
	h.serve()
	in := h.slash(dcArt, dcAda, "help")
	h.wait("the help", func() bool {
		m, ok := h.dc.Original(in.ID)
		return ok && strings.Contains(m.Content, "Example")
	})
	m, _ := h.dc.Original(in.ID)
	if !m.Ephemeral() {
		t.Error("the help is visible to everyone, want it only to its user")
	}
	for _, w := range append(helpMarks, "**Reroll**", "Apps → Edit image", "/help", "count:4", "**Use N**") {
		if !strings.Contains(m.Content, w) {
			t.Errorf("Discord's help lacks %q:\n%s", w, m.Content)
		}
	}
}

// TestHelpOnSlack: /imagine help says the same, only to its user.
func TestHelpOnSlack(t *testing.T) {
	e := slStart(t, "socket", nil)
	ch := e.slack.CreateChannel("help", true)
	e.acked(e.slack.Slash(slAda, ch, "/imagine", "help"))
	eph := e.waitEphemeral(slAda, "Example")
	for _, w := range append(helpMarks, "*Reroll*", "/imagine help", "--n 4", "*Use N*") {
		if !strings.Contains(eph.Text, w) {
			t.Errorf("Slack's help lacks %q:\n%s", w, eph.Text)
		}
	}
	if n := len(e.slack.TopLevel(ch)); n != 0 {
		t.Errorf("%d messages in the channel; the help is ephemeral", n)
	}
}
