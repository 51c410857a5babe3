package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	be "encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/discord/discordtest"
)

// The Discord end-to-end tests run `kontextbot serve` (run, in process,
// or the real binary for restarts) against a fake Discord and a fake
// provider, and read what users would see.

const (
	dcGuild = "800000000000000001"
	dcArt   = "800000000000000010" // #art, a text channel
	dcAda   = "700000000000000001"
	dcBob   = "700000000000000002"
	dcWait  = 15 * time.Second // failure guard for every wait
)

// dcBuffer is an io.Writer tests read while the bot writes.
type dcBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *dcBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *dcBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// dcOptions configure a harness.
type dcOptions struct {
	discord  discordtest.Options
	provider kontexttest.Options
	env      map[string]string
	// global registers the commands globally instead of in dcGuild.
	global bool
}

// dcHarness is a running bot with its two fakes.
type dcHarness struct {
	t      *testing.T
	dc     *discordtest.Server
	prov   *kontexttest.Server
	env    map[string]string
	stdout *dcBuffer
	logs   *dcBuffer
	cancel context.CancelFunc
	done   chan error
}

// dcStart starts the fakes and `serve`, and returns once the bot is
// connected and its commands are registered. Everything stops, and the
// test fails on leaked goroutines, at the end of the test.
func dcStart(t *testing.T, o dcOptions) *dcHarness {
	t.Helper()
	h := dcFakes(t, o)
	h.serve()
	return h
}

// dcFakes starts the two fakes and prepares the environment of serve.
func dcFakes(t *testing.T, o dcOptions) *dcHarness {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if !t.Failed() {
			goleak.VerifyNone(t, ignore)
		}
	})
	prov, env := fakeEnv(t, o.provider)
	if err := os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dc := discordtest.New(o.discord)
	t.Cleanup(dc.Close)
	dc.AddTextChannel(dcGuild, dcArt, "art")
	dc.AddUser(dcAda, "ada")
	dc.AddUser(dcBob, "bob")
	env["DISCORD_BOT_TOKEN"] = dc.Token()
	env["DISCORD_API_URL"] = dc.URL
	env["HTTP_ADDR"] = "127.0.0.1:0"
	if !o.global {
		env["DISCORD_GUILD_ID"] = dcGuild
	}
	for k, v := range o.env {
		env[k] = v
	}
	h := &dcHarness{t: t, dc: dc, prov: prov, env: env, stdout: &dcBuffer{}, logs: &dcBuffer{}}
	t.Cleanup(func() {
		if v := dc.Violations(); len(v) > 0 {
			t.Errorf("the fake Discord saw violations:\n  %s", strings.Join(v, "\n  "))
		}
		if f := dc.Failed(); len(f) > 0 {
			t.Errorf("interactions not answered within 3 s: %v", f)
		}
	})
	return h
}

// serve runs `kontextbot serve` until the test ends.
func (h *dcHarness) serve() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- run(ctx, []string{"serve"}, envMap(h.env), h.stdout, h.logs) }()
	h.t.Cleanup(h.stop)
	scope := dcGuild
	if h.env["DISCORD_GUILD_ID"] == "" {
		scope = ""
	}
	// After a restart the fake still lists the first run's commands and
	// stdout still holds its banner: wait for this run's own banner.
	banners := strings.Count(h.stdout.String(), "invite the bot")
	h.wait("the bot to connect and register its commands", func() bool {
		return h.dc.Ready() && len(h.dc.Commands(scope)) == 7 && strings.Count(h.stdout.String(), "invite the bot") > banners
	})
}

func (h *dcHarness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		h.t.Errorf("serve did not stop")
	}
	if h.t.Failed() || os.Getenv("DC_LOGS") != "" {
		h.t.Logf("serve stdout:\n%s\nserve log:\n%s", h.stdout.String(), h.logs.String())
	}
}

// wait waits for cond, or fails the test saying what it waited for.
func (h *dcHarness) wait(what string, cond func() bool) {
	h.t.Helper()
	select {
	case err := <-h.done:
		h.t.Fatalf("serve ended while waiting for %s: %v\n%s", what, err, h.logs.String())
	default:
	}
	if !h.dc.Wait(dcWait, cond) {
		h.t.Fatalf("timed out waiting for %s\nlog:\n%s", what, h.logs.String())
	}
}

func (h *dcHarness) slash(channel, user, cmd string, opts ...discordtest.Option) discordtest.Interaction {
	h.t.Helper()
	in, err := h.dc.Slash(channel, user, cmd, opts...)
	if err != nil {
		h.t.Fatal(err)
	}
	return in
}

func (h *dcHarness) say(m discordtest.Say) discordtest.Message {
	h.t.Helper()
	msg, err := h.dc.Say(m)
	if err != nil {
		h.t.Fatal(err)
	}
	return msg
}

// result waits until an interaction's response shows an image and returns it.
func (h *dcHarness) result(in discordtest.Interaction) discordtest.Message {
	h.t.Helper()
	var m discordtest.Message
	h.wait("the result of interaction "+in.ID, func() bool {
		var ok bool
		m, ok = h.dc.Original(in.ID)
		return ok && len(m.Attachments) == 1
	})
	return m
}

// images returns the bot's messages with an image in a channel, oldest first.
func (h *dcHarness) images(channel string) []discordtest.Message {
	var out []discordtest.Message
	for _, m := range h.dc.Messages(channel) {
		if m.Author.Bot && len(m.Attachments) > 0 {
			out = append(out, m)
		}
	}
	return out
}

// waitImages waits for n images in a channel and returns them.
func (h *dcHarness) waitImages(channel string, n int) []discordtest.Message {
	h.t.Helper()
	var ms []discordtest.Message
	h.wait(fmt.Sprintf("%d images in channel %s", n, channel), func() bool {
		ms = h.images(channel)
		return len(ms) >= n
	})
	return ms
}

// thread waits for the thread started from a message.
func (h *dcHarness) thread(msgID string) discordtest.Channel {
	h.t.Helper()
	var th discordtest.Channel
	h.wait("a thread from message "+msgID, func() bool {
		m, ok := h.dc.Message(msgID)
		if !ok || m.Thread == "" {
			return false
		}
		th, ok = h.dc.Channel(m.Thread)
		return ok
	})
	return th
}

func dcSHA(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// dcProv reads the provenance of a message's image.
func dcProv(t *testing.T, m discordtest.Message) kontexttest.Provenance {
	t.Helper()
	if len(m.Attachments) == 0 {
		t.Fatalf("message %s has no image", m.ID)
	}
	p, err := kontexttest.ReadProvenance(m.Attachments[0].Data)
	if err != nil {
		t.Fatalf("message %s: %v", m.ID, err)
	}
	return p
}

// dcPNG is a small PNG a person uploads.
func dcPNG(t *testing.T, w, h int, seed uint8) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i)*7 + seed
	}
	img.Set(0, 0, color.White)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func dcHas(history []string, sub string) bool {
	for _, h := range history {
		if strings.Contains(h, sub) {
			return true
		}
	}
	return false
}

