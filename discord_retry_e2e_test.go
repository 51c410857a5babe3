package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/discord/discordtest"
)

// Issue 11, "Delivery never waits for a restart", on Discord: posting a
// stored image is retried in the process (one "Posting is delayed" line),
// and lands exactly once.

// dcCount counts the contents in history equal to s.
func dcCount(history []string, s string) int {
	n := 0
	for _, h := range history {
		if h == s {
			n++
		}
	}
	return n
}

// dcCharged checks that user was charged for n images today.
func (h *dcHarness) dcCharged(user string, n int) {
	h.t.Helper()
	in := h.slash(dcArt, user, "usage")
	want := fmt.Sprintf("You have made %d image", n)
	h.wait("the usage of "+user, func() bool {
		m, ok := h.dc.Original(in.ID)
		return ok && strings.Contains(m.Content, want)
	})
}

// dcNoHeld fails when any message in #art ever said the image was held.
func (h *dcHarness) dcNoHeld() {
	h.t.Helper()
	for _, m := range h.dc.Messages(dcArt) {
		if dcHas(m.History, bot.PostHeldText) {
			h.t.Errorf("message %s said %q: the post was held instead of retried", m.ID, bot.PostHeldText)
		}
	}
}

var dcPostFaults = []struct {
	name  string
	fault discordtest.Fault
	n     int // times in a row; 0 is once
}{
	{"three 503s in a row", discordtest.Fault{Status: http.StatusServiceUnavailable}, 3},
	{"500 JSON", discordtest.Fault{Status: http.StatusInternalServerError}, 0},
	{"502 from Cloudflare", discordtest.Fault{Status: http.StatusBadGateway, HTML: true}, 0},
	{"503 from Cloudflare", discordtest.Fault{Status: http.StatusServiceUnavailable, HTML: true}, 0},
	{"connection reset", discordtest.Fault{Reset: true}, 0},
	{"done but answered 500", discordtest.Fault{Status: http.StatusInternalServerError, After: true}, 0},
}

// dcInject injects fault n times (0: once) on the route's requests that
// upload a file, and returns how many.
func (h *dcHarness) dcInject(r discordtest.Route, f discordtest.Fault, n int) int {
	n = max(n, 1)
	f.Files = true
	for range n {
		h.dc.Inject(r, f)
	}
	return n
}

// TestDiscordPostRetriesInProcess: the edit of the interaction's response
// that carries the image fails (three 503s in a row, or once: a server error, Cloudflare's HTML
// page, a reset connection, or an edit that landed but answered 500):
// the core tries again in the process, the response says "Posting is
// delayed" once in between, and the image is there once, made and
// charged once.
func TestDiscordPostRetriesInProcess(t *testing.T) {
	for _, tc := range dcPostFaults {
		t.Run(tc.name, func(t *testing.T) {
			h := dcStart(t, dcOptions{env: map[string]string{"KONTEXT_POST_RETRY": "30s"},
				provider: kontexttest.Options{Pixels: 64 * 64}})
			n := h.dcInject(discordtest.RouteWebhookEdit, tc.fault, tc.n)
			in := h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a stubborn kite"))
			r := h.result(in)
			h.thread(r.ID) // opened once the post is settled
			r, _ = h.dc.Original(in.ID)
			if got := h.dc.Faulted(); got != n {
				t.Fatalf("%d faults applied, want %d (the test did not test the retry)", got, n)
			}
			if p := dcProv(t, r); p.Prompt != "a stubborn kite" {
				t.Errorf("provenance %+v", p)
			}
			if got := dcCount(r.History, bot.PostDelayedText); got != 1 {
				t.Errorf("the response showed %q %d times, want once; history %q", bot.PostDelayedText, got, r.History)
			}
			time.Sleep(200 * time.Millisecond) // a duplicate would show up now
			if got := len(h.images(dcArt)); got != 1 {
				t.Errorf("%d images in #art, want 1", got)
			}
			if got := h.prov.Stats().Creates; got != 1 {
				t.Errorf("%d predictions, want 1", got)
			}
			h.dcNoHeld()
			h.dcCharged(dcAda, 1)
		})
	}
}

// dcLate starts a job and lets its interaction's token expire while the
// provider works, so that its result is posted as a new message (a
// message create).
func (h *dcHarness) dcLate(user, prompt string) discordtest.Interaction {
	h.t.Helper()
	h.prov.Inject(kontexttest.Create, kontexttest.Fault{Delay: 1500 * time.Millisecond})
	in := h.slash(dcArt, user, "imagine", discordtest.String("prompt", prompt))
	h.wait("the deferred response", func() bool { return h.dc.Interaction(in.ID).Ack == 5 })
	h.wait("the job to reach the provider", func() bool { return h.prov.Stats().Creates >= 1 })
	h.dc.Advance(16 * time.Minute)
	return in
}

