package main

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/discord/discordtest"
)

// dcStatus waits for the bot's answer to a person's message that is not
// an image (a refusal) and returns its text.
func (h *dcHarness) dcStatus(channel, replyTo, want string) string {
	h.t.Helper()
	var got string
	h.wait("the answer to message "+replyTo, func() bool {
		for _, m := range h.dc.Messages(channel) {
			if m.Author.Bot && m.ReplyTo == replyTo && strings.Contains(m.Content, want) {
				got = m.Content
				return true
			}
		}
		return false
	})
	return got
}

// TestDiscordEditWithSeveralImages: a photo dropped in a picture thread
// with a prompt is edited together with the thread's current image, in
// that order (the fake provider's provenance names both); Reroll uses
// the same images; /edit takes image2..image4; the "Edit image" form
// takes a second message link; four images are accepted and a fifth is
// refused with a sentence before anything is charged.
func TestDiscordEditWithSeveralImages(t *testing.T) {
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 128 * 128}})
	r0, th := h.dcPicture(dcAda, "a sunny beach")
	beach := dcSHA(r0.Attachments[0].Data)
	dog := dcPNG(t, 64, 48, 3)
	h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "put this dog on the beach in the picture",
		Attachments: []discordtest.Attachment{h.dc.Upload(th.ID, "dog.png", "image/png", dog)}})
	edit := h.waitImages(th.ID, 1)[0]
	if got, want := dcProv(t, edit).Inputs, []string{beach, dcSHA(dog)}; !slices.Equal(got, want) {
		t.Errorf("thread message with a photo: inputs %v, want the current image then the photo %v", got, want)
	}
	if want := "put this dog on the beach in the picture · from “a sunny beach” + your image ·"; !strings.HasPrefix(edit.Content, want) {
		t.Errorf("caption %q, want it to start with %q", edit.Content, want)
	}

	t.Run("Reroll", func(t *testing.T) {
		h.click(dcBob, edit, "Reroll")
		re := h.waitImages(th.ID, 2)[1]
		if p, p0 := dcProv(t, re), dcProv(t, edit); !slices.Equal(p.Inputs, p0.Inputs) || p.Seed == p0.Seed {
			t.Errorf("reroll: inputs %v seed %d, want the edit's %v with another seed", p.Inputs, p.Seed, p0.Inputs)
		}
	})

	t.Run("SlashImage2", func(t *testing.T) {
		photo, hat := dcPNG(t, 80, 60, 5), dcPNG(t, 40, 40, 7)
		in := h.slash(dcArt, dcAda, "edit", discordtest.String("prompt", "give the cat the hat from image 2"),
			discordtest.File("image", h.dc.Upload(dcArt, "cat.png", "image/png", photo)),
			discordtest.File("image2", h.dc.Upload(dcArt, "hat.png", "image/png", hat)))
		if got, want := dcProv(t, h.result(in)).Inputs, []string{dcSHA(photo), dcSHA(hat)}; !slices.Equal(got, want) {
			t.Errorf("/edit image image2: inputs %v, want %v", got, want)
		}
		// Without image: the thread's current image first.
		cur, ok := h.dc.Message(h.images(th.ID)[len(h.images(th.ID))-1].ID)
		if !ok {
			t.Fatal("no current image")
		}
		in = h.slash(th.ID, dcAda, "edit", discordtest.String("prompt", "add the hat"),
			discordtest.File("image2", h.dc.Upload(th.ID, "hat.png", "image/png", hat)))
		if got, want := dcProv(t, h.result(in)).Inputs, []string{dcSHA(cur.Attachments[0].Data), dcSHA(hat)}; !slices.Equal(got, want) {
			t.Errorf("/edit image2 in the thread: inputs %v, want %v", got, want)
		}
	})

	t.Run("ReplyWithAPhoto", func(t *testing.T) {
		cat, hat := dcPNG(t, 72, 48, 13), dcPNG(t, 24, 24, 17)
		posted := h.say(discordtest.Say{ChannelID: dcArt, UserID: dcBob, Content: "my cat",
			Attachments: []discordtest.Attachment{h.dc.Upload(dcArt, "cat.png", "image/png", cat)}})
		h.say(discordtest.Say{ChannelID: dcArt, UserID: dcAda, Content: "give the cat this hat", ReplyTo: posted.ID,
			Attachments: []discordtest.Attachment{h.dc.Upload(dcArt, "hat.png", "image/png", hat)}})
		var got discordtest.Message
		h.wait("the reply's result", func() bool {
			for _, m := range h.images(dcArt) {
				if strings.HasPrefix(m.Content, "give the cat this hat") {
					got = m
					return true
				}
			}
			return false
		})
		if p, want := dcProv(t, got), []string{dcSHA(cat), dcSHA(hat)}; !slices.Equal(p.Inputs, want) {
			t.Errorf("reply with a photo: inputs %v, want the replied image then the photo %v", p.Inputs, want)
		}
	})

	t.Run("EditImageFormWithALink", func(t *testing.T) {
		photo := dcPNG(t, 96, 64, 11)
		posted := h.say(discordtest.Say{ChannelID: dcArt, UserID: dcBob, Content: "my cat",
			Attachments: []discordtest.Attachment{h.dc.Upload(dcArt, "cat.png", "image/png", photo)}})
		menu, err := h.dc.MessageCommand(dcArt, dcAda, "Edit image", posted.ID)
		if err != nil {
			t.Fatal(err)
		}
		h.wait("the modal", func() bool { return h.dc.Interaction(menu.ID).Modal != nil })
		link := "https://discord.com/channels/" + dcGuild + "/" + dcArt + "/" + r0.ID
		submit, err := h.dc.SubmitModal(menu, map[string]string{"prompt": "the cat on this beach", "image2": link})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := dcProv(t, h.result(submit)).Inputs, []string{dcSHA(photo), beach}; !slices.Equal(got, want) {
			t.Errorf("form with a link: inputs %v, want the photo then the linked image %v", got, want)
		}
		// A link to another server is refused, privately.
		menu, err = h.dc.MessageCommand(dcArt, dcAda, "Edit image", posted.ID)
		if err != nil {
			t.Fatal(err)
		}
		h.wait("the modal", func() bool { return h.dc.Interaction(menu.ID).Modal != nil })
		submit, err = h.dc.SubmitModal(menu, map[string]string{"prompt": "x", "image2": "https://discord.com/channels/1/2/3"})
		if err != nil {
			t.Fatal(err)
		}
		h.wait("the refusal", func() bool {
			f := h.dc.Followups(submit.ID)
			return len(f) == 1 && f[0].Ephemeral() && strings.Contains(f[0].Content, "another server")
		})
	})

	t.Run("FourAndFive", func(t *testing.T) {
		var atts []discordtest.Attachment
		var sums []string
		for i := range 4 {
			img := dcPNG(t, 30+i, 30, uint8(20+i))
			atts = append(atts, h.dc.Upload(th.ID, "p.png", "image/png", img))
			sums = append(sums, dcSHA(img))
		}
		before := len(h.images(th.ID))
		cur := dcSHA(h.images(th.ID)[before-1].Attachments[0].Data)
		h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "a collage", Attachments: atts[:3]})
		four := h.waitImages(th.ID, before+1)[before]
		if got, want := dcProv(t, four).Inputs, append([]string{cur}, sums[:3]...); !slices.Equal(got, want) {
			t.Errorf("four images: inputs %v, want %v", got, want)
		}
		creates := h.prov.Stats().Creates
		month := usageOf(h, dcAda)
		five := h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "too many", Attachments: atts})
		h.dcStatus(th.ID, five.ID, bot.ErrTooManyImages.Msg)
		if got := h.prov.Stats().Creates; got != creates {
			t.Errorf("five images reached the provider: %d creates, want %d", got, creates)
		}
		if after := usageOf(h, dcAda); after != month {
			t.Errorf("usage after the refusal: %q, want %q", after, month)
		}
	})
}