// TestDiscordImagine: /imagine is deferred at once, shows its place in
// line while it waits, then its response becomes the image (alt text: the
// prompt) with the caption and buttons, and a thread named after the
// prompt (cut to 100 characters) is opened from it.
func TestDiscordImagine(t *testing.T) {
	h := dcStart(t, dcOptions{env: map[string]string{"KONTEXT_SLOTS": "1"}, provider: kontexttest.Options{Pixels: 128 * 128}})
	// The first job holds the only slot long enough for the second to queue.
	h.prov.Inject(kontexttest.Create, kontexttest.Fault{Delay: 1500 * time.Millisecond})
	first := h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a lighthouse at dusk"), discordtest.Integer("seed", 7))
	h.wait("the first job to reach the provider", func() bool { return h.prov.Stats().Creates == 1 })
	long := strings.Repeat("a very long prompt about a castle in the fog ", 4)
	second := h.slash(dcArt, dcBob, "imagine", discordtest.String("prompt", long),
		discordtest.String("aspect_ratio", "16:9"), discordtest.String("model", "flux-kontext-pro"))
	h.wait("the second job's queue position", func() bool {
		m, ok := h.dc.Original(second.ID)
		return ok && strings.Contains(m.Content, "Queued · 1st in line")
	})
	if m, _ := h.dc.Original(second.ID); len(m.Buttons) != 1 || m.Buttons[0].Label != "Cancel" {
		t.Errorf("a waiting job's status should offer Cancel, got %+v", m.Buttons)
	}
	for _, in := range []discordtest.Interaction{first, second} {
		if got := h.dc.Interaction(in.ID).Ack; got != 5 {
			t.Errorf("interaction %s answered with type %d, want a deferred response (5)", in.ID, got)
		}
	}

	r1 := h.result(first)
	p1 := dcProv(t, r1)
	if p1.Prompt != "a lighthouse at dusk" || p1.Seed != 7 || p1.InputSHA256 != "" {
		t.Errorf("first image provenance %+v", p1)
	}
	if want := "a lighthouse at dusk · seed 7 · flux-kontext-max"; r1.Content != want {
		t.Errorf("caption %q, want %q", r1.Content, want)
	}
	if a := r1.Attachments[0]; a.Description != "a lighthouse at dusk" || a.ContentType != "image/png" || !strings.HasSuffix(a.Filename, ".png") {
		t.Errorf("attachment %+v: want a PNG with the prompt as alt text", a)
	}
	var labels []string
	for _, b := range r1.Buttons {
		labels = append(labels, b.Label)
		if len(b.CustomID) > 100 {
			t.Errorf("custom id %q is longer than 100", b.CustomID)
		}
	}
	if strings.Join(labels, ",") != "Reroll,Edit,History,Details,Delete" {
		t.Errorf("buttons %v, want Reroll,Edit,History,Details,Delete (nothing to undo yet)", labels)
	}
	th := h.thread(r1.ID)
	if th.ParentID != dcArt || th.Name != "a lighthouse at dusk" {
		t.Errorf("thread %+v, want one named after the prompt under #art", th)
	}

	r2 := h.result(second)
	if p := dcProv(t, r2); p.Model != "flux-kontext-pro" || p.AspectRatio != "16:9" || p.Prompt != strings.TrimSpace(long) {
		t.Errorf("second image provenance %+v", p)
	}
	if !dcHas(r2.History, "Queued · 1st in line") {
		t.Errorf("the second response never showed its place in line: %q", r2.History)
	}
	th2 := h.thread(r2.ID)
	if want := []rune(strings.TrimSpace(long)); len([]rune(th2.Name)) != 100 || !strings.HasPrefix(string(want), strings.TrimSuffix(th2.Name, "…")) {
		t.Errorf("thread name %q, want the prompt cut to 100 characters", th2.Name)
	}
	if !strings.Contains(h.stdout.String(), "permissions=309237746688") || !strings.Contains(h.stdout.String(), "scope=bot+applications.commands") {
		t.Errorf("serve did not print the invite URL:\n%s", h.stdout.String())
	}
	if code, body := h.healthz(); code != http.StatusOK || !strings.Contains(body, "ok") {
		t.Errorf("/healthz: %d %q", code, body)
	}
}

var dcHTTPAddr = regexp.MustCompile(`msg="kontextbot ready".* http=(\S+)`)

// healthz asks serve's /healthz.
func (h *dcHarness) healthz() (int, string) {
	h.t.Helper()
	m := dcHTTPAddr.FindStringSubmatch(h.logs.String())
	if m == nil {
		h.t.Fatalf("no http address in the log:\n%s", h.logs.String())
	}
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + m[1] + "/healthz")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// dcPicture makes an image with /imagine in #art and returns it with its thread.
func (h *dcHarness) dcPicture(user, prompt string, opts ...discordtest.Option) (discordtest.Message, discordtest.Channel) {
	h.t.Helper()
	in := h.slash(dcArt, user, "imagine", append([]discordtest.Option{discordtest.String("prompt", prompt)}, opts...)...)
	r := h.result(in)
	return r, h.thread(r.ID)
}

// click presses a button of a message.
func (h *dcHarness) click(user string, m discordtest.Message, label string) discordtest.Interaction {
	h.t.Helper()
	b, ok := m.Button(label)
	if !ok {
		h.t.Fatalf("message %s has no %s button: %+v", m.ID, label, m.Buttons)
	}
	in, err := h.dc.Click(user, m.ID, b.CustomID)
	if err != nil {
		h.t.Fatal(err)
	}
	return in
}