// TestDiscordPostRetriesMessageCreate: a result posted as a new message
// (the interaction's token has expired) whose create fails once is
// posted again in the process, once; the expired response shows
// "Posting is delayed" once and then points at the result. A create that
// landed but answered 500 is found (in the channel, or under its nonce),
// not posted twice.
func TestDiscordPostRetriesMessageCreate(t *testing.T) {
	for _, tc := range dcPostFaults {
		t.Run(tc.name, func(t *testing.T) {
			h := dcStart(t, dcOptions{env: map[string]string{"KONTEXT_POST_RETRY": "30s"},
				provider: kontexttest.Options{Pixels: 64 * 64}})
			n := h.dcInject(discordtest.RouteMessageCreate, tc.fault, tc.n)
			in := h.dcLate(dcAda, "a late kite")
			r := h.waitImages(dcArt, 1)[0]
			h.thread(r.ID)
			if got := h.dc.Faulted(); got != n {
				t.Fatalf("%d faults applied, want %d (the test did not test the retry)", got, n)
			}
			orig, _ := h.dc.Original(in.ID)
			if r.ReplyTo != orig.ID || dcProv(t, r).Prompt != "a late kite" {
				t.Errorf("result %s replies to %s, want the response %s", r.ID, r.ReplyTo, orig.ID)
			}
			if got := dcCount(orig.History, bot.PostDelayedText); got != 1 {
				t.Errorf("the response showed %q %d times, want once; history %q", bot.PostDelayedText, got, orig.History)
			}
			if !strings.Contains(orig.Content, "the result is in the reply below") {
				t.Errorf("the expired response says %q", orig.Content)
			}
			time.Sleep(200 * time.Millisecond)
			if got := len(h.images(dcArt)); got != 1 {
				t.Errorf("%d images in #art, want 1", got)
			}
			if tc.fault.After && h.dc.NonceHits() == 0 && !dcHas(h.dc.Requests(), "GET /channels/"+dcArt+"/messages") {
				t.Error("the retry of a create that landed neither looked for it nor sent its nonce again")
			}
			if got := h.prov.Stats().Creates; got != 1 {
				t.Errorf("%d predictions, want 1", got)
			}
			h.dcNoHeld()
			h.dcCharged(dcAda, 1)
		})
	}
}

// TestDiscordRepostPastNonceWindow: a message create that landed but
// answered 500, retried after Discord's nonce window has passed (the
// nonce no longer protects it): the retry finds the message in the
// channel and does not post the picture again.
func TestDiscordRepostPastNonceWindow(t *testing.T) {
	h := dcStart(t, dcOptions{env: map[string]string{"KONTEXT_POST_RETRY": "30s"},
		provider: kontexttest.Options{Pixels: 64 * 64}})
	h.dc.Inject(discordtest.RouteMessageCreate, discordtest.Fault{Status: http.StatusInternalServerError, After: true, Files: true})
	in := h.dcLate(dcAda, "a kite past the window")
	h.wait("the create that landed", func() bool { return h.dc.Faulted() == 1 })
	h.dc.Advance(discordtest.NonceWindow + time.Minute)
	h.wait("the delay to show", func() bool {
		orig, _ := h.dc.Original(in.ID)
		return dcHas(orig.History, bot.PostDelayedText)
	})
	h.wait("the response to point at the result", func() bool {
		orig, _ := h.dc.Original(in.ID)
		return strings.Contains(orig.Content, "the result is in the reply below")
	})
	h.thread(h.waitImages(dcArt, 1)[0].ID)
	time.Sleep(200 * time.Millisecond)
	if got := len(h.images(dcArt)); got != 1 {
		t.Errorf("%d images in #art, want 1", got)
	}
	if h.dc.NonceHits() != 0 {
		t.Errorf("%d nonce hits: the test meant the window to have passed", h.dc.NonceHits())
	}
	if !dcHas(h.dc.Requests(), "GET /channels/"+dcArt+"/messages") {
		t.Error("the retry did not look for the earlier post")
	}
	h.dcNoHeld()
	h.dcCharged(dcAda, 1)
}

