package main

import (
	"strings"
	"testing"

	"kontextbot/platforms/discord/discordtest"
)

// dcSettings runs /kontext settings <sub> and waits for its private answer.
func (h *dcHarness) dcSettings(user string, sub discordtest.Option) string {
	h.t.Helper()
	in := h.slash(dcArt, user, "kontext", discordtest.Group("settings", sub))
	var m discordtest.Message
	h.wait("the answer to /kontext settings", func() bool {
		var ok bool
		m, ok = h.dc.Original(in.ID)
		return ok && m.Content != ""
	})
	if !m.Ephemeral() {
		h.t.Errorf("settings answer %q is not ephemeral", m.Content)
	}
	return m.Content
}

// TestSettingsDiscord: a member with Manage Server lowers the daily limit
// with /kontext settings set; the next /imagine of a member already at
// the new limit gets the limit sentence and costs nothing; /usage shows
// the setting; a member without the permission (once a server admin has
// made the command visible to them) is told who may change settings; the
// setting survives a restart, and reset brings the environment back.
func TestSettingsDiscord(t *testing.T) {
	h := dcStart(t, dcOptions{env: map[string]string{"KONTEXT_USER_DAILY": "5"}})
	h.dc.SetPermissions(dcBob, discordtest.DefaultPermissions|discordtest.PermManageGuild)
	h.result(h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a red kite")))

	// Hidden from ada, as default_member_permissions asks.
	if _, err := h.dc.Slash(dcArt, dcAda, "kontext", discordtest.Group("settings", discordtest.Sub("show"))); err == nil {
		t.Error("/kontext was shown to a member without Manage Server")
	}
	if got := h.dcSettings(dcBob, discordtest.Sub("show")); !strings.Contains(got, "Daily limit per person: 5 images (default)") {
		t.Errorf("show: %q", got)
	}
	got := h.dcSettings(dcBob, discordtest.Sub("set", discordtest.Integer("daily_limit", 1),
		discordtest.String("model", "flux-kontext-pro"), discordtest.ChannelOption("add_channel", dcArt)))
	for _, want := range []string{"Saved", "Daily limit per person: 1 images (set here)", "Default model: flux-kontext-pro (set here)", "<#" + dcArt + ">"} {
		if !strings.Contains(got, want) {
			t.Errorf("set answered %q, want %q in it", got, want)
		}
	}

	// Applies to ada's next request: refused, nothing created.
	in := h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a second kite"))
	var f []discordtest.Message
	h.wait("the limit sentence", func() bool { f = h.dc.Followups(in.ID); return len(f) == 1 })
	if !f[0].Ephemeral() || !strings.Contains(f[0].Content, "You have used your 1 images for today") {
		t.Errorf("over the new limit: %q (ephemeral %v)", f[0].Content, f[0].Ephemeral())
	}
	if got := h.prov.Stats().Creates; got != 1 {
		t.Errorf("%d creates, want 1: the refused request reached the provider", got)
	}
	// Bob, under the limit, gets the new default model.
	if p := dcProv(t, h.result(h.slash(dcArt, dcBob, "imagine", discordtest.String("prompt", "a blue kite")))); p.Model != "flux-kontext-pro" {
		t.Errorf("bob's image used %q, want the new default flux-kontext-pro", p.Model)
	}

	usage := h.slash(dcArt, dcAda, "usage")
	h.wait("ada's usage", func() bool {
		m, ok := h.dc.Original(usage.ID)
		return ok && strings.Contains(m.Content, "(limit 1)") && strings.Contains(m.Content, "Daily limit per person: 1 images (set here)")
	})

	// A member a server admin let see the command is still refused.
	h.dc.OverrideCommandPermissions("kontext")
	if got := h.dcSettings(dcAda, discordtest.Sub("set", discordtest.Integer("daily_limit", 100))); !strings.Contains(got, "Only admins can change") || !strings.Contains(got, "Manage Server") {
		t.Errorf("a member's change answered %q, want who can change settings", got)
	}

	// A restart keeps them.
	h.stop()
	h.serve()
	if got := h.dcSettings(dcBob, discordtest.Sub("show")); !strings.Contains(got, "Daily limit per person: 1 images (set here)") {
		t.Errorf("after a restart: %q", got)
	}
	// Reset: the environment's 5 again, and ada may make her second image.
	if got := h.dcSettings(dcBob, discordtest.Sub("reset", discordtest.String("setting", "daily_limit"))); !strings.Contains(got, "Daily limit per person: 5 images (default)") {
		t.Errorf("reset answered %q", got)
	}
	h.result(h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a second kite")))
}