// TestDiscordPictureThread: in the thread a result opens, every message
// edits the current image, in order (three sent at once, checked by
// provenance); a reply edits exactly the image it answers; Undo, Reroll
// and Edit (a modal) work on the images they are under.
func TestDiscordPictureThread(t *testing.T) {
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 128 * 128}})
	r0, th := h.dcPicture(dcAda, "a lighthouse at dusk", discordtest.Integer("seed", 3))
	shas := map[string]string{r0.ID: dcSHA(r0.Attachments[0].Data)}

	prompts := []string{"add a rainbow", "make it snow", "paint it like Hokusai"}
	var says []discordtest.Message
	for _, p := range prompts {
		says = append(says, h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: p}))
	}
	edits := h.waitImages(th.ID, 3)
	prev := shas[r0.ID]
	for i, m := range edits {
		p := dcProv(t, m)
		if p.Prompt != prompts[i] || p.InputSHA256 != prev {
			t.Errorf("edit %d: %q from %s, want %q from the previous image %s", i+1, p.Prompt, p.InputSHA256, prompts[i], prev)
		}
		if m.ReplyTo != says[i].ID {
			t.Errorf("edit %d replies to %s, want the message that asked for it (%s)", i+1, m.ReplyTo, says[i].ID)
		}
		if _, ok := m.Button("Undo"); !ok {
			t.Errorf("edit %d has no Undo button: %+v", i+1, m.Buttons)
		}
		prev = dcSHA(m.Attachments[0].Data)
		shas[m.ID] = prev
	}

	// A reply to an older result edits that one, not the current image.
	h.say(discordtest.Say{ChannelID: th.ID, UserID: dcBob, Content: "make it purple", ReplyTo: edits[0].ID})
	ms := h.waitImages(th.ID, 4)
	purple := ms[3]
	if p := dcProv(t, purple); p.Prompt != "make it purple" || p.InputSHA256 != shas[edits[0].ID] {
		t.Errorf("reply: %q from %s, want an edit of the first edit %s", p.Prompt, p.InputSHA256, shas[edits[0].ID])
	}

	// Undo on it: back to the image it was made from, shown again...
	undo := h.click(dcAda, purple, "Undo")
	ms = h.waitImages(th.ID, 5)
	back := ms[4]
	if !strings.HasPrefix(back.Content, "Back to: add a rainbow") || dcSHA(back.Attachments[0].Data) != shas[edits[0].ID] {
		t.Errorf("undo showed %q (%s), want the first edit again", back.Content, dcSHA(back.Attachments[0].Data))
	}
	if got := h.dc.Interaction(undo.ID).Ack; got != 6 {
		t.Errorf("the Undo button was answered with type %d, want 6", got)
	}
	// ...and the next message edits it.
	h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "add a moon"})
	ms = h.waitImages(th.ID, 6)
	if p := dcProv(t, ms[5]); p.Prompt != "add a moon" || p.InputSHA256 != shas[edits[0].ID] {
		t.Errorf("after undo: %q from %s, want an edit of the first edit", p.Prompt, p.InputSHA256)
	}

	// Reroll on the first picture (in #art): same prompt, new seed, in the thread.
	h.click(dcBob, r0, "Reroll")
	ms = h.waitImages(th.ID, 7)
	if p, p0 := dcProv(t, ms[6]), dcProv(t, r0); p.Prompt != p0.Prompt || p.InputSHA256 != "" || p.Seed == p0.Seed {
		t.Errorf("reroll %+v of %+v: want the same prompt, no input, another seed", p, p0)
	}

	// Edit: a modal asks what to change, then that image is edited.
	edit := h.click(dcAda, edits[1], "Edit")
	h.wait("the edit modal", func() bool { return h.dc.Interaction(edit.ID).Modal != nil })
	if _, err := h.dc.SubmitModal(edit, map[string]string{"prompt": "make it night --ar 16:9"}); err != nil {
		t.Fatal(err)
	}
	ms = h.waitImages(th.ID, 8)
	if p := dcProv(t, ms[7]); p.Prompt != "make it night" || p.AspectRatio != "16:9" || p.InputSHA256 != shas[edits[1].ID] {
		t.Errorf("edit modal: %+v, want an edit of %s at 16:9", p, shas[edits[1].ID])
	}
	// Nothing was posted outside the thread but the first picture.
	if got := h.images(dcArt); len(got) != 1 {
		t.Errorf("#art has %d images, want 1", len(got))
	}
}

// TestDiscordEditImageMenu: "Edit image" on a person's image opens a
// modal, and its submit edits exactly that image (the result opens a
// thread); on a message without an image it says so, privately. A reply
// to a person's image edits it too.
func TestDiscordEditImageMenu(t *testing.T) {
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 128 * 128}})
	photo := dcPNG(t, 96, 64, 1)
	att := h.dc.Upload(dcArt, "photo.png", "image/png", photo)
	posted := h.say(discordtest.Say{ChannelID: dcArt, UserID: dcBob, Content: "my cat", Attachments: []discordtest.Attachment{att}})

	menu, err := h.dc.MessageCommand(dcArt, dcAda, "Edit image", posted.ID)
	if err != nil {
		t.Fatal(err)
	}
	h.wait("the modal", func() bool { return h.dc.Interaction(menu.ID).Modal != nil })
	if m := h.dc.Interaction(menu.ID).Modal; m.Title != "Edit image" || len(m.Inputs) != 2 {
		t.Errorf("modal %+v", m)
	}
	submit, err := h.dc.SubmitModal(menu, map[string]string{"prompt": "give the cat a hat --seed 11"})
	if err != nil {
		t.Fatal(err)
	}
	r := h.result(submit)
	if p := dcProv(t, r); p.Prompt != "give the cat a hat" || p.Seed != 11 || p.InputSHA256 != dcSHA(photo) {
		t.Errorf("menu edit %+v, want an edit of the photo %s", p, dcSHA(photo))
	}
	th := h.thread(r.ID)
	if th.Name != "give the cat a hat" {
		t.Errorf("thread %q", th.Name)
	}
	if h.dc.CDNRequestsWithAuth() != 0 {
		t.Error("the bot token was sent to the CDN")
	}

	// No image: an ephemeral answer, no modal.
	plain := h.say(discordtest.Say{ChannelID: dcArt, UserID: dcBob, Content: "just words"})
	none, err := h.dc.MessageCommand(dcArt, dcAda, "Edit image", plain.ID)
	if err != nil {
		t.Fatal(err)
	}
	h.wait("the no-image answer", func() bool {
		m, ok := h.dc.Original(none.ID)
		return ok && m.Ephemeral() && strings.Contains(m.Content, "no image")
	})

	// A reply to the person's image, in the channel, edits it.
	h.say(discordtest.Say{ChannelID: dcArt, UserID: dcAda, Content: "make it a watercolor", ReplyTo: posted.ID})
	var reply discordtest.Message
	h.wait("the reply's result", func() bool {
		for _, m := range h.images(dcArt) {
			if strings.HasPrefix(m.Content, "make it a watercolor") {
				reply = m
				return true
			}
		}
		return false
	})
	if p := dcProv(t, reply); p.InputSHA256 != dcSHA(photo) {
		t.Errorf("reply edit started from %s, want the photo", p.InputSHA256)
	}
	h.thread(reply.ID)
}

