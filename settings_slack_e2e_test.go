package main

import (
	"strings"
	"testing"

	"kontextbot/platforms/slack/slackfake"
)

// settingsView runs /imagine settings as user and returns the modal it
// opened.
func (e *slEnv) settingsView(user, ch string) slackfake.View {
	e.t.Helper()
	views := len(e.slack.Views())
	e.acked(e.slack.Slash(user, ch, "/imagine", "settings"))
	var v slackfake.View
	e.wait("the settings modal", func() bool {
		vs := e.slack.Views()
		if len(vs) > views {
			v = vs[len(vs)-1]
			return true
		}
		return false
	})
	if v.User != user || v.CallbackID != "kontext_settings" {
		e.t.Fatalf("modal: %+v", v)
	}
	return v
}

// TestSettingsSlack: a workspace admin (users.info is_admin) lowers the
// daily limit in the /imagine settings modal; the next /imagine of a
// person already at the new limit gets the limit sentence and costs
// nothing; /imagine usage shows the setting; a person who is not an
// admin gets no modal but the sentence saying who can, and a submission
// from someone no longer an admin changes nothing; KONTEXT_ADMINS may
// change settings too; the settings survive a restart.
func TestSettingsSlack(t *testing.T) {
	slNoLeaks(t)
	for _, mode := range []string{"socket", "http"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testSettingsSlack(t, mode)
		})
	}
}

func testSettingsSlack(t *testing.T, mode string) {
	const root = "U0ROOT"
	e := slStart(t, mode, map[string]string{"KONTEXT_USER_DAILY": "5", "KONTEXT_ADMINS": root})
	e.slack.AddUser(slAda, "ada")
	e.slack.AddUser(slBob, "bob")
	e.slack.AddUser(root, "root")
	e.slack.SetRole(slBob, slackfake.Role{Admin: true})
	ch := e.slack.CreateChannel("art", true)
	e.imagine(slAda, ch, "a red kite")

	// Ada is no admin: no modal, a sentence.
	views := len(e.slack.Views())
	e.acked(e.slack.Slash(slAda, ch, "/imagine", "settings"))
	e.waitEphemeral(slAda, "Only admins can change the bot's settings")
	if n := len(e.slack.Views()); n != views {
		t.Errorf("a modal was opened for a person who is not an admin")
	}

	v := e.settingsView(slBob, ch)
	for _, want := range []string{`"number_input"`, `"static_select"`, `"multi_channels_select"`, `Empty: the default, 5.`} {
		if !strings.Contains(string(v.Blocks), want) {
			t.Errorf("the modal lacks %s: %s", want, v.Blocks)
		}
	}
	// Slack's client refuses what the inputs do not allow.
	if _, err := e.slack.SubmitValues(v, map[string]map[string]any{"daily_limit": {"value": "-1"}}); err == nil {
		t.Error("the fake accepted a daily limit below the input's min_value")
	}
	env, err := e.slack.SubmitValues(v, map[string]map[string]any{"daily_limit": {"value": "1"}, "model": {"value": "flux-kontext-pro"}})
	if err != nil {
		t.Fatal(err)
	}
	e.acked(env)
	e.waitEphemeral(slBob, "Saved: the settings apply from the next request.")

	// The next request of ada, who has made one image today: refused, free.
	creates := e.kx.Stats().Creates
	e.acked(e.slack.Slash(slAda, ch, "/imagine", "a second kite"))
	e.waitEphemeral(slAda, "You have used your 1 images for today")
	if got := e.kx.Stats().Creates; got != creates {
		t.Errorf("%d creates after the refused request, want %d", got, creates)
	}
	// Bob, under the limit, gets the new default model.
	if p := e.prov(e.imagine(slBob, ch, "a blue kite")); p.Model != "flux-kontext-pro" {
		t.Errorf("bob's image used %q, want flux-kontext-pro", p.Model)
	}
	e.acked(e.slack.Slash(slAda, ch, "/imagine", "usage"))
	u := e.waitEphemeral(slAda, "Daily limit per person: 1 images (set here)")
	if !strings.Contains(u.Text, "(limit 1)") || !strings.Contains(u.Text, "Default model: flux-kontext-pro (set here)") {
		t.Errorf("usage: %q", u.Text)
	}

	// A modal submitted by someone who is not (or no longer) an admin.
	stale := v
	stale.User = slAda
	env, err = e.slack.SubmitValues(stale, map[string]map[string]any{"daily_limit": {"value": "100"}})
	if err != nil {
		t.Fatal(err)
	}
	e.acked(env)
	e.waitEphemeral(slAda, "workspace admins and owners")

	// KONTEXT_ADMINS may change settings; they survive a restart.
	rv := e.settingsView(root, ch)
	env, err = e.slack.SubmitValues(rv, map[string]map[string]any{"channels": {"value": []string{ch}}})
	if err != nil {
		t.Fatal(err)
	}
	e.acked(env)
	e.waitEphemeral(root, "<#"+ch+">")
	e.stopBot()
	e.startBot()
	v = e.settingsView(slBob, ch)
	for _, want := range []string{`"initial_value":"1"`, `"initial_channels":["` + ch + `"]`, `"value":"flux-kontext-pro"`} {
		if !strings.Contains(string(v.Blocks), want) {
			t.Errorf("after a restart the modal lacks %s: %s", want, v.Blocks)
		}
	}
	e.acked(e.slack.Slash(slAda, ch, "/imagine", "a third kite"))
	if n := len(e.slack.Ephemerals(slAda)); n == 0 {
		t.Fatal("no answers to ada")
	}
	e.wait("the limit sentence after the restart", func() bool {
		n := 0
		for _, m := range e.slack.Ephemerals(slAda) {
			if strings.Contains(m.Text, "You have used your 1 images for today") {
				n++
			}
		}
		return n == 2
	})
	if p := e.slack.Problems(); len(p) > 0 {
		t.Errorf("fake Slack problems: %q", p)
	}
	e.checkClean()
}
