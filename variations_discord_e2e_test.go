package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/discord/discordtest"
)

// TestDiscordVariations: /imagine count:4 makes four images with
// different seeds, side by side at the provider, posted as one message
// (four attachments, one row of Edit N / Reroll N / Use N per image),
// each charged once; "Use 3" makes image 3 current in the picture's
// thread, so the next message there edits image 3; after a restart the
// group's buttons still work ("Use 2").
func TestDiscordVariations(t *testing.T) {
	// Enough slots, and a per-user running cap of 4: all four run at once.
	h := dcStart(t, dcOptions{env: map[string]string{"KONTEXT_USER_RUNNING": "4"},
		provider: kontexttest.Options{Latency: 600 * time.Millisecond, Pixels: 64 * 64}})
	// The option is findable, and Discord keeps it within 1..4.
	var count *discordtest.CommandOption
	for _, c := range h.dc.Commands(dcGuild) {
		for i, o := range c.Options {
			if c.Name == "imagine" && o.Name == "count" {
				count = &c.Options[i]
			}
		}
	}
	if count == nil || count.Type != 4 || count.MinValue == nil || *count.MinValue != 1 || count.MaxValue == nil || *count.MaxValue != 4 ||
		!strings.Contains(count.Description, "Variations") || !strings.Contains(count.Description, "Use N") {
		t.Fatalf("/imagine's count option: %+v, want an integer from 1 to 4 that says what it does", count)
	}
	if _, err := h.dc.Slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "x"), discordtest.Integer("count", 5)); err == nil {
		t.Error("count:5 was accepted by the fake Discord")
	}
	in := h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a lighthouse at dusk"), discordtest.Integer("count", 4))
	var grid discordtest.Message
	h.wait("the four images in one message", func() bool {
		var ok bool
		grid, ok = h.dc.Original(in.ID)
		return ok && len(grid.Attachments) == 4
	})
	if got := len(h.images(dcArt)); got != 1 {
		t.Errorf("messages with images in #art: %d, want 1", got)
	}
	seeds := map[int64]bool{}
	var shas []string
	for i, a := range grid.Attachments {
		p, err := kontexttest.ReadProvenance(a.Data)
		if err != nil {
			t.Fatalf("image %d: %v", i+1, err)
		}
		if p.Prompt != "a lighthouse at dusk" || p.InputSHA256 != "" {
			t.Errorf("image %d: %+v, want the prompt and no input", i+1, p)
		}
		seeds[p.Seed] = true
		shas = append(shas, dcSHA(a.Data))
	}
	if len(seeds) != 4 {
		t.Errorf("seeds: %d different, want 4", len(seeds))
	}
	for n := 1; n <= 4; n++ {
		for _, label := range []string{"Edit", "Reroll", "Use"} {
			b, ok := grid.Button(fmt.Sprintf("%s %d", label, n))
			if !ok || len(b.CustomID) > 100 {
				t.Errorf("button %s %d: %v %q", label, n, ok, b.CustomID)
			}
		}
	}
	if !strings.Contains(grid.Content, "4 variations") || !strings.Contains(grid.Content, "Use N") {
		t.Errorf("caption %q: want the count and how to pick one", grid.Content)
	}
	if st := h.prov.Stats(); st.Creates != 4 || st.MaxActive < 4 {
		t.Errorf("provider: %d creates, at most %d at once; want 4, all at once", st.Creates, st.MaxActive)
	}
	usage := h.slash(dcArt, dcAda, "usage")
	h.wait("ada's usage", func() bool {
		m, ok := h.dc.Original(usage.ID)
		return ok && strings.Contains(m.Content, "You have made 4 images today") && strings.Contains(m.Content, "costing $0.77")
	})

	// Use 3: image 3 is shown in the picture's thread and is its current image.
	th := h.thread(grid.ID)
	h.click(dcBob, grid, "Use 3")
	shown := h.waitImages(th.ID, 1)[0]
	if dcSHA(shown.Attachments[0].Data) != shas[2] || !strings.HasPrefix(shown.Content, "Image 3") {
		t.Errorf("Use 3 showed %q (%s), want image 3", shown.Content, dcSHA(shown.Attachments[0].Data))
	}
	h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "make it snow"})
	edit := h.waitImages(th.ID, 2)[1]
	if p := dcProv(t, edit); p.Prompt != "make it snow" || p.InputSHA256 != shas[2] {
		t.Errorf("the edit after Use 3: %q from %s, want image 3 %s", p.Prompt, p.InputSHA256, shas[2])
	}

	// After a restart the group's buttons still work.
	h.stop()
	h.serve()
	h.click(dcAda, grid, "Use 2")
	h.waitImages(th.ID, 3)
	h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "add a moon"})
	moon := h.waitImages(th.ID, 4)[3]
	if p := dcProv(t, moon); p.Prompt != "add a moon" || p.InputSHA256 != shas[1] {
		t.Errorf("the edit after a restart and Use 2: %q from %s, want image 2 %s", p.Prompt, p.InputSHA256, shas[1])
	}
	h.click(dcAda, grid, "Reroll 4")
	reroll := h.waitImages(th.ID, 5)[4]
	if p := dcProv(t, reroll); p.Prompt != "a lighthouse at dusk" || seeds[p.Seed] {
		t.Errorf("Reroll 4: %+v, want the prompt with a new seed", p)
	}
	if got := h.prov.Stats().Creates; got != 7 {
		t.Errorf("creates: %d, want 7 (4 variations, 2 edits, 1 reroll)", got)
	}
}

