package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"kontextbot/bot"
	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/discord/discordtest"
	"kontextbot/store"
)

// dcEphemeral waits for the ephemeral answer of a component interaction.
func (h *dcHarness) dcEphemeral(in discordtest.Interaction) discordtest.Message {
	h.t.Helper()
	var m discordtest.Message
	h.wait("the private answer to interaction "+in.ID, func() bool {
		var ok bool
		m, ok = h.dc.Original(in.ID)
		return ok && m.Content != ""
	})
	if !m.Ephemeral() {
		h.t.Errorf("answer %q is not ephemeral", m.Content)
	}
	return m
}

// TestDiscordDetailsDeleteEnhance: /edit enhance:true reaches the
// provider; after a restart the Details of that edit (only to the
// presser) show its seed, enhance and a link to the message of the image
// it was made from; "Use these settings" opens the Edit dialog with them
// typed in, and submitting it makes the same edit again. Delete is
// refused to someone else, removes the post and the image for the
// requester, keeps (hidden) an image later ones were made from, which
// Undo still shows; a member with Manage Messages may delete too.
func TestDiscordDetailsDeleteEnhance(t *testing.T) {
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 64 * 64}})
	r0, th := h.dcPicture(dcAda, "a lighthouse at dusk", discordtest.Integer("seed", 3))
	if p := dcProv(t, r0); p.PromptUpsampling {
		t.Errorf("imagine without enhance sent prompt_upsampling: %+v", p)
	}
	e1 := h.result(h.slash(th.ID, dcAda, "edit", discordtest.String("prompt", "add a rainbow"), discordtest.Bool("enhance", true)))
	p1 := dcProv(t, e1)
	if !p1.PromptUpsampling || p1.InputSHA256 != dcSHA(r0.Attachments[0].Data) {
		t.Fatalf("edit with enhance: %+v, want prompt_upsampling and an edit of the first image", p1)
	}
	for _, label := range []string{"Reroll", "Edit", "Undo", "Details", "Delete"} {
		if _, ok := e1.Button(label); !ok {
			t.Errorf("the edit has no %s button: %+v", label, e1.Buttons)
		}
	}

	h.stop()
	h.serve() // every button below is on a post made before the restart

	dm := h.dcEphemeral(h.click(dcBob, e1, "Details"))
	for _, want := range []string{"**Prompt**: add a rainbow", fmt.Sprintf("**Seed**: %d", p1.Seed), "**Enhance**: on",
		"**Model**: flux-kontext-max", "https://discord.com/channels/" + dcGuild + "/" + dcArt + "/" + r0.ID,
		"**Asked by**: <@" + dcAda + ">", "**Cost**: $"} {
		if !strings.Contains(dm.Content, want) {
			t.Errorf("details lack %q:\n%s", want, dm.Content)
		}
	}

	use := h.click(dcBob, dm, "Use these settings")
	h.wait("the pre-filled modal", func() bool { return h.dc.Interaction(use.ID).Modal != nil })
	modal := h.dc.Interaction(use.ID).Modal
	if got, want := modal.Values["prompt"], fmt.Sprintf("add a rainbow --seed %d --model flux-kontext-max --enhance", p1.Seed); got != want {
		t.Errorf("pre-filled prompt: got %q, want %q", got, want)
	}
	if len(modal.CustomID) > 100 {
		t.Errorf("modal custom id %q is over 100 characters", modal.CustomID)
	}
	if _, err := h.dc.SubmitModal(use, map[string]string{"prompt": modal.Values["prompt"]}); err != nil {
		t.Fatal(err)
	}
	e2 := h.waitImages(th.ID, 2)[1]
	if p := dcProv(t, e2); p.Prompt != p1.Prompt || p.Seed != p1.Seed || p.InputSHA256 != p1.InputSHA256 || !p.PromptUpsampling {
		t.Errorf("the same settings made %+v, want %+v", p, p1)
	}

	// Someone else may not delete ada's edit.
	refused := h.dcEphemeral(h.click(dcBob, e1, "Delete"))
	if !strings.Contains(refused.Content, "Only the person who asked for this image") {
		t.Errorf("refusal: %q", refused.Content)
	}
	if m, _ := h.dc.Message(e1.ID); m.Deleted {
		t.Fatal("bob deleted ada's image")
	}

	// ada deletes the first image: later ones were made from it, so it stays hidden.
	h.click(dcAda, r0, "Delete")
	h.wait("the first post to go", func() bool { m, _ := h.dc.Message(r0.ID); return m.Deleted })
	// A new edit of ada's, then deleted by her: its post and image go.
	h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "make it snow"})
	e3 := h.waitImages(th.ID, 3)[2]
	h.click(dcAda, e3, "Delete")
	h.wait("the snow post to go", func() bool { m, _ := h.dc.Message(e3.ID); return m.Deleted })
	// Undo on the rainbow still shows the hidden first image.
	h.click(dcAda, e1, "Undo")
	back := h.waitImages(th.ID, 3)[2]
	if !strings.HasPrefix(back.Content, "Back to: a lighthouse at dusk") || dcSHA(back.Attachments[0].Data) != dcSHA(r0.Attachments[0].Data) {
		t.Errorf("undo after delete showed %q, want the first image", back.Content)
	}
	// A member with Manage Messages may delete anyone's result.
	h.dc.SetPermissions(dcBob, discordtest.DefaultPermissions|discordtest.PermManageMessages)
	h.click(dcBob, e1, "Delete")
	h.wait("the rainbow post to go", func() bool { m, _ := h.dc.Message(e1.ID); return m.Deleted })
	if v := h.dc.Violations(); len(v) > 0 {
		t.Fatalf("violations: %v", v)
	}

	h.stop()
	db, err := store.Open(h.env["KONTEXT_DB"], store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	key := bot.ConvKey{Platform: "discord", Workspace: dcGuild, Channel: dcArt, Thread: th.ID}
	c, err := db.Conversation(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Image(ctx, dcSHA(e3.Attachments[0].Data)); !errors.Is(err, bot.ErrNotFound) {
		t.Errorf("the deleted snow image: got %v, want it gone from the store", err)
	}
	if _, err := db.Image(ctx, dcSHA(r0.Attachments[0].Data)); err != nil {
		t.Errorf("the first image, which later ones were made from: %v, want it kept", err)
	}
	for _, m := range []discordtest.Message{e1, e3} {
		if _, _, err := db.Message(ctx, key, m.ID); !errors.Is(err, bot.ErrNotFound) {
			t.Errorf("deleted post %s still resolves: %v", m.ID, err)
		}
	}
	for _, tt := range c.Turns {
		if tt.Prompt == "make it snow" {
			t.Errorf("the deleted snow image is still a turn: %+v", tt)
		}
	}
}
