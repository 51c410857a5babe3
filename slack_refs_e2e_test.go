package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/slack/slackfake"
)

// slFiles uploads n distinct pictures as user and returns them with
// their digests.
func (e *slEnv) slFiles(user string, n int, seed uint8) ([]*slackfake.File, []string) {
	var fs []*slackfake.File
	var sums []string
	for i := range n {
		img := slPNG(e.t, 40+4*i, 32, seed+uint8(i))
		fs = append(fs, e.slack.UploadFile(user, "p.png", "image/png", img))
		sums = append(sums, slSHA(img))
	}
	return fs, sums
}

// TestSlackEditWithSeveralImages: a photo posted in a picture thread with
// a prompt is edited together with the thread's current image, in that
// order (the fake provider's provenance names both); Reroll uses the same
// images; a mention with two files and the Edit image shortcut on a
// message with two files use both; four images are accepted and a fifth
// is refused with a sentence before anything is charged.
func TestSlackEditWithSeveralImages(t *testing.T) {
	slNoLeaks(t)
	e := slStart(t, "socket", nil)
	e.slack.AddUser(slAda, "ada")
	ch := e.slack.CreateChannel("refs", true)
	root := e.imagine(slAda, ch, "a sunny beach")
	beach := slSHA(e.data(root))
	dog, dogSum := e.slFiles(slAda, 1, 5)
	e.slack.Say(slAda, ch, root.TS, "put this dog on the beach in the picture", dog...)
	edit := e.waitImages(ch, root.TS, 2)[1]
	if got, want := e.prov(edit).Inputs, []string{beach, dogSum[0]}; !slices.Equal(got, want) {
		t.Errorf("thread message with a photo: inputs %v, want the current image then the photo %v", got, want)
	}
	if want := "put this dog on the beach in the picture · from “a sunny beach” + your image ·"; !strings.Contains(string(edit.Blocks), want) {
		t.Errorf("caption: %s, want %q", edit.Blocks, want)
	}

	e.run(t, "Reroll", func(t *testing.T) {
		e.click(slAda, edit, "kontext_reroll")
		re := e.waitImages(ch, root.TS, 3)[2]
		if p, p0 := e.prov(re), e.prov(edit); !slices.Equal(p.Inputs, p0.Inputs) || p.Seed == p0.Seed {
			t.Errorf("reroll: inputs %v seed %d, want the edit's %v with another seed", p.Inputs, p.Seed, p0.Inputs)
		}
	})

	e.run(t, "MentionWithTwoFiles", func(t *testing.T) {
		fs, sums := e.slFiles(slAda, 2, 40)
		msg := e.slack.Say(slAda, ch, "", e.slack.Mention("the hat from the second on the cat in the first"), fs...)
		if got := e.prov(e.waitImages(ch, msg.TS, 1)[0]).Inputs; !slices.Equal(got, sums) {
			t.Errorf("mention with two files: inputs %v, want %v", got, sums)
		}
	})

	e.run(t, "ShortcutOnTwoFiles", func(t *testing.T) {
		fs, sums := e.slFiles(slAda, 2, 80)
		post := e.slack.Say(slAda, ch, "", "two photos", fs...)
		views := len(e.slack.Views())
		env, err := e.slack.Shortcut(slAda, post, "kontext_edit_image")
		if err != nil {
			t.Fatal(err)
		}
		e.acked(env)
		e.wait("the edit modal", func() bool { return len(e.slack.Views()) > views })
		vs := e.slack.Views()
		e.acked(e.slack.Submit(vs[len(vs)-1], map[string]map[string]string{"prompt": {"prompt": "blend them"}}))
		if got := e.prov(e.waitImages(ch, post.TS, 1)[0]).Inputs; !slices.Equal(got, sums) {
			t.Errorf("shortcut: inputs %v, want %v", got, sums)
		}
	})

	e.run(t, "FourAndFive", func(t *testing.T) {
		n := len(e.images(ch, root.TS))
		cur := slSHA(e.data(e.images(ch, root.TS)[n-1]))
		fs, sums := e.slFiles(slAda, 4, 120)
		e.slack.Say(slAda, ch, root.TS, "a collage", fs[:3]...)
		four := e.waitImages(ch, root.TS, n+1)[n]
		if got, want := e.prov(four).Inputs, append([]string{cur}, sums[:3]...); !slices.Equal(got, want) {
			t.Errorf("four images: inputs %v, want %v", got, want)
		}
		creates := e.kx.Stats().Creates
		e.slack.Say(slAda, ch, root.TS, "too many", fs...)
		e.waitEphemeral(slAda, bot.ErrTooManyImages.Msg)
		if got := e.kx.Stats().Creates; got != creates {
			t.Errorf("five images reached the provider: %d creates, want %d", got, creates)
		}
		if got := len(e.images(ch, root.TS)); got != n+1 {
			t.Errorf("images in the thread: got %d, want %d", got, n+1)
		}
	})
	e.checkClean()
}

// TestSlackRestartKeepsReferences: the bot stops while an edit from the
// thread's image and a photo waits; after the restart it is made from
// the same two images.
func TestSlackRestartKeepsReferences(t *testing.T) {
	slNoLeaks(t)
	e := slStart(t, "socket", map[string]string{"KONTEXT_SLOTS": "1", "SHUTDOWN_TIMEOUT": "200ms"})
	e.slack.AddUser(slAda, "ada")
	ch := e.slack.CreateChannel("restart", true)
	root := e.imagine(slAda, ch, "a meadow")
	e.kx.Inject(kontexttest.Create, kontexttest.Fault{Delay: 5 * time.Second})
	e.acked(e.slack.Slash(slAda, ch, "/imagine", "a blocker"))
	e.wait("the blocker to reach the provider", func() bool { return e.kx.Stats().Creates >= 2 })
	cow, sums := e.slFiles(slAda, 1, 60)
	e.slack.Say(slAda, ch, root.TS, "add this cow", cow...)
	e.wait("the edit to wait", func() bool {
		for _, m := range e.statuses(ch, root.TS) {
			if strings.Contains(m.Text, "Queued") {
				return true
			}
		}
		return false
	})
	e.stopBot()
	e.startBot()
	got := e.waitImages(ch, root.TS, 2)[1]
	if p, want := e.prov(got), []string{slSHA(e.data(root)), sums[0]}; p.Prompt != "add this cow" || !slices.Equal(p.Inputs, want) {
		t.Errorf("after the restart: %q from %v, want %q from %v", p.Prompt, p.Inputs, "add this cow", want)
	}
	e.checkClean()
}
