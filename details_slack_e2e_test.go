package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"kontextbot/bot"
	"kontextbot/platforms/slack/slackfake"
	"kontextbot/store"
)

// slDetails waits for the Details ephemeral posted to user since n
// ephemerals, and returns it with its mrkdwn text.
func (e *slEnv) slDetails(user string, n int) (slackfake.Ephemeral, string) {
	e.t.Helper()
	var got slackfake.Ephemeral
	e.wait("the details, only to "+user, func() bool {
		es := e.slack.Ephemerals(user)
		for _, m := range es[min(n, len(es)):] {
			if m.Via == "chat.postEphemeral" && strings.Contains(string(m.Blocks), "Seed") {
				got = m
				return true
			}
		}
		return false
	})
	var blocks []struct {
		Text struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"text"`
	}
	if err := json.Unmarshal(got.Blocks, &blocks); err != nil || len(blocks) == 0 {
		e.t.Fatalf("details blocks %s: %v", got.Blocks, err)
	}
	return got, blocks[0].Text.Text
}

// TestSlackDetailsDeleteEnhance: /imagine … --enhance and an edit with
// --enhance reach the provider; after a restart the Details of the edit
// (only to the presser) show its seed, enhance and a permalink to the
// image it was made from; "Use these settings" opens the Edit modal with
// them typed in, and submitting it makes the same edit again. Delete is
// refused to someone else, removes the post and the image for the
// requester, keeps (hidden) an image later ones were made from, which
// Undo still shows; a workspace admin may delete too.
func TestSlackDetailsDeleteEnhance(t *testing.T) {
	slNoLeaks(t)
	for _, mode := range []string{"socket", "http"} {
		t.Run(mode, func(t *testing.T) { testSlackDetailsDeleteEnhance(t, mode) })
	}
}

func testSlackDetailsDeleteEnhance(t *testing.T, mode string) {
	e := slStart(t, mode, nil)
	e.slack.AddUser(slAda, "ada")
	e.slack.AddUser(slBob, "bob")
	ch := e.slack.CreateChannel("details", true)
	root := e.imagine(slAda, ch, "a teapot --seed 11")
	if p := e.prov(root); p.PromptUpsampling {
		t.Errorf("imagine without --enhance sent prompt_upsampling: %+v", p)
	}
	e.slack.Say(slAda, ch, root.TS, "make it gold --enhance")
	gold := e.waitImages(ch, root.TS, 2)[1]
	pg := e.prov(gold)
	if !pg.PromptUpsampling || pg.InputSHA256 != slSHA(e.data(root)) {
		t.Fatalf("edit with --enhance: %+v, want prompt_upsampling and an edit of the teapot", pg)
	}
	for _, a := range []string{"kontext_reroll", "kontext_undo", "kontext_edit", "kontext_details", "kontext_delete"} {
		if _, ok := slButtons(gold)[a]; !ok {
			t.Errorf("the edit has no %s button: %v", a, slButtons(gold))
		}
	}

	e.stopBot()
	e.startBot() // every button below is on a post made before the restart

	n := len(e.slack.Ephemerals(slBob))
	e.click(slBob, gold, "kontext_details")
	det, text := e.slDetails(slBob, n)
	permalink := "https://kontext-test.slack.com/archives/" + ch + "/p" + strings.ReplaceAll(root.TS, ".", "")
	for _, want := range []string{"*Prompt*: make it gold", fmt.Sprintf("*Seed*: %d", pg.Seed), "*Enhance*: on",
		"*Model*: flux-kontext-max", "<" + permalink, "*Asked by*: <@" + slAda + ">", "*Cost*: $"} {
		if !strings.Contains(text, want) {
			t.Errorf("details lack %q:\n%s", want, text)
		}
	}

	views := len(e.slack.Views())
	env, err := e.slack.ClickEphemeral(det, "kontext_use_settings")
	if err != nil {
		t.Fatal(err)
	}
	e.acked(env)
	e.wait("the pre-filled modal", func() bool { return len(e.slack.Views()) > views })
	vs := e.slack.Views()
	v := vs[len(vs)-1]
	want := fmt.Sprintf("make it gold --seed %d --model flux-kontext-max --enhance", pg.Seed)
	if !strings.Contains(string(v.Blocks), `"initial_value":"`+want+`"`) {
		t.Errorf("modal %s: want the initial value %q", v.Blocks, want)
	}
	e.acked(e.slack.Submit(v, map[string]map[string]string{"prompt": {"prompt": want}}))
	again := e.waitImages(ch, root.TS, 3)[2]
	if p := e.prov(again); p.Prompt != pg.Prompt || p.Seed != pg.Seed || p.InputSHA256 != pg.InputSHA256 || !p.PromptUpsampling {
		t.Errorf("the same settings made %+v, want %+v", p, pg)
	}

	// Someone else may not delete ada's edit.
	e.click(slBob, gold, "kontext_delete")
	e.waitEphemeral(slBob, "Only the person who asked for this image")
	if m, _ := e.slack.Message(ch, gold.TS); m.Deleted {
		t.Fatal("bob deleted ada's image")
	}
	// ada deletes the teapot: later images were made from it, so it stays hidden.
	e.click(slAda, root, "kontext_delete")
	e.wait("the teapot's post to go", func() bool { m, _ := e.slack.Message(ch, root.TS); return m.Deleted })
	// A new edit of ada's, then deleted by her: its post and image go.
	e.slack.Say(slAda, ch, root.TS, "make it silver")
	silver := e.waitImages(ch, root.TS, 3)[2]
	e.click(slAda, silver, "kontext_delete")
	e.wait("the silver post to go", func() bool { m, _ := e.slack.Message(ch, silver.TS); return m.Deleted })
	// Undo on the gold one still shows the hidden teapot.
	e.click(slAda, gold, "kontext_undo")
	back := e.waitImages(ch, root.TS, 3)[2]
	if slSHA(e.data(back)) != slSHA(e.data(root)) {
		t.Errorf("undo after delete showed %s, want the teapot", slSHA(e.data(back)))
	}
	// A workspace admin may delete anyone's image.
	e.slack.SetRole(slBob, slackfake.Role{Admin: true})
	e.click(slBob, gold, "kontext_delete")
	e.wait("the gold post to go", func() bool { m, _ := e.slack.Message(ch, gold.TS); return m.Deleted })
	e.checkClean()
	if p := e.slack.Problems(); len(p) > 0 {
		t.Fatalf("fake Slack problems: %q", p)
	}

	e.stopBot()
	db, err := store.Open(e.env["KONTEXT_DB"], store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	key := bot.ConvKey{Platform: "slack", Workspace: e.slack.Options().TeamID, Channel: ch, Thread: root.TS}
	if _, err := db.Image(ctx, slSHA(e.data(silver))); !errors.Is(err, bot.ErrNotFound) {
		t.Errorf("the deleted silver image: got %v, want it gone from the store", err)
	}
	if _, err := db.Image(ctx, slSHA(e.data(root))); err != nil {
		t.Errorf("the teapot, which later images were made from: %v, want it kept", err)
	}
	for _, m := range []slackfake.Message{gold, silver} {
		if _, _, err := db.Message(ctx, key, ch+":"+m.TS); !errors.Is(err, bot.ErrNotFound) {
			t.Errorf("deleted post %s still resolves: %v", m.TS, err)
		}
	}
}