// TestDiscordPostHeldThenRestart: posting keeps failing past a short
// KONTEXT_POST_RETRY, so the image is held (the response says so once);
// the next start posts it once, also when the first create had landed
// (and the retries could not look for it) and Discord's nonce window has
// passed by then: the next start finds it and does not post it again.
func TestDiscordPostHeldThenRestart(t *testing.T) {
	for _, landed := range []bool{false, true} {
		t.Run(fmt.Sprintf("first create landed %v", landed), func(t *testing.T) {
			h := dcStart(t, dcOptions{env: map[string]string{"KONTEXT_POST_RETRY": "1s"},
				provider: kontexttest.Options{Pixels: 64 * 64}})
			var faults []discordtest.Fault
			if landed {
				faults = append(faults, discordtest.Fault{Status: http.StatusInternalServerError, After: true, Files: true})
			}
			for range 20 {
				faults = append(faults, discordtest.Fault{Status: http.StatusServiceUnavailable, HTML: true, Files: true})
			}
			h.dc.Inject(discordtest.RouteMessageCreate, faults...)
			if landed {
				// The retries' lookups fail too, so the image is held
				// although it was posted.
				for range 20 {
					h.dc.Inject(discordtest.RouteMessageList, discordtest.Fault{Status: http.StatusServiceUnavailable, HTML: true})
				}
			}
			in := h.dcLate(dcAda, "a held kite")
			h.wait("the image to be held", func() bool {
				orig, _ := h.dc.Original(in.ID)
				return dcHas(orig.History, bot.PostHeldText)
			})
			h.stop()
			h.dc.ClearFaults()
			wantImages := 0
			if landed {
				wantImages = 1
			}
			if got := len(h.images(dcArt)); got != wantImages {
				t.Fatalf("%d images before the restart, want %d", got, wantImages)
			}
			h.dc.Advance(discordtest.NonceWindow + time.Minute)
			h.serve()
			h.wait("the response to point at the result", func() bool {
				orig, _ := h.dc.Original(in.ID)
				return strings.Contains(orig.Content, "the result is in the reply below")
			})
			r := h.waitImages(dcArt, 1)[0]
			h.thread(r.ID)
			time.Sleep(200 * time.Millisecond)
			if got := len(h.images(dcArt)); got != 1 {
				t.Errorf("%d images in #art, want 1", got)
			}
			orig, _ := h.dc.Original(in.ID)
			if got := dcCount(orig.History, bot.PostHeldText); got != 1 {
				t.Errorf("the response said %q %d times, want once; history %q", bot.PostHeldText, got, orig.History)
			}
			if r.ReplyTo != orig.ID || dcProv(t, r).Prompt != "a held kite" {
				t.Errorf("result %s replies to %s, want the response %s", r.ID, r.ReplyTo, orig.ID)
			}
			if got := h.prov.Stats().Creates; got != 1 {
				t.Errorf("%d predictions, want 1", got)
			}
			h.dcCharged(dcAda, 1)
		})
	}
}

// TestDiscordPostRetriesStatusEdit: a request in a picture's thread is
// answered by editing the bot's status message; when that edit fails
// with a server error, it is tried again in the process: the status says
// "Posting is delayed" once, then becomes the image, posted once.
func TestDiscordPostRetriesStatusEdit(t *testing.T) {
	h := dcStart(t, dcOptions{env: map[string]string{"KONTEXT_POST_RETRY": "30s"},
		provider: kontexttest.Options{Pixels: 64 * 64}})
	_, th := h.dcPicture(dcAda, "a lighthouse")
	n := h.dcInject(discordtest.RouteMessageEdit, discordtest.Fault{Status: http.StatusInternalServerError}, 1)
	ask := h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "add a moon"})
	img := h.waitImages(th.ID, 1)[0]
	if p := dcProv(t, img); p.Prompt != "add a moon" {
		t.Errorf("thread edit %+v", p)
	}
	h.wait("the post to settle", func() bool {
		m, _ := h.dc.Message(img.ID)
		return strings.Contains(m.Content, "add a moon")
	})
	if got := h.dc.Faulted(); got != n {
		t.Fatalf("%d faults applied, want %d", got, n)
	}
	img, _ = h.dc.Message(img.ID)
	if img.ReplyTo != ask.ID {
		t.Errorf("the image replies to %s, want the request %s", img.ReplyTo, ask.ID)
	}
	if got := dcCount(img.History, bot.PostDelayedText); got != 1 {
		t.Errorf("the status showed %q %d times, want once; history %q", bot.PostDelayedText, got, img.History)
	}
	time.Sleep(200 * time.Millisecond)
	if got := len(h.images(th.ID)); got != 1 {
		t.Errorf("%d images in the thread, want 1", got)
	}
	if got := h.prov.Stats().Creates; got != 2 {
		t.Errorf("%d predictions, want 2", got)
	}
	h.dcCharged(dcAda, 2)
}