// usageOf reads the first sentence of user's /usage answer: the images
// they made today.
func usageOf(h *dcHarness, user string) string {
	h.t.Helper()
	in := h.slash(dcArt, user, "usage")
	var text string
	h.wait("the usage answer", func() bool {
		m, ok := h.dc.Original(in.ID)
		text = m.Content
		return ok && strings.Contains(m.Content, "You have made")
	})
	first, _, _ := strings.Cut(text, ".")
	return first
}

// TestDiscordRestartKeepsReferences: the bot is killed while an edit
// from the thread's image and a photo waits; after the restart it is
// made from the same two images.
func TestDiscordRestartKeepsReferences(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	h := dcFakes(t, dcOptions{env: map[string]string{"KONTEXT_SLOTS": "1", "KONTEXT_WAIT": "0"},
		provider: kontexttest.Options{Latency: 1500 * time.Millisecond, Pixels: 64 * 64}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	first := h.spawn(ctx)
	r0, th := h.dcPicture(dcAda, "a meadow")
	// A job holds the only slot, so the edit waits when the bot dies.
	h.slash(dcArt, dcBob, "imagine", discordtest.String("prompt", "a blocker"))
	h.wait("the blocker to reach the provider", func() bool { return h.prov.Stats().Creates == 2 })
	cow := dcPNG(t, 50, 40, 4)
	h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "add this cow",
		Attachments: []discordtest.Attachment{h.dc.Upload(th.ID, "cow.png", "image/png", cow)}})
	h.wait("the edit to wait", func() bool {
		for _, m := range h.dc.Messages(th.ID) {
			if m.Author.Bot && strings.Contains(m.Content, "in line") {
				return true
			}
		}
		return false
	})
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	h.wait("the gateway to notice", func() bool { return !h.dc.Ready() })

	h.spawn(ctx)
	got := h.waitImages(th.ID, 1)[0]
	if p, want := dcProv(t, got), []string{dcSHA(r0.Attachments[0].Data), dcSHA(cow)}; p.Prompt != "add this cow" || !slices.Equal(p.Inputs, want) {
		t.Errorf("after the restart: %q from %v, want %q from %v", p.Prompt, p.Inputs, "add this cow", want)
	}
	if got := h.prov.Stats().Creates; got != 3 {
		t.Errorf("creates: got %d, want 3", got)
	}
}