// TestDiscordEditAttachment: /edit takes an attached image; a file that is
// not an image and one that is too large are refused with a sentence only
// the user sees, before anything is sent to the provider.
func TestDiscordEditAttachment(t *testing.T) {
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 128 * 128}})
	photo := dcPNG(t, 80, 80, 9)
	att := h.dc.Upload(dcArt, "in.png", "image/png", photo)
	in := h.slash(dcArt, dcAda, "edit", discordtest.String("prompt", "make it winter"), discordtest.File("image", att),
		discordtest.String("aspect_ratio", "match_input_image"))
	r := h.result(in)
	if p := dcProv(t, r); p.Prompt != "make it winter" || p.InputSHA256 != dcSHA(photo) || p.AspectRatio != "match_input_image" {
		t.Errorf("/edit %+v, want an edit of the attachment %s", p, dcSHA(photo))
	}
	// Without an image, /edit in the new thread edits its current image.
	th := h.thread(r.ID)
	in2 := h.slash(th.ID, dcAda, "edit", discordtest.String("prompt", "add a sled"))
	r2 := h.result(in2)
	if p := dcProv(t, r2); p.InputSHA256 != dcSHA(r.Attachments[0].Data) {
		t.Errorf("/edit without image started from %s, want the thread's image", p.InputSHA256)
	}
	if r2.Thread != "" {
		t.Error("a result inside a thread opened another thread")
	}

	creates := h.prov.Stats().Creates
	refused := func(name string, a discordtest.Attachment, want string) {
		t.Helper()
		in := h.slash(dcArt, dcAda, "edit", discordtest.String("prompt", "x"), discordtest.File("image", a))
		var f []discordtest.Message
		h.wait(name+" refusal", func() bool { f = h.dc.Followups(in.ID); return len(f) == 1 })
		if !f[0].Ephemeral() || !strings.Contains(f[0].Content, want) {
			t.Errorf("%s: follow-up %q (ephemeral %v), want an ephemeral %q", name, f[0].Content, f[0].Ephemeral(), want)
		}
		h.wait(name+": the public response removed", func() bool { m, _ := h.dc.Original(in.ID); return m.Deleted })
	}
	refused("text file", h.dc.Upload(dcArt, "notes.txt", "text/plain", []byte("not a picture at all")), "not an image")
	big := h.dc.UploadSized(dcArt, "huge.png", "image/png", photo, 25<<20)
	refused("oversize (by its size)", big, "too large")
	if h.dc.CDNHits(big) != 0 {
		t.Error("an attachment announced as 25 MiB was downloaded anyway")
	}
	liar := h.dc.UploadSized(dcArt, "liar.png", "image/png", append(append([]byte{}, photo...), make([]byte, 21<<20)...), len(photo))
	refused("oversize (by its bytes)", liar, "too large")
	if got := h.prov.Stats().Creates; got != creates {
		t.Errorf("refused edits reached the provider: %d creates, want %d", got, creates)
	}
}

// TestDiscordCancel: a waiting job's status has a Cancel button; only its
// requester may press it, and then the job never reaches the provider.
func TestDiscordCancel(t *testing.T) {
	h := dcStart(t, dcOptions{env: map[string]string{"KONTEXT_SLOTS": "1"}, provider: kontexttest.Options{Pixels: 64 * 64}})
	h.prov.Inject(kontexttest.Create, kontexttest.Fault{Delay: 2500 * time.Millisecond})
	first := h.slash(dcArt, dcBob, "imagine", discordtest.String("prompt", "a slow one"))
	h.wait("the first job to reach the provider", func() bool { return h.prov.Stats().Creates == 1 })
	waiting := h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "never mind"))
	var status discordtest.Message
	h.wait("the Cancel button", func() bool {
		var ok bool
		status, ok = h.dc.Original(waiting.ID)
		_, has := status.Button("Cancel")
		return ok && has
	})
	other := h.click(dcBob, status, "Cancel")
	h.wait("the refusal", func() bool {
		m, ok := h.dc.Original(other.ID)
		return ok && m.Ephemeral() && strings.Contains(m.Content, "Only the person who asked")
	})
	h.click(dcAda, status, "Cancel")
	h.wait("the cancelled status", func() bool {
		m, _ := h.dc.Original(waiting.ID)
		return m.Content == "Cancelled." && len(m.Buttons) == 0
	})
	h.result(first)
	time.Sleep(100 * time.Millisecond) // a cancelled job must not start late
	if got := h.prov.Stats().Creates; got != 1 {
		t.Errorf("%d creates, want only the first job's", got)
	}
}

// TestDiscordExpiredInteraction: a job that ends after the interaction's
// 15 minutes is posted as a reply in the channel (Discord answers 401
// Invalid Webhook Token to the old token), and still opens its thread.
func TestDiscordExpiredInteraction(t *testing.T) {
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 64 * 64}})
	h.prov.Inject(kontexttest.Create, kontexttest.Fault{Delay: 1500 * time.Millisecond})
	in := h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a very patient owl"))
	h.wait("the deferred response", func() bool { return h.dc.Interaction(in.ID).Ack == 5 })
	h.wait("the job to reach the provider", func() bool { return h.prov.Stats().Creates == 1 })
	h.dc.Advance(16 * time.Minute)
	imgs := h.waitImages(dcArt, 1)
	r := imgs[0]
	orig, _ := h.dc.Original(in.ID)
	if r.ID == orig.ID || r.ReplyTo != orig.ID || r.Interaction != "" {
		t.Errorf("result %+v, want a new channel message replying to the response %s", r, orig.ID)
	}
	if p := dcProv(t, r); p.Prompt != "a very patient owl" {
		t.Errorf("provenance %+v", p)
	}
	if h.dc.ExpiredTokenCalls() == 0 {
		t.Error("the bot never met the expired token (the test did not test the fallback)")
	}
	h.thread(r.ID)
	if strings.Contains(orig.Content, "Generating") {
		t.Errorf("the old response still says %q", orig.Content)
	}
}

// TestDiscordRateLimitedEdits: edits answered 429 are retried after
// retry_after; the result is not lost.
func TestDiscordRateLimitedEdits(t *testing.T) {
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 64 * 64}})
	h.prov.Inject(kontexttest.Create, kontexttest.Fault{Delay: 300 * time.Millisecond})
	in := h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a crowded channel"))
	h.wait("the deferred response", func() bool { return h.dc.Interaction(in.ID).Ack == 5 })
	h.dc.ForceRateLimit(3, 200*time.Millisecond)
	r := h.result(in)
	if h.dc.RateLimited() < 3 {
		t.Errorf("%d 429s answered, want 3", h.dc.RateLimited())
	}
	if p := dcProv(t, r); p.Prompt != "a crowded channel" {
		t.Errorf("provenance %+v", p)
	}
	h.thread(r.ID)

	// The natural limit: more than 5 edits in 5 s in one channel.
	before := h.dc.RateLimited()
	var ins []discordtest.Interaction
	for i := range 7 {
		ins = append(ins, h.slash(dcArt, dcBob, "imagine", discordtest.String("prompt", fmt.Sprintf("picture %d", i))))
	}
	for _, in := range ins {
		h.result(in)
	}
	if h.dc.RateLimited() == before {
		t.Error("seven results in one channel never met the edit limit (the test did not test it)")
	}
	if got := len(h.images(dcArt)); got != 8 {
		t.Errorf("%d images in #art, want 8", got)
	}
}

