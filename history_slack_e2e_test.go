package main

import (
	"encoding/json"
	"strings"
	"testing"

	"kontextbot/platforms/slack/slackfake"
)

// slOption finds the value of the option whose text starts with prefix
// in the static_select actionID of a message.
func slOption(t *testing.T, m slackfake.Message, actionID, prefix string) string {
	t.Helper()
	var blocks []struct {
		Elements []struct {
			Type     string `json:"type"`
			ActionID string `json:"action_id"`
			Options  []struct {
				Text struct {
					Text string `json:"text"`
				} `json:"text"`
				Value string `json:"value"`
			} `json:"options"`
		} `json:"elements"`
	}
	_ = json.Unmarshal(m.Blocks, &blocks)
	for _, b := range blocks {
		for _, el := range b.Elements {
			if el.Type != "static_select" || el.ActionID != actionID {
				continue
			}
			for _, o := range el.Options {
				if strings.HasPrefix(o.Text.Text, prefix) {
					return o.Value
				}
			}
		}
	}
	t.Fatalf("message %s has no option %q in menu %s: %s", m.TS, prefix, actionID, m.Blocks)
	return ""
}

// slSheet waits for the n-th contact sheet (a bot file named
// history.png) in a channel or thread.
func (e *slEnv) slSheet(channel, thread string, n int) slackfake.Message {
	e.t.Helper()
	var sheet slackfake.Message
	e.wait("a history sheet", func() bool {
		seen := 0
		for _, m := range e.images(channel, thread) {
			if m.Files[0].Name == "history.png" {
				if seen++; seen == n {
					sheet = m
					return true
				}
			}
		}
		return false
	})
	return sheet
}

// TestSlackHistory: after imagine, edit, edit, undo, edit in a picture's
// thread, the History button posts the contact sheet (its picture shows
// the branch) with two menus; picking an older image makes it current
// (the next edit starts from it) or opens it in a new thread; after a
// restart the menu still works. "/imagine history" in the channel shows
// the channel's pictures.
func TestSlackHistory(t *testing.T) {
	slNoLeaks(t)
	e := slStart(t, "socket", map[string]string{"KONTEXT_SLOTS": "1"})
	e.slack.AddUser(slAda, "ada")
	e.slack.AddUser(slBob, "bob")
	ch := e.slack.CreateChannel("history", true)
	root := e.imagine(slAda, ch, "a lighthouse")
	e.slack.Say(slAda, ch, root.TS, "at night")
	e.slack.Say(slAda, ch, root.TS, "in a storm")
	imgs := e.waitImages(ch, root.TS, 3)
	night, storm := imgs[1], imgs[2]
	e.click(slAda, storm, "kontext_undo")
	e.waitImages(ch, root.TS, 4)
	e.slack.Say(slAda, ch, root.TS, "make it snow")
	snow := e.waitImages(ch, root.TS, 5)[4]
	creates := e.kx.Stats().Creates

	e.click(slBob, snow, "kontext_history")
	sheet := e.slSheet(ch, root.TS, 1)
	checkBranchSheet(t, e.data(sheet))
	if !strings.Contains(string(sheet.Blocks), "4 · make it snow (current)") {
		t.Errorf("the menus lack the current image: %s", sheet.Blocks)
	}
	if got := e.kx.Stats().Creates; got != creates {
		t.Errorf("the history called the provider %d times", got-creates)
	}

	// Make image 3 current: shown again, and the next edit starts from it.
	env, err := e.slack.Choose(slBob, sheet, "kontext_history_use", slOption(t, sheet, "kontext_history_use", "3 · "))
	if err != nil {
		t.Fatal(err)
	}
	e.acked(env)
	again := e.waitImages(ch, root.TS, 7)[6] // the sheet is the sixth
	if slSHA(e.data(again)) != slSHA(e.data(storm)) {
		t.Errorf("picking image 3 showed another image")
	}
	e.slack.Say(slAda, ch, root.TS, "add a boat")
	if p := e.prov(e.waitImages(ch, root.TS, 8)[7]); p.Prompt != "add a boat" || p.InputSHA256 != slSHA(e.data(storm)) {
		t.Errorf("after picking image 3: %q from %s, want an edit of image 3", p.Prompt, p.InputSHA256)
	}

	// Open image 2 in a new thread: posted in the channel; its thread continues from it.
	env, err = e.slack.Choose(slAda, sheet, "kontext_history_thread", slOption(t, sheet, "kontext_history_thread", "2 · "))
	if err != nil {
		t.Fatal(err)
	}
	e.acked(env)
	branch := e.waitImages(ch, "", 2)[1]
	e.slack.Say(slAda, ch, branch.TS, "add fireworks")
	if p := e.prov(e.waitImages(ch, branch.TS, 2)[1]); p.InputSHA256 != slSHA(e.data(night)) {
		t.Errorf("the new thread's first edit started from %s, want image 2", p.InputSHA256)
	}

	// After a restart the same menu works.
	e.stopBot()
	e.startBot()
	env, err = e.slack.Choose(slAda, sheet, "kontext_history_use", slOption(t, sheet, "kontext_history_use", "4 · "))
	if err != nil {
		t.Fatal(err)
	}
	e.acked(env)
	e.waitImages(ch, root.TS, 9)
	e.slack.Say(slAda, ch, root.TS, "add a moon")
	if p := e.prov(e.waitImages(ch, root.TS, 10)[9]); p.Prompt != "add a moon" || p.InputSHA256 != slSHA(e.data(snow)) {
		t.Errorf("after the restart: %q from %s, want an edit of image 4", p.Prompt, p.InputSHA256)
	}

	// "/imagine history" in the channel: the channel's own pictures.
	e.acked(e.slack.Slash(slAda, ch, "/imagine", "history"))
	top := e.slSheet(ch, "", 1)
	if !strings.Contains(string(top.Blocks), "1 · a lighthouse") {
		t.Errorf("the channel's history: %s", top.Blocks)
	}
	e.checkClean()
}