// TestDiscordVariationsRestartMidGroup: the bot stops while a group's
// jobs run (one slot, so some still wait); after the restart the group
// is posted once, as one message with every image, each made once.
func TestDiscordVariationsRestartMidGroup(t *testing.T) {
	h := dcStart(t, dcOptions{env: map[string]string{"KONTEXT_SLOTS": "1"},
		provider: kontexttest.Options{Latency: 500 * time.Millisecond, Pixels: 64 * 64}})
	in := h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a windmill"), discordtest.Integer("count", 3))
	h.wait("the first variation at the provider", func() bool { return h.prov.Stats().Creates >= 1 })
	h.stop()
	if got := len(h.images(dcArt)); got != 0 {
		t.Fatalf("images posted before the group was complete: %d", got)
	}
	h.serve()
	var grid discordtest.Message
	h.wait("the three images in one message", func() bool {
		var ok bool
		grid, ok = h.dc.Original(in.ID)
		return ok && len(grid.Attachments) == 3
	})
	if got := len(h.images(dcArt)); got != 1 {
		t.Errorf("messages with images: %d, want 1", got)
	}
	if got := h.prov.Stats().Created; got != 3 {
		t.Errorf("predictions created: %d, want 3", got)
	}
	usage := h.slash(dcArt, dcAda, "usage")
	h.wait("ada's usage", func() bool {
		m, ok := h.dc.Original(usage.ID)
		return ok && strings.Contains(m.Content, "You have made 3 images today")
	})
}

// TestDiscordVariationsOverLimit: count:4 with 3 images left today is
// refused up front with one sentence, only to its user; nothing is made
// or charged, and count:3 then goes through.
func TestDiscordVariationsOverLimit(t *testing.T) {
	h := dcStart(t, dcOptions{env: map[string]string{"KONTEXT_USER_DAILY": "3"}, provider: kontexttest.Options{Pixels: 64 * 64}})
	in := h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a fox"), discordtest.Integer("count", 4))
	var f []discordtest.Message
	h.wait("the refusal", func() bool { f = h.dc.Followups(in.ID); return len(f) == 1 })
	if !f[0].Ephemeral() || !strings.Contains(f[0].Content, "You asked for 4 images but have 3 left today") {
		t.Errorf("refusal %q (ephemeral %v), want one private sentence", f[0].Content, f[0].Ephemeral())
	}
	if got := h.prov.Stats().Creates; got != 0 {
		t.Errorf("creates after the refusal: %d", got)
	}
	ok := h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a fox"), discordtest.Integer("count", 3))
	h.wait("three images", func() bool { m, found := h.dc.Original(ok.ID); return found && len(m.Attachments) == 3 })
}
