package main

import (
	"strings"
	"testing"

	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/discord/discordtest"
)

// dcOption finds the value of the option whose label starts with prefix
// in a message's select custom-id'd like prefix "k:<action>:".
func dcOption(t *testing.T, m discordtest.Message, action, labelPrefix string) (selectID, value string) {
	t.Helper()
	for _, s := range m.Selects {
		if !strings.HasPrefix(s.CustomID, "k:"+action+":") {
			continue
		}
		for _, o := range s.Options {
			if strings.HasPrefix(o.Label, labelPrefix) {
				return s.CustomID, o.Value
			}
		}
	}
	t.Fatalf("message %s has no %q option in a %s select: %+v", m.ID, labelPrefix, action, m.Selects)
	return "", ""
}

// TestDiscordHistory: after imagine, edit, edit, undo, edit in a picture's
// thread, /history answers with a contact sheet whose picture shows the
// branch, and menus listing the images; picking an older image makes it
// current (the next edit starts from it), or opens it in a new thread;
// after a restart the same menu still works. A result's History button
// answers the same.
func TestDiscordHistory(t *testing.T) {
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 128 * 128}})
	r0, th := h.dcPicture(dcAda, "a lighthouse")
	h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "at night"})
	h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "in a storm"})
	ms := h.waitImages(th.ID, 2)
	night, storm := ms[0], ms[1]
	h.click(dcAda, storm, "Undo")
	h.waitImages(th.ID, 3)
	h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "make it snow"})
	snow := h.waitImages(th.ID, 4)[3]
	creates := h.prov.Stats().Creates

	sheetMsg := h.result(h.slash(th.ID, dcAda, "history"))
	if got := sheetMsg.Attachments[0]; got.Filename != "history.png" {
		t.Errorf("the history's attachment is %q", got.Filename)
	}
	checkBranchSheet(t, sheetMsg.Attachments[0].Data)
	if len(sheetMsg.Selects) != 2 || len(sheetMsg.Selects[0].Options) != 4 {
		t.Fatalf("the history's menus: %+v, want two of 4 images", sheetMsg.Selects)
	}
	for i, want := range []string{"1 · a lighthouse", "2 · at night", "3 · in a storm", "4 · make it snow (current)"} {
		if got := sheetMsg.Selects[0].Options[i].Label; got != want {
			t.Errorf("option %d: got %q, want %q", i+1, got, want)
		}
	}
	if got := h.prov.Stats().Creates; got != creates {
		t.Errorf("/history called the provider %d times", got-creates)
	}

	// Make image 3 current: it is shown again, and the next edit starts from it.
	id, value := dcOption(t, sheetMsg, "hu", "3 · ")
	if _, err := h.dc.Choose(dcBob, sheetMsg.ID, id, value); err != nil {
		t.Fatal(err)
	}
	again := h.waitImages(th.ID, 6)[5] // the history sheet is the fifth
	if !strings.HasPrefix(again.Content, "Current again: in a storm") || dcSHA(again.Attachments[0].Data) != dcSHA(storm.Attachments[0].Data) {
		t.Errorf("picking image 3 showed %q", again.Content)
	}
	h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "add a boat"})
	boat := h.waitImages(th.ID, 7)[6]
	if p := dcProv(t, boat); p.Prompt != "add a boat" || p.InputSHA256 != dcSHA(storm.Attachments[0].Data) {
		t.Errorf("after picking image 3: %q from %s, want an edit of image 3", p.Prompt, p.InputSHA256)
	}

	// Open image 2 in a new thread: posted in #art, its thread continues from it.
	id, value = dcOption(t, sheetMsg, "hb", "2 · ")
	if _, err := h.dc.Choose(dcAda, sheetMsg.ID, id, value); err != nil {
		t.Fatal(err)
	}
	branch := h.waitImages(dcArt, 2)[1]
	if !strings.HasPrefix(branch.Content, "New thread from: at night") {
		t.Errorf("the branch post says %q", branch.Content)
	}
	th2 := h.thread(branch.ID)
	h.say(discordtest.Say{ChannelID: th2.ID, UserID: dcAda, Content: "add fireworks"})
	if p := dcProv(t, h.waitImages(th2.ID, 1)[0]); p.InputSHA256 != dcSHA(night.Attachments[0].Data) {
		t.Errorf("the new thread's first edit started from %s, want image 2", p.InputSHA256)
	}

	// After a restart the same menu works: image 4 becomes current again.
	h.stop()
	h.serve()
	id, value = dcOption(t, sheetMsg, "hu", "4 · ")
	if _, err := h.dc.Choose(dcAda, sheetMsg.ID, id, value); err != nil {
		t.Fatal(err)
	}
	h.waitImages(th.ID, 8)
	h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "add a moon"})
	if p := dcProv(t, h.waitImages(th.ID, 9)[8]); p.Prompt != "add a moon" || p.InputSHA256 != dcSHA(snow.Attachments[0].Data) {
		t.Errorf("after the restart: %q from %s, want an edit of image 4", p.Prompt, p.InputSHA256)
	}

	// The History button under a result answers with the sheet too.
	hist := h.click(dcBob, r0, "History")
	m := h.result(hist)
	if len(m.Selects) == 0 || !strings.HasPrefix(m.Content, "History: ") {
		t.Errorf("the History button answered %q with %d menus", m.Content, len(m.Selects))
	}
}