// TestDiscordNoPings: a prompt with @everyone and a user mention is posted
// (caption, thread name, alt text) without pinging anyone.
func TestDiscordNoPings(t *testing.T) {
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 64 * 64}})
	prompt := "@everyone look: a poster for <@" + dcBob + "> and @here"
	r, th := h.dcPicture(dcAda, prompt)
	if !strings.Contains(r.Content, "@everyone") || r.MentionEveryone {
		t.Errorf("caption %q, mention_everyone %v", r.Content, r.MentionEveryone)
	}
	h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "@everyone add balloons"})
	ms := h.waitImages(th.ID, 1)
	if ms[0].MentionEveryone {
		t.Error("the thread result pinged everyone")
	}
	// The cleanup checks the fake saw no non-empty allowed_mentions at all.
}

// TestDiscordWithoutMessageContent: without the Message Content intent
// the gateway refuses the first identify (4014); the bot says so once and
// works on: commands, and thread messages that mention it.
func TestDiscordWithoutMessageContent(t *testing.T) {
	h := dcStart(t, dcOptions{discord: discordtest.Options{NoMessageContent: true}, provider: kontexttest.Options{Pixels: 64 * 64}})
	ids := h.dc.Identifies()
	if len(ids) != 2 || ids[0].Intents&discordtest.IntentMessageContent == 0 || ids[1].Intents&discordtest.IntentMessageContent != 0 {
		t.Errorf("identifies %+v: want one with Message Content, then one without", ids)
	}
	if out := h.stdout.String(); strings.Count(out, "Message Content intent is not enabled") != 1 {
		t.Errorf("stdout should say once that the intent is missing:\n%s", out)
	}
	r, th := h.dcPicture(dcAda, "a quiet harbour")
	h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "add boats"}) // content not delivered: ignored
	h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "<@" + h.dc.BotID() + "> add a moon"})
	ms := h.waitImages(th.ID, 1)
	if p := dcProv(t, ms[0]); p.Prompt != "add a moon" || p.InputSHA256 != dcSHA(r.Attachments[0].Data) {
		t.Errorf("mention in thread: %+v", p)
	}
	if err := h.prov.Stats().Creates; err != 2 {
		t.Errorf("%d creates, want 2 (the unmentioned message is unreadable)", err)
	}
}

// TestDiscordDirectMessages: with global commands, a DM is a
// conversation: the first message makes a picture, the next edits it;
// /usage answers privately.
func TestDiscordDirectMessages(t *testing.T) {
	h := dcStart(t, dcOptions{global: true, provider: kontexttest.Options{Pixels: 64 * 64}})
	const dm = "800000000000000099"
	h.dc.AddDM(dm, dcAda)
	h.say(discordtest.Say{ChannelID: dm, UserID: dcAda, Content: "a red fox --seed 5"})
	ms := h.waitImages(dm, 1)
	if p := dcProv(t, ms[0]); p.Prompt != "a red fox" || p.Seed != 5 || p.InputSHA256 != "" {
		t.Errorf("first DM image %+v", p)
	}
	h.say(discordtest.Say{ChannelID: dm, UserID: dcAda, Content: "make it blue"})
	ms = h.waitImages(dm, 2)
	if p := dcProv(t, ms[1]); p.Prompt != "make it blue" || p.InputSHA256 != dcSHA(ms[0].Attachments[0].Data) {
		t.Errorf("second DM image %+v", p)
	}
	if ms[0].Thread != "" || ms[1].Thread != "" {
		t.Error("a DM result opened a thread")
	}
	in := h.slash(dm, dcAda, "usage")
	h.wait("the usage answer", func() bool {
		m, ok := h.dc.Original(in.ID)
		return ok && m.Ephemeral() && strings.Contains(m.Content, "You have made 2 images today")
	})
	// Guild commands are not registered: everything went global.
	if len(h.dc.Commands("")) != 7 || len(h.dc.Commands(dcGuild)) != 0 {
		t.Errorf("commands: %d global, %d in the guild", len(h.dc.Commands("")), len(h.dc.Commands(dcGuild)))
	}
}

// spawn starts the real binary (`kontextbot serve` as a separate process)
// and waits until it is connected, with its commands registered.
func (h *dcHarness) spawn(ctx context.Context) *proc {
	h.t.Helper()
	before := len(h.dc.Identifies())
	p := startProc(h.t, ctx, h.env, "serve")
	h.wait("the bot process to connect", func() bool {
		return h.dc.Ready() && len(h.dc.Identifies()) > before && p.stdout.has("invite the bot")
	})
	return p
}

// TestDiscordRestart: the bot is killed (SIGKILL) while one job runs and
// another waits; after a restart both are delivered, in their
// interactions' responses, the running one without a second provider call;
// the buttons of a result keep working.
func TestDiscordRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	h := dcFakes(t, dcOptions{env: map[string]string{"KONTEXT_SLOTS": "1", "KONTEXT_WAIT": "0"},
		provider: kontexttest.Options{Latency: 1500 * time.Millisecond, Pixels: 64 * 64}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	first := h.spawn(ctx)
	running := h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a castle in the fog"))
	h.wait("the first job to reach the provider", func() bool { return h.prov.Stats().Creates == 1 })
	waiting := h.slash(dcArt, dcBob, "imagine", discordtest.String("prompt", "a ship in a bottle"), discordtest.Integer("seed", 42))
	h.wait("the second job to wait", func() bool {
		m, _ := h.dc.Original(waiting.ID)
		return strings.Contains(m.Content, "Queued · 1st in line")
	})
	first.signal(syscall.SIGKILL)
	first.wait()
	h.wait("the gateway to notice", func() bool { return !h.dc.Ready() })
	if len(h.images(dcArt)) != 0 {
		t.Fatal("an image was delivered before the restart")
	}

	second := h.spawn(ctx)
	r1, r2 := h.result(running), h.result(waiting)
	if p := dcProv(t, r1); p.Prompt != "a castle in the fog" {
		t.Errorf("running job delivered %+v", p)
	}
	if p := dcProv(t, r2); p.Prompt != "a ship in a bottle" || p.Seed != 42 {
		t.Errorf("waiting job delivered %+v", p)
	}
	h.thread(r1.ID)
	th2 := h.thread(r2.ID)
	if got := h.prov.Stats().Creates; got != 2 {
		t.Errorf("%d creates, want 2 (the running prediction is followed, not made again)", got)
	}
	if !second.stderr.has("resumed_jobs=2") {
		t.Errorf("the restart did not resume 2 jobs:\n%s", second.stderr.String())
	}
	// Buttons carry what they need: Reroll on a result works in this process.
	h.click(dcAda, r2, "Reroll")
	if p := dcProv(t, h.waitImages(th2.ID, 1)[0]); p.Prompt != "a ship in a bottle" || p.Seed == 42 {
		t.Errorf("reroll after the restart: %+v", p)
	}
	// A graceful stop.
	second.signal(os.Interrupt)
	if err := second.wait(); err != nil {
		t.Errorf("serve after SIGINT: %v\n%s", err, second.stderr.String())
	}
}

// Issue 11: what real Discord servers send that the fake did not.

// dcBigPhoto is a PNG of noise (it does not compress) carrying a large
// private ancillary chunk, as cameras and editors embed metadata: a
// person's photo of size bytes that decodes as fast as a small one.
func dcBigPhoto(t *testing.T, w, h, size int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range img.Pix {
		img.Pix[i] = uint8(rng.Uint32())
	}
	for i := 3; i < len(img.Pix); i += 4 {
		img.Pix[i] = 255
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	iend := data[len(data)-12:]
	body := make([]byte, size-len(data)-12)
	for i := range body {
		body[i] = uint8(rng.Uint32())
	}
	var chunk bytes.Buffer
	_ = be.Write(&chunk, be.BigEndian, uint32(len(body)))
	chunk.WriteString("prVt")
	chunk.Write(body)
	_ = be.Write(&chunk, be.BigEndian, crc32.ChecksumIEEE(append([]byte("prVt"), body...)))
	return append(append(append([]byte{}, data[:len(data)-12]...), chunk.Bytes()...), iend...)
}

// TestDiscordUploadLimit: Undo back to a person's 10.5 MiB photo posts a
// copy that fits the server's 10 MiB upload limit (the fake refuses a
// bigger request body with 413, code 40005, as Discord does), while the
// stored original stays as it was: on a boosted server (a 50 MiB limit,
// reported in the interaction's attachment_size_limit) a second Undo
// posts the original's exact bytes.
func TestDiscordUploadLimit(t *testing.T) {
	// The photo goes to the provider byte for byte (no shrinking of big
	// inputs), so the provenance names the photo itself; this test is about
	// posting it back to Discord.
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 64 * 64},
		env: map[string]string{"KONTEXT_INPUT_MAX_BYTES": strconv.Itoa(64 << 20)}})
	photo := dcBigPhoto(t, 512, 512, 10<<20+512<<10)
	if len(photo) <= discordtest.MaxUploadBytes || len(photo) > 20<<20 {
		t.Fatalf("the photo is %d bytes: want between 10 and 20 MiB", len(photo))
	}
	att := h.dc.Upload(dcArt, "big.png", "image/png", photo)
	in := h.slash(dcArt, dcAda, "edit", discordtest.String("prompt", "add a hat"), discordtest.File("image", att))
	var r discordtest.Message
	// Sending 10 MiB to the fake provider is slow under -race: a longer guard.
	if !h.dc.Wait(90*time.Second, func() bool { m, ok := h.dc.Original(in.ID); r = m; return ok && len(m.Attachments) == 1 }) {
		t.Fatalf("no result for the edit of the big photo\n%s", h.logs.String())
	}
	if p := dcProv(t, r); p.InputSHA256 != dcSHA(photo) {
		t.Fatalf("the edit started from %s, want the photo", p.InputSHA256)
	}
	th := h.thread(r.ID)

	undo := h.click(dcAda, r, "Undo")
	back := h.waitImages(th.ID, 1)[0]
	a := back.Attachments[0]
	if !strings.HasPrefix(back.Content, "Back to: Uploaded image") || a.Size > discordtest.MaxUploadBytes || a.ContentType != "image/jpeg" {
		t.Errorf("undo posted %q with %s of %d bytes: want the photo as a JPEG under 10 MiB", back.Content, a.ContentType, a.Size)
	}
	if cfg, _, err := image.DecodeConfig(bytes.NewReader(a.Data)); err != nil || cfg.Width < 512 || cfg.Width != cfg.Height {
		t.Errorf("the posted copy: %+v %v", cfg, err)
	}
	if f := h.dc.Followups(undo.ID); len(f) != 0 {
		t.Errorf("the Undo got an apology: %q", f[0].Content)
	}

	// A boosted server: the interaction reports 50 MiB; the stored
	// original, untouched, fits and is posted as it is.
	h.dc.SetUploadLimit(dcGuild, 50<<20)
	h.click(dcAda, r, "Undo")
	again := h.waitImages(th.ID, 2)[1]
	if got := again.Attachments[0]; dcSHA(got.Data) != dcSHA(photo) {
		t.Errorf("on a 50 MiB server undo posted %s (%d bytes), want the original PNG", got.ContentType, got.Size)
	}
}

// TestDiscordReplyPingIsNotACommand: a reply to the bot's text message
// puts the bot in mentions (reply pings are on by default), yet "ok,
// thanks!" is no command: no job, no charge. A reply that writes
// <@bot> is one.
func TestDiscordReplyPingIsNotACommand(t *testing.T) {
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 64 * 64}})
	bot := "<@" + h.dc.BotID() + ">"
	ask := h.say(discordtest.Say{ChannelID: dcArt, UserID: dcAda, Content: bot})
	var said discordtest.Message
	h.wait("the bot's answer to an empty mention", func() bool {
		for _, m := range h.dc.Messages(dcArt) {
			if m.Author.Bot && m.ReplyTo == ask.ID {
				said = m
				return true
			}
		}
		return false
	})
	thanks := h.say(discordtest.Say{ChannelID: dcArt, UserID: dcAda, Content: "ok, thanks!", ReplyTo: said.ID})
	h.say(discordtest.Say{ChannelID: dcArt, UserID: dcBob, Content: bot + " a red kite", ReplyTo: said.ID})
	imgs := h.waitImages(dcArt, 1)
	if p := dcProv(t, imgs[0]); p.Prompt != "a red kite" {
		t.Errorf("the explicit mention made %+v", p)
	}
	if got := h.prov.Stats().Creates; got != 1 {
		t.Errorf("%d creates, want 1: a reply ping made a picture", got)
	}
	for _, m := range h.dc.Messages(dcArt) {
		if m.Author.Bot && m.ReplyTo == thanks.ID {
			t.Errorf("the bot answered %q to a reply ping", m.Content)
		}
	}
	in := h.slash(dcArt, dcAda, "usage")
	h.wait("ada's usage", func() bool {
		m, ok := h.dc.Original(in.ID)
		return ok && strings.Contains(m.Content, "You have made 0 images today")
	})
}

// TestDiscordReplyToPhotoWithoutMessageContent: without the Message
// Content intent a reply that mentions the bot shows it the replied-to
// photo without its attachments; the bot says how to edit it (Apps → Edit
// image) instead of making a new picture, and that menu works.
func TestDiscordReplyToPhotoWithoutMessageContent(t *testing.T) {
	h := dcStart(t, dcOptions{discord: discordtest.Options{NoMessageContent: true}, provider: kontexttest.Options{Pixels: 64 * 64}})
	photo := dcPNG(t, 64, 48, 3)
	posted := h.say(discordtest.Say{ChannelID: dcArt, UserID: dcBob, Content: "my cat",
		Attachments: []discordtest.Attachment{h.dc.Upload(dcArt, "cat.png", "image/png", photo)}})
	ask := h.say(discordtest.Say{ChannelID: dcArt, UserID: dcAda, Content: "<@" + h.dc.BotID() + "> make it a watercolor", ReplyTo: posted.ID})
	h.wait("the bot's advice", func() bool {
		for _, m := range h.dc.Messages(dcArt) {
			if m.Author.Bot && m.ReplyTo == ask.ID && strings.Contains(m.Content, "Apps → Edit image") {
				return true
			}
		}
		return false
	})
	if got := h.prov.Stats().Creates; got != 0 {
		t.Fatalf("%d creates: the bot made something else instead of editing the photo", got)
	}
	menu, err := h.dc.MessageCommand(dcArt, dcAda, "Edit image", posted.ID)
	if err != nil {
		t.Fatal(err)
	}
	h.wait("the modal", func() bool { return h.dc.Interaction(menu.ID).Modal != nil })
	submit, err := h.dc.SubmitModal(menu, map[string]string{"prompt": "make it a watercolor"})
	if err != nil {
		t.Fatal(err)
	}
	if p := dcProv(t, h.result(submit)); p.InputSHA256 != dcSHA(photo) {
		t.Errorf("the menu edit started from %s, want the photo", p.InputSHA256)
	}
}

// TestDiscordDeletedThread: the buttons under a result whose thread was
// deleted (404, 10003), or archived and locked (400, 50083), post in the
// channel, where the new result opens a new thread; nobody gets an
// apology.
func TestDiscordDeletedThread(t *testing.T) {
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 64 * 64}})
	r0, th := h.dcPicture(dcAda, "a quiet harbour")
	h.dc.DeleteChannel(th.ID)
	click := h.click(dcBob, r0, "Reroll")
	imgs := h.waitImages(dcArt, 2)
	r1 := imgs[1]
	if p := dcProv(t, r1); p.Prompt != "a quiet harbour" {
		t.Errorf("reroll %+v", p)
	}
	th1 := h.thread(r1.ID)
	if f := h.dc.Followups(click.ID); len(f) != 0 {
		t.Errorf("the Reroll got an apology: %q", f[0].Content)
	}

	// The new thread works; then it is archived and locked.
	h.say(discordtest.Say{ChannelID: th1.ID, UserID: dcAda, Content: "add boats"})
	boats := h.waitImages(th1.ID, 1)[0]
	h.dc.ArchiveThread(th1.ID, true)
	click = h.click(dcAda, boats, "Undo")
	imgs = h.waitImages(dcArt, 3)
	if back := imgs[2]; !strings.HasPrefix(back.Content, "Back to: a quiet harbour") || dcSHA(back.Attachments[0].Data) != dcSHA(r1.Attachments[0].Data) {
		t.Errorf("undo in a locked thread posted %q", back.Content)
	}
	if f := h.dc.Followups(click.ID); len(f) != 0 {
		t.Errorf("the Undo got an apology: %q", f[0].Content)
	}
	click = h.click(dcAda, boats, "Reroll")
	imgs = h.waitImages(dcArt, 4)
	if p := dcProv(t, imgs[3]); p.Prompt != "add boats" {
		t.Errorf("reroll from a locked thread %+v", p)
	}
	h.thread(imgs[3].ID)
	if f := h.dc.Followups(click.ID); len(f) != 0 {
		t.Errorf("the Reroll got an apology: %q", f[0].Content)
	}
}

// TestDiscordEditImageAfterRestart: the "Edit image" modal carries its
// target (channel and message) in its custom id, so a form opened before
// a restart works after it; without the Message Content intent, where
// Discord no longer shows the bot that message's files, it says to open
// the menu again instead of claiming the message has no image.
func TestDiscordEditImageAfterRestart(t *testing.T) {
	for _, tc := range []struct {
		name      string
		noContent bool
	}{{"WithMessageContent", false}, {"WithoutMessageContent", true}} {
		t.Run(tc.name, func(t *testing.T) {
			h := dcStart(t, dcOptions{discord: discordtest.Options{NoMessageContent: tc.noContent}, provider: kontexttest.Options{Pixels: 64 * 64}})
			photo := dcPNG(t, 64, 64, 5)
			posted := h.say(discordtest.Say{ChannelID: dcArt, UserID: dcBob, Content: "my dog",
				Attachments: []discordtest.Attachment{h.dc.Upload(dcArt, "dog.png", "image/png", photo)}})
			menu, err := h.dc.MessageCommand(dcArt, dcAda, "Edit image", posted.ID)
			if err != nil {
				t.Fatal(err)
			}
			h.wait("the modal", func() bool { return h.dc.Interaction(menu.ID).Modal != nil })
			if id := h.dc.Interaction(menu.ID).Modal.CustomID; len(id) > 100 || !strings.Contains(id, posted.ID) || !strings.Contains(id, dcArt) {
				t.Errorf("modal custom id %q: want the channel and the message, at most 100 characters", id)
			}
			h.stop()
			h.serve()
			submit, err := h.dc.SubmitModal(menu, map[string]string{"prompt": "give the dog a scarf"})
			if err != nil {
				t.Fatal(err)
			}
			if !tc.noContent {
				if p := dcProv(t, h.result(submit)); p.InputSHA256 != dcSHA(photo) {
					t.Errorf("the edit started from %s, want the photo", p.InputSHA256)
				}
				return
			}
			var f []discordtest.Message
			h.wait("the answer", func() bool { f = h.dc.Followups(submit.ID); return len(f) == 1 })
			if !f[0].Ephemeral() || !strings.Contains(f[0].Content, "Apps → Edit image") {
				t.Errorf("answer %q (ephemeral %v), want a private hint to open the menu again", f[0].Content, f[0].Ephemeral())
			}
			if got := h.prov.Stats().Creates; got != 0 {
				t.Errorf("%d creates", got)
			}
		})
	}
}

// TestDiscordThreadsDenied: in a channel where the bot may not create
// threads (403, 50013) it tries once, says why once in the log, and
// keeps posting results in the channel without trying again.
func TestDiscordThreadsDenied(t *testing.T) {
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 64 * 64}})
	h.dc.DenyThreads(dcArt)
	for i, prompt := range []string{"a fox", "a hare", "an owl"} {
		r := h.result(h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", prompt)))
		if r.Thread != "" {
			t.Errorf("result %d opened a thread", i)
		}
	}
	tries := 0
	for _, r := range h.dc.Requests() {
		if strings.HasPrefix(r, "POST /channels/"+dcArt+"/messages/") && strings.HasSuffix(r, "/threads") {
			tries++
		}
	}
	if tries != 1 {
		t.Errorf("%d thread creations tried, want 1", tries)
	}
	if n := strings.Count(h.logs.String(), "may not create threads"); n != 1 {
		t.Errorf("the log says %d times that threads are denied, want once:\n%s", n, h.logs.String())
	}
	// The channel is the conversation: /edit there edits the last result.
	last := h.images(dcArt)[2]
	r := h.result(h.slash(dcArt, dcBob, "edit", discordtest.String("prompt", "at night")))
	if p := dcProv(t, r); p.InputSHA256 != dcSHA(last.Attachments[0].Data) {
		t.Errorf("/edit in the channel started from %s, want the last result", p.InputSHA256)
	}
}

// TestDiscordLongRateLimit: a 429 whose retry_after (400 s) is longer
// than the 30 s the bot used to cap its waits at is waited out in full,
// once: one 429, then the result. The waits run on the fake's clock, so
// the test takes no time.
func TestDiscordLongRateLimit(t *testing.T) {
	h := dcFakes(t, dcOptions{provider: kontexttest.Options{Pixels: 64 * 64}})
	var waited []time.Duration
	var mu sync.Mutex
	discordWait = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		waited = append(waited, d)
		mu.Unlock()
		h.dc.Advance(d)
		return ctx.Err()
	}
	t.Cleanup(func() { discordWait = nil })
	h.serve()
	in := h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a patient heron"))
	h.wait("the deferred response", func() bool { return h.dc.Interaction(in.ID).Ack == 5 })
	h.dc.HoldRateLimit(400 * time.Second)
	r := h.result(in)
	if p := dcProv(t, r); p.Prompt != "a patient heron" {
		t.Errorf("provenance %+v", p)
	}
	if got := h.dc.RateLimited(); got != 1 {
		t.Errorf("%d 429s, want 1: the bot retried before retry_after", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(waited) != 1 || waited[0] < 400*time.Second {
		t.Errorf("waits %v, want one of 400 s", waited)
	}
}

// TestDiscordRestartMidBurst: a burst of requests, the bot stopped while
// some run and others wait, then started again on the same store: every
// request is answered with exactly one image, and made (charged) once.
func TestDiscordRestartMidBurst(t *testing.T) {
	h := dcStart(t, dcOptions{env: map[string]string{"KONTEXT_SLOTS": "2", "KONTEXT_WAIT": "0"},
		provider: kontexttest.Options{Latency: 400 * time.Millisecond, Pixels: 64 * 64}})
	users := []string{dcAda, dcBob, "700000000000000003", "700000000000000004"}
	var ins []discordtest.Interaction
	for i := range 8 {
		ins = append(ins, h.slash(dcArt, users[i%len(users)], "imagine", discordtest.String("prompt", fmt.Sprintf("burst %d", i))))
	}
	h.wait("the first results", func() bool { return len(h.images(dcArt)) >= 2 })
	h.stop()
	if n := len(h.images(dcArt)); n >= len(ins) {
		t.Fatalf("all %d images were delivered before the restart: the test tested nothing", n)
	}
	h.serve()
	for i, in := range ins {
		if p := dcProv(t, h.result(in)); p.Prompt != fmt.Sprintf("burst %d", i) {
			t.Errorf("interaction %d answered with %q", i, p.Prompt)
		}
	}
	time.Sleep(300 * time.Millisecond) // a duplicate would show up now
	if n := len(h.images(dcArt)); n != len(ins) {
		t.Errorf("%d images in #art, want %d (one per request)", n, len(ins))
	}
	if got := h.prov.Stats().Creates; got != len(ins) {
		t.Errorf("%d creates, want %d", got, len(ins))
	}
	for _, u := range users {
		in := h.slash(dcArt, u, "usage")
		h.wait("the usage of "+u, func() bool {
			m, ok := h.dc.Original(in.ID)
			return ok && strings.Contains(m.Content, "You have made 2 images today")
		})
	}
}

// TestDiscordLostCreateAnswer: a message create that Discord performed
// but answered with a server error (the bot cannot tell it from a
// failure) is sent again under the same nonce with enforce_nonce, and
// Discord hands back the first message (a result's post is tried again
// by the core, which looks for the message first): a status and a
// result are each posted once, and the job goes on.
func TestDiscordLostCreateAnswer(t *testing.T) {
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 64 * 64}})
	r0, th := h.dcPicture(dcAda, "a lighthouse")

	// The status of a message in the picture's thread.
	h.dc.LoseCreateAnswers(1)
	ask := h.say(discordtest.Say{ChannelID: th.ID, UserID: dcAda, Content: "add a moon"})
	img := h.waitImages(th.ID, 1)[0]
	if p := dcProv(t, img); p.Prompt != "add a moon" || p.InputSHA256 != dcSHA(r0.Attachments[0].Data) {
		t.Errorf("thread edit %+v", p)
	}
	replies := 0
	for _, m := range h.dc.Messages(th.ID) {
		if m.Author.Bot && m.ReplyTo == ask.ID {
			replies++
		}
	}
	if replies != 1 || h.dc.NonceHits() != 1 {
		t.Errorf("%d bot messages answer the request (nonce hits %d), want 1 (1)", replies, h.dc.NonceHits())
	}

	// A result posted as a new message once the interaction's token is gone.
	h.prov.Inject(kontexttest.Create, kontexttest.Fault{Delay: 3 * time.Second})
	in := h.slash(dcArt, dcBob, "imagine", discordtest.String("prompt", "a slow comet"))
	h.wait("the job to reach the provider", func() bool { return h.prov.Stats().Creates == 3 })
	h.dc.LoseCreateAnswers(1) // the next channel message create is the result
	h.dc.Advance(16 * time.Minute)
	th2 := h.thread(h.waitImages(dcArt, 2)[1].ID) // the thread opens once the post is settled
	// The core tried the post again (a Repost): it found the message in
	// the channel, or Discord handed it back under its nonce.
	if h.dc.NonceHits() != 2 && !dcHas(h.dc.Requests(), "GET /channels/"+dcArt+"/messages") {
		t.Error("the result's create that landed was neither looked for nor sent again under its nonce")
	}
	imgs := h.images(dcArt)
	if len(imgs) != 2 || dcProv(t, imgs[1]).Prompt != "a slow comet" {
		t.Errorf("#art has %d images, want the first picture and the comet once", len(imgs))
	}
	orig, _ := h.dc.Original(in.ID)
	if imgs[1].ReplyTo != orig.ID || th2.ID != imgs[1].ID {
		t.Errorf("result replies to %s with thread %s, want a reply to the response %s with its thread", imgs[1].ReplyTo, th2.ID, orig.ID)
	}
}
