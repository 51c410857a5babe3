package main

// End-to-end tests of the Slack adapter: the real `kontextbot serve`
// (through run) against a fake Slack (platforms/slack/slackfake) and the
// fake provider (kontexttest), in Socket Mode and in HTTP mode.
//
// Helpers here are prefixed sl so they never clash with other platforms'
// test files.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/slack/slackfake"
)

// slWait is the failure guard of every wait: tests synchronise on what
// the fake sees, never on sleeps.
const slWait = 15 * time.Second

// slEnv is one running bot with its fakes.
type slEnv struct {
	t     *testing.T
	mode  string // "socket" or "http"
	slack *slackfake.Server
	kx    *kontexttest.Server
	env   map[string]string
	addr  string // HTTP_ADDR

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan error
	logs   *slLogs
	runs   int
}

// slLogs collects the bot's log and signals when it is ready.
type slLogs struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan struct{}
	seen  bool
}

func (l *slLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if !l.seen && strings.Contains(l.buf.String(), "kontextbot ready") {
		l.seen = true
		close(l.ready)
	}
	return len(p), nil
}

func (l *slLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// slFreeAddr returns a free local address for HTTP_ADDR.
func slFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// slStart starts the fakes and the bot in mode, with extra environment.
func slStart(t *testing.T, mode string, extra map[string]string) *slEnv {
	t.Helper()
	kx, env := fakeEnv(t, kontexttest.Options{Pixels: 160 * 160})
	if err := os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fake := slackfake.New(slackfake.Options{})
	t.Cleanup(fake.Close)
	o := fake.Options()
	e := &slEnv{t: t, mode: mode, slack: fake, kx: kx, env: env, addr: slFreeAddr(t)}
	env["SLACK_BOT_TOKEN"] = o.BotToken
	env["SLACK_API_URL"] = fake.APIURL()
	env["HTTP_ADDR"] = e.addr
	env["LOG_LEVEL"] = "debug"
	env["SHUTDOWN_TIMEOUT"] = "2s"
	switch mode {
	case "socket":
		env["SLACK_APP_TOKEN"] = o.AppToken
	case "http":
		env["SLACK_SIGNING_SECRET"] = o.SigningSecret
		fake.SetHTTPTarget("http://" + e.addr)
	}
	for k, v := range extra {
		env[k] = v
	}
	e.startBot()
	t.Cleanup(func() {
		e.stopBot()
		if t.Failed() {
			t.Logf("bot log:\n%s", e.logs.String())
		}
	})
	return e
}

// startBot runs `kontextbot serve` until stopBot, and waits until it is
// ready.
func (e *slEnv) startBot() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &slLogs{ready: make(chan struct{})}
	done := make(chan error, 1)
	var stdout bytes.Buffer
	go func() { done <- run(ctx, []string{"serve"}, envMap(e.env), &stdout, logs) }()
	e.mu.Lock()
	e.cancel, e.done, e.logs = cancel, done, logs
	e.runs++
	e.mu.Unlock()
	select {
	case <-logs.ready:
	case err := <-done:
		cancel()
		e.t.Fatalf("the bot stopped at start: %v\n%s", err, logs.String())
	case <-time.After(slWait):
		cancel()
		e.t.Fatalf("the bot did not get ready:\n%s", logs.String())
	}
	if e.mode == "socket" && !e.slack.Connected() {
		e.t.Fatal("the bot is ready but not connected over Socket Mode")
	}
}

// stopBot stops the bot as a signal would and waits for it to exit.
func (e *slEnv) stopBot() {
	e.mu.Lock()
	cancel, done := e.cancel, e.done
	e.cancel, e.done = nil, nil
	e.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			e.t.Errorf("serve returned %v", err)
		}
	case <-time.After(slWait):
		e.t.Errorf("serve did not stop:\n%s", e.logs.String())
	}
}

// run runs one scenario as a subtest, with e reporting to it.
func (e *slEnv) run(t *testing.T, name string, fn func(t *testing.T)) {
	t.Run(name, func(st *testing.T) {
		parent := e.t
		e.t = st
		defer func() { e.t = parent }()
		fn(st)
	})
}

// wait fails the test unless cond comes true.
func (e *slEnv) wait(what string, cond func() bool) {
	e.t.Helper()
	if !e.slack.Wait(slWait, cond) {
		e.t.Fatalf("timed out waiting for %s\nproblems: %q", what, e.slack.Problems())
	}
}

// checkClean fails on anything the fake Slack refused or found late.
func (e *slEnv) checkClean() {
	e.t.Helper()
	for _, p := range e.slack.CheckAcks() {
		e.t.Errorf("fake Slack: %s", p)
	}
	// Each message is deleted once (a second chat.delete only earns
	// message_not_found).
	deletes := map[string]int{}
	for _, c := range e.slack.Calls() {
		if c.Method == "chat.delete" {
			deletes[c.Params["channel"]+"/"+c.Params["ts"]]++
		}
	}
	for msg, n := range deletes {
		if n > 1 {
			e.t.Errorf("chat.delete called %d times for %s", n, msg)
		}
	}
}

// slIsImage reports whether m is one of the bot's images.
func (e *slEnv) isImage(m slackfake.Message) bool {
	return m.BotID == e.slack.Options().BotID && len(m.Files) > 0
}

// images returns the bot's images at the top level of a channel (thread
// "") or in a thread (its root included).
func (e *slEnv) images(channel, thread string) []slackfake.Message {
	var msgs []slackfake.Message
	if thread == "" {
		msgs = e.slack.TopLevel(channel)
	} else {
		msgs = e.slack.Thread(channel, thread)
	}
	var out []slackfake.Message
	for _, m := range msgs {
		if e.isImage(m) {
			out = append(out, m)
		}
	}
	return out
}

// waitImages waits for n of the bot's images in a channel or thread.
func (e *slEnv) waitImages(channel, thread string, n int) []slackfake.Message {
	e.t.Helper()
	var got []slackfake.Message
	e.wait(fmt.Sprintf("%d images in %s/%s", n, channel, thread), func() bool {
		got = e.images(channel, thread)
		return len(got) >= n
	})
	return got
}

// statuses returns the bot's live messages without an image (status
// messages) in a channel's top level or in a thread.
func (e *slEnv) statuses(channel, thread string) []slackfake.Message {
	var msgs []slackfake.Message
	if thread == "" {
		msgs = e.slack.TopLevel(channel)
	} else {
		msgs = e.slack.Thread(channel, thread)
	}
	var out []slackfake.Message
	for _, m := range msgs {
		if m.BotID != "" && len(m.Files) == 0 {
			out = append(out, m)
		}
	}
	return out
}

// waitEphemeral waits for an ephemeral message to user containing text.
func (e *slEnv) waitEphemeral(user, text string) slackfake.Ephemeral {
	e.t.Helper()
	var got slackfake.Ephemeral
	e.wait(fmt.Sprintf("an ephemeral message to %s saying %q", user, text), func() bool {
		for _, m := range e.slack.Ephemerals(user) {
			if strings.Contains(m.Text, text) {
				got = m
				return true
			}
		}
		return false
	})
	return got
}

// data returns the bytes of an image message.
func (e *slEnv) data(m slackfake.Message) []byte {
	e.t.Helper()
	if len(m.Files) == 0 {
		e.t.Fatalf("message %s has no file", m.TS)
	}
	b := e.slack.FileData(m.Files[0].ID)
	if len(b) == 0 {
		e.t.Fatalf("file %s of message %s is empty", m.Files[0].ID, m.TS)
	}
	return b
}

// prov returns the provenance of an image message.
func (e *slEnv) prov(m slackfake.Message) kontexttest.Provenance {
	e.t.Helper()
	p, err := kontexttest.ReadProvenance(e.data(m))
	if err != nil {
		e.t.Fatalf("message %s: %v", m.TS, err)
	}
	return p
}

func slSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// slPNG is a small picture a person might post.
func slPNG(t *testing.T, w, h int, seed uint8) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.NRGBA{uint8(x) + seed, uint8(y) * 2, seed * 3, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// acked checks an envelope was acknowledged in time.
func (e *slEnv) acked(env *slackfake.Envelope) {
	e.t.Helper()
	if !env.Acked(4 * time.Second) {
		e.t.Fatalf("envelope %s (%s) was not acknowledged", env.ID, env.Type)
	}
	if lat := env.Latency(); lat > time.Second {
		e.t.Errorf("envelope %s acknowledged after %s", env.ID, lat)
	}
}

// click presses a button and checks the acknowledgement.
func (e *slEnv) click(user string, m slackfake.Message, action string) {
	e.t.Helper()
	env, err := e.slack.Click(user, m, action)
	if err != nil {
		e.t.Fatal(err)
	}
	e.acked(env)
}

// imagine runs /imagine in channel and returns the picture's root message.
func (e *slEnv) imagine(user, channel, text string) slackfake.Message {
	e.t.Helper()
	before := len(e.images(channel, ""))
	e.acked(e.slack.Slash(user, channel, "/imagine", text))
	return e.waitImages(channel, "", before+1)[before]
}

// buttons lists a message's buttons by action id.
func slButtons(m slackfake.Message) map[string]string {
	var blocks []struct {
		Elements []struct {
			Type     string `json:"type"`
			ActionID string `json:"action_id"`
			Value    string `json:"value"`
		} `json:"elements"`
	}
	_ = json.Unmarshal(m.Blocks, &blocks)
	out := map[string]string{}
	for _, b := range blocks {
		for _, el := range b.Elements {
			if el.Type == "button" {
				out[el.ActionID] = el.Value
			}
		}
	}
	return out
}

// slNoLeaks checks, once the test and all its cleanups are done, that
// the bot and the fakes left no goroutine behind.
func slNoLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

const (
	slAda = "U0ADA"
	slBob = "U0BOB"
)

// TestSlackE2E runs every user-facing flow against the real binary
// wiring, in Socket Mode and in HTTP mode.
func TestSlackE2E(t *testing.T) {
	slNoLeaks(t)
	for _, mode := range []string{"socket", "http"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			e := slStart(t, mode, map[string]string{"KONTEXT_SLOTS": "1"})
			e.slack.AddUser(slAda, "ada")
			e.slack.AddUser(slBob, "bob")
			e.run(t, "ImagineThenThreadEdits", e.testImagineThenThreadEdits)
			e.run(t, "MentionWithImage", e.testMentionWithImage)
			e.run(t, "MentionBelowImageInThread", e.testMentionBelowImage)
			e.run(t, "ShortcutAndModal", e.testShortcut)
			e.run(t, "RerollUndoEdit", e.testRerollUndoEdit)
			e.run(t, "StatusQueueAndCancel", e.testStatusAndCancel)
			e.run(t, "EditInChannel", e.testEditInChannel)
			e.run(t, "FilesRefused", e.testFilesRefused)
			e.run(t, "TokenNeverLeavesSlack", e.testForeignFile)
			e.run(t, "NoFilesReadScope", e.testNoFilesRead)
			e.run(t, "UsageAndHelp", e.testUsage)
			e.run(t, "NotInChannel", e.testNotInChannel)
			if mode == "http" {
				e.run(t, "SignatureChecks", e.testSignatures)
			} else {
				e.run(t, "Reconnect", e.testReconnect)
			}
			e.checkClean()
		})
	}
}

// /imagine is acknowledged, shows a status message that goes away, and
// posts the image as a thread root; three messages in its thread each
// edit the previous image.
func (e *slEnv) testImagineThenThreadEdits(t *testing.T) {
	ch := e.slack.CreateChannel("art", true)
	env := e.slack.Slash(slAda, ch, "/imagine", "a lighthouse at dusk --ar 16:9 --seed 7")
	e.acked(env)
	root := e.waitImages(ch, "", 1)[0]
	if root.InThread() {
		t.Fatalf("the image was posted in a thread: %+v", root)
	}
	p := e.prov(root)
	if p.Prompt != "a lighthouse at dusk" || p.Seed != 7 || p.AspectRatio != "16:9" || p.InputSHA256 != "" {
		t.Errorf("imagine provenance %+v", p)
	}
	if b := slButtons(root); b["kontext_reroll"] == "" || b["kontext_undo"] == "" || b["kontext_edit"] == "" {
		t.Errorf("the image lacks its buttons: %v", b)
	}
	if !strings.Contains(string(root.Blocks), "a lighthouse at dusk · seed 7") {
		t.Errorf("caption: %s", root.Blocks)
	}
	e.wait("the status message to go", func() bool { return len(e.statuses(ch, "")) == 0 })
	// The status message was posted before the image and removed after.
	var sawStatus bool
	for _, m := range e.slack.AllMessages(ch) {
		if m.BotID != "" && len(m.Files) == 0 && m.Deleted && strings.Contains(string(m.Blocks), "a lighthouse at dusk") {
			sawStatus = true
		}
	}
	if !sawStatus {
		t.Error("no status message was shown while the image was made")
	}

	// Three follow-ups at once: each must edit the previous result.
	prompts := []string{"add a rainbow", "make it snow", "paint it like Hokusai"}
	for _, pr := range prompts {
		e.slack.Say(slAda, ch, root.TS, pr)
	}
	imgs := e.waitImages(ch, root.TS, 4)
	prev := e.data(imgs[0])
	for i, pr := range prompts {
		m := imgs[i+1]
		if !m.InThread() || m.ThreadTS != root.TS {
			t.Errorf("edit %d not in the picture's thread: %+v", i+1, m)
		}
		p := e.prov(m)
		if p.Prompt != pr || p.InputSHA256 != slSHA(prev) {
			t.Errorf("edit %d: prompt %q input %s, want %q from %s", i+1, p.Prompt, p.InputSHA256, pr, slSHA(prev))
		}
		prev = e.data(m)
	}
	e.wait("the thread's status messages to go", func() bool { return len(e.statuses(ch, root.TS)) == 0 })
	if eph := e.slack.Ephemerals(slAda); len(eph) != 0 {
		t.Errorf("unexpected ephemeral messages: %+v", eph)
	}
}

// A mention with an image attached edits that image, in the mention's
// thread, which then is a picture thread.
func (e *slEnv) testMentionWithImage(t *testing.T) {
	ch := e.slack.CreateChannel("photos", true)
	photo := slPNG(t, 96, 64, 1)
	f := e.slack.UploadFile(slBob, "cat.png", "image/png", photo)
	msg := e.slack.Say(slBob, ch, "", e.slack.Mention("give the cat a hat"), f)
	imgs := e.waitImages(ch, msg.TS, 1)
	if p := e.prov(imgs[0]); p.Prompt != "give the cat a hat" || p.InputSHA256 != slSHA(photo) {
		t.Errorf("mention edit: %+v, want an edit of the attached photo %s", p, slSHA(photo))
	}
	// The mention's thread now continues the picture.
	e.slack.Say(slBob, ch, msg.TS, "make the hat red")
	imgs = e.waitImages(ch, msg.TS, 2)
	if p := e.prov(imgs[1]); p.Prompt != "make the hat red" || p.InputSHA256 != slSHA(e.data(imgs[0])) {
		t.Errorf("follow-up: %+v", p)
	}
	// The file was downloaded once, with the bot token.
	var n int
	for _, d := range e.slack.Downloads() {
		if d.FileID == f.ID {
			n++
			if d.Auth != "Bearer "+e.slack.Options().BotToken {
				t.Errorf("download carried %q", d.Auth)
			}
		}
	}
	if n != 1 {
		t.Errorf("the photo was downloaded %d times", n)
	}
}

// A mention in a thread below a person's image edits that image.
func (e *slEnv) testMentionBelowImage(t *testing.T) {
	ch := e.slack.CreateChannel("holiday", true)
	photo := slPNG(t, 80, 80, 2)
	f := e.slack.UploadFile(slBob, "beach.png", "image/png", photo)
	post := e.slack.Say(slBob, ch, "", "our beach", f)
	e.slack.Say(slAda, ch, post.TS, "nice!")
	e.slack.Say(slAda, ch, post.TS, e.slack.Mention("add a sunset"))
	imgs := e.waitImages(ch, post.TS, 1)
	if p := e.prov(imgs[0]); p.Prompt != "add a sunset" || p.InputSHA256 != slSHA(photo) {
		t.Errorf("thread mention edit: %+v", p)
	}
}

// The "Edit image" shortcut opens a modal; its submission edits the
// message's image: a person's photo, or the bot's own result.
func (e *slEnv) testShortcut(t *testing.T) {
	ch := e.slack.CreateChannel("shortcuts", true)
	photo := slPNG(t, 64, 96, 3)
	f := e.slack.UploadFile(slBob, "dog.png", "image/png", photo)
	post := e.slack.Say(slBob, ch, "", "my dog", f)
	views := len(e.slack.Views())
	env, err := e.slack.Shortcut(slAda, post, "kontext_edit_image")
	if err != nil {
		t.Fatal(err)
	}
	e.acked(env)
	var v slackfake.View
	e.wait("the edit modal", func() bool {
		vs := e.slack.Views()
		if len(vs) > views {
			v = vs[len(vs)-1]
			return true
		}
		return false
	})
	if v.User != slAda || v.CallbackID != "kontext_edit_modal" || !strings.Contains(string(v.Blocks), `"prompt"`) {
		t.Fatalf("modal: %+v", v)
	}
	e.acked(e.slack.Submit(v, map[string]map[string]string{"prompt": {"prompt": "give the dog sunglasses --seed 3"}}))
	imgs := e.waitImages(ch, post.TS, 1)
	p := e.prov(imgs[0])
	if p.Prompt != "give the dog sunglasses" || p.Seed != 3 || p.InputSHA256 != slSHA(photo) {
		t.Errorf("shortcut edit: %+v", p)
	}

	// On the bot's own image: the stored image is the base, nothing is
	// downloaded.
	downloads := len(e.slack.Downloads())
	env, err = e.slack.Shortcut(slAda, imgs[0], "kontext_edit_image")
	if err != nil {
		t.Fatal(err)
	}
	e.acked(env)
	e.wait("a second modal", func() bool { return len(e.slack.Views()) > views+1 })
	vs := e.slack.Views()
	e.acked(e.slack.Submit(vs[len(vs)-1], map[string]map[string]string{"prompt": {"prompt": "now at night"}}))
	imgs = e.waitImages(ch, post.TS, 2)
	if p := e.prov(imgs[1]); p.Prompt != "now at night" || p.InputSHA256 != slSHA(e.data(imgs[0])) {
		t.Errorf("shortcut on the bot's image: %+v", p)
	}
	if d := e.slack.Downloads(); len(d) != downloads {
		t.Errorf("the bot downloaded its own image (%d downloads: %+v; image files %s, %s)", len(d)-downloads, d[downloads:], imgs[0].Files[0].ID, imgs[1].Files[0].ID)
	}

	// A message without an image: an ephemeral answer, no modal.
	text := e.slack.Say(slBob, ch, "", "just words")
	views = len(e.slack.Views())
	env, _ = e.slack.Shortcut(slAda, text, "kontext_edit_image")
	e.acked(env)
	e.waitEphemeral(slAda, "no image I can edit")
	if len(e.slack.Views()) != views {
		t.Error("a modal opened for a message without an image")
	}
}

// Reroll makes the same edit again with a new seed; Undo shows the
// previous image again and the next message edits it; the Edit button
// opens a modal whose submission edits the image it was on.
func (e *slEnv) testRerollUndoEdit(t *testing.T) {
	ch := e.slack.CreateChannel("buttons", true)
	root := e.imagine(slAda, ch, "a teapot --seed 11")
	e.slack.Say(slAda, ch, root.TS, "make it gold")
	imgs := e.waitImages(ch, root.TS, 2)
	gold := imgs[1]
	goldProv := e.prov(gold)

	e.click(slAda, gold, "kontext_reroll")
	imgs = e.waitImages(ch, root.TS, 3)
	re := e.prov(imgs[2])
	if re.Prompt != "make it gold" || re.InputSHA256 != goldProv.InputSHA256 || re.Seed == goldProv.Seed {
		t.Errorf("reroll %+v, want the prompt and input of %+v with another seed", re, goldProv)
	}

	// Undo on the reroll: back to its parent, the teapot.
	e.click(slAda, imgs[2], "kontext_undo")
	imgs = e.waitImages(ch, root.TS, 4)
	if got, want := slSHA(e.data(imgs[3])), slSHA(e.data(root)); got != want {
		t.Errorf("undo showed %s, want the teapot %s", got, want)
	}
	e.slack.Say(slAda, ch, root.TS, "make it silver")
	imgs = e.waitImages(ch, root.TS, 5)
	if p := e.prov(imgs[4]); p.Prompt != "make it silver" || p.InputSHA256 != slSHA(e.data(root)) {
		t.Errorf("after undo: %+v, want an edit of the teapot", p)
	}

	// Edit button on the gold image: a modal, then an edit of that image.
	views := len(e.slack.Views())
	e.click(slBob, gold, "kontext_edit")
	e.wait("the edit modal", func() bool { return len(e.slack.Views()) > views })
	vs := e.slack.Views()
	if vs[len(vs)-1].User != slBob {
		t.Errorf("modal opened for %s", vs[len(vs)-1].User)
	}
	e.acked(e.slack.Submit(vs[len(vs)-1], map[string]map[string]string{"prompt": {"prompt": "add steam"}}))
	imgs = e.waitImages(ch, root.TS, 6)
	if p := e.prov(imgs[5]); p.Prompt != "add steam" || p.InputSHA256 != slSHA(e.data(gold)) {
		t.Errorf("edit button: %+v, want an edit of the gold image", p)
	}

	// Undo at the first image of the thread: nothing to undo, said only
	// to the person who pressed it.
	e.click(slBob, root, "kontext_undo")
	e.waitEphemeral(slBob, "Nothing to undo")
}

// One slot: while a long job runs, the next ones wait; their status
// messages show their place in line (updated in place, at most every 2
// s) with a Cancel button, then "Generating…", and go when the image
// arrives. Cancel works for the requester only.
func (e *slEnv) testStatusAndCancel(t *testing.T) {
	ch := e.slack.CreateChannel("queue", true)
	creates := e.kx.Stats().Creates
	e.kx.Inject(kontexttest.Create, kontexttest.Fault{Delay: 5 * time.Second}, kontexttest.Fault{Delay: 2500 * time.Millisecond})
	status := func(prompt, line string) (slackfake.Message, bool) {
		for _, m := range e.statuses(ch, "") {
			if strings.Contains(string(m.Blocks), prompt) && strings.Contains(m.Text, line) {
				return m, true
			}
		}
		return slackfake.Message{}, false
	}
	// Commands of one channel are handled in order: job one takes the
	// only slot, two and three wait behind it.
	for _, prompt := range []string{"job one", "job two", "job three"} {
		e.acked(e.slack.Slash(slAda, ch, "/imagine", prompt))
	}
	var two slackfake.Message
	e.wait("job two's status with a Cancel button", func() bool {
		var ok bool
		two, ok = status("job two", "Queued · 1st in line")
		return ok && slButtons(two)["kontext_cancel"] != ""
	})
	e.wait("job three queued 2nd", func() bool { _, ok := status("job three", "Queued · 2nd in line"); return ok })

	// Bob may not cancel Ada's job; Ada may.
	e.click(slBob, two, "kontext_cancel")
	e.waitEphemeral(slBob, "Only the person who asked")
	e.click(slAda, two, "kontext_cancel")
	e.waitEphemeral(slAda, "Cancelled")
	e.wait("job two's status to go", func() bool { _, ok := status("job two", ""); return !ok })
	e.wait("job three to move up", func() bool { _, ok := status("job three", "Queued · 1st in line"); return ok })

	imgs := e.waitImages(ch, "", 2)
	e.wait("every status message to go", func() bool { return len(e.statuses(ch, "")) == 0 })
	if a, b := e.prov(imgs[0]).Prompt, e.prov(imgs[1]).Prompt; a != "job one" || b != "job three" {
		t.Errorf("delivered %q and %q, want job one and job three", a, b)
	}
	if got := e.kx.Stats().Creates - creates; got != 2 {
		t.Errorf("%d predictions, want 2 (the cancelled job costs nothing)", got)
	}
	// Job three's status went 2nd → 1st → Generating, each change at
	// least 2 s after the previous one (and the first 2 s after the post).
	var three slackfake.Message
	for _, m := range e.slack.AllMessages(ch) {
		if m.BotID != "" && len(m.Files) == 0 && strings.Contains(string(m.Blocks), "job three") {
			three = m
		}
	}
	var lines []string
	prev := three.Posted
	for _, ed := range three.Edits {
		lines = append(lines, ed.Text)
		if gap := ed.At.Sub(prev); gap < 1900*time.Millisecond {
			t.Errorf("status updated %s after the previous version", gap)
		}
		prev = ed.At
	}
	want := []string{"Queued · 2nd in line", "Queued · 1st in line", "Generating"}
	if len(lines) < len(want) {
		t.Fatalf("job three's status went through %q, want %q", lines, want)
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("status update %d: %q, want %q (all: %q)", i, lines[i], w, lines)
		}
	}
	if !three.Deleted {
		t.Error("job three's status message was not removed")
	}
}

// /edit in a channel edits the channel's latest picture and posts the
// result as a new thread root; with no picture it says how to start.
func (e *slEnv) testEditInChannel(t *testing.T) {
	ch := e.slack.CreateChannel("edits", true)
	e.acked(e.slack.Slash(slAda, ch, "/edit", "make it night"))
	e.waitEphemeral(slAda, "There is no image to edit here")
	if n := len(e.statuses(ch, "")); n != 0 {
		t.Errorf("a refused request posted %d status messages; it should post none", n)
	}

	first := e.imagine(slAda, ch, "a castle --seed 5")
	e.acked(e.slack.Slash(slBob, ch, "/edit", "make it night"))
	imgs := e.waitImages(ch, "", 2)
	night := imgs[1]
	if night.InThread() {
		t.Error("the /edit result was posted in a thread; it should open its own")
	}
	if p := e.prov(night); p.Prompt != "make it night" || p.InputSHA256 != slSHA(e.data(first)) {
		t.Errorf("/edit: %+v, want an edit of the castle", p)
	}
	// Its thread is a picture thread.
	e.slack.Say(slBob, ch, night.TS, "add stars")
	t2 := e.waitImages(ch, night.TS, 2)
	if p := e.prov(t2[1]); p.InputSHA256 != slSHA(e.data(night)) {
		t.Errorf("follow-up of the /edit result: %+v", p)
	}
	// Reroll on the /edit result: a new take of the same edit, from the
	// same parent (the thread starts with the image's ancestors), posted
	// in the picture's thread.
	e.click(slBob, night, "kontext_reroll")
	t3 := e.waitImages(ch, night.TS, 3)
	if p := e.prov(t3[2]); p.Prompt != "make it night" || p.InputSHA256 != slSHA(e.data(first)) {
		t.Errorf("reroll of the /edit result: %+v", p)
	}
	// Undo at the root of that thread goes back to the castle.
	e.click(slBob, night, "kontext_undo")
	t4 := e.waitImages(ch, night.TS, 4)
	if !bytes.Equal(e.data(t4[3]), e.data(first)) {
		t.Error("undo in the /edit result's thread did not show the castle again")
	}
}

// A file that is not an image, and an image over the size limit, are
// refused with a clear sentence, before anything is charged; an image
// whose declared size lies is cut off while downloading.
func (e *slEnv) testFilesRefused(t *testing.T) {
	ch := e.slack.CreateChannel("files", true)
	root := e.imagine(slAda, ch, "a map --seed 2")
	creates, downloads := e.kx.Stats().Creates, len(e.slack.Downloads())

	notes := e.slack.UploadFile(slAda, "notes.txt", "text/plain", []byte("just some text"))
	e.slack.Say(slAda, ch, root.TS, "use this", notes)
	e.waitEphemeral(slAda, "not an image the bot can edit")

	big := bytes.Repeat([]byte{0}, 20<<20+1)
	copy(big, slPNG(t, 8, 8, 4))
	huge := e.slack.UploadFile(slAda, "huge.png", "image/png", big)
	e.slack.Say(slAda, ch, root.TS, "use this one", huge)
	e.waitEphemeral(slAda, "too large")
	if n := len(e.slack.Downloads()); n != downloads {
		t.Errorf("%d downloads of refused files; they must be refused before downloading", n-downloads)
	}

	liar := e.slack.UploadFile(slAda, "liar.png", "image/png", big)
	liar.Size = 1000 // its event says 1000 bytes
	before := len(e.slack.Ephemerals(slAda))
	e.slack.Say(slAda, ch, root.TS, "and this", liar)
	e.wait("the liar to be refused", func() bool {
		eph := e.slack.Ephemerals(slAda)
		return len(eph) > before && strings.Contains(eph[len(eph)-1].Text, "too large")
	})
	if got := e.kx.Stats().Creates - creates; got != 0 {
		t.Errorf("%d predictions for refused files", got)
	}
	if imgs := e.images(ch, root.TS); len(imgs) != 1 {
		t.Errorf("%d images in the thread, want only the root", len(imgs))
	}
	e.wait("no status message left", func() bool { return len(e.statuses(ch, root.TS)) == 0 })
}

// A file whose url_private points at another host is refused without
// sending the bot token there.
func (e *slEnv) testForeignFile(t *testing.T) {
	var hits, withAuth atomic.Int32
	foreign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Authorization") != "" || r.URL.Query().Get("token") != "" {
			withAuth.Add(1)
		}
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(slPNG(t, 8, 8, 5))
	}))
	defer foreign.Close()
	ch := e.slack.CreateChannel("external", true)
	f := e.slack.ExternalFile(slBob, "drive.png", "image/png", foreign.URL+"/drive.png", 200)
	post := e.slack.Say(slBob, ch, "", e.slack.Mention("make it pop"), f)
	e.waitEphemeral(slBob, "only edit images uploaded to Slack")
	before := len(e.slack.Ephemerals(slBob))
	env, err := e.slack.Shortcut(slBob, post, "kontext_edit_image")
	if err != nil {
		t.Fatal(err)
	}
	e.acked(env)
	e.wait("the shortcut's refusal", func() bool { return len(e.slack.Ephemerals(slBob)) > before })
	if withAuth.Load() != 0 {
		t.Fatalf("the bot token was sent to a foreign host (%d requests)", withAuth.Load())
	}
	if hits.Load() != 0 {
		t.Errorf("the bot fetched a foreign URL %d times", hits.Load())
	}
	if imgs := e.images(ch, post.TS); len(imgs) != 0 {
		t.Errorf("an image was made from a foreign file")
	}
}

// Without files:read Slack answers an HTML page; the bot says which scope
// is missing.
func (e *slEnv) testNoFilesRead(t *testing.T) {
	e.slack.SetFilesRead(false)
	defer e.slack.SetFilesRead(true)
	ch := e.slack.CreateChannel("scopes", true)
	f := e.slack.UploadFile(slBob, "x.png", "image/png", slPNG(t, 16, 16, 6))
	e.slack.Say(slBob, ch, "", e.slack.Mention("make it blue"), f)
	e.waitEphemeral(slBob, "lacks the files:read scope")
}

// /imagine usage and /usage answer the requester only; /imagine alone
// shows the help.
func (e *slEnv) testUsage(t *testing.T) {
	ch := e.slack.CreateChannel("usage", true)
	e.acked(e.slack.Slash(slAda, ch, "/imagine", "usage"))
	e.waitEphemeral(slAda, "You have made")
	e.acked(e.slack.Slash(slBob, ch, "/usage", ""))
	e.waitEphemeral(slBob, "This workspace has made")
	e.acked(e.slack.Slash(slBob, ch, "/imagine", ""))
	e.waitEphemeral(slBob, "/imagine PROMPT")
	e.acked(e.slack.Slash(slBob, ch, "/imagine", "a cat --ar 5:1"))
	e.waitEphemeral(slBob, "is not an aspect ratio I know")
	if n := len(e.slack.TopLevel(ch)); n != 0 {
		t.Errorf("%d messages in the channel; answers here are ephemeral", n)
	}
}

// In a channel the bot was not invited to, /imagine says how to invite it
// (through the response URL, since the bot cannot post there).
func (e *slEnv) testNotInChannel(t *testing.T) {
	ch := e.slack.CreateChannel("private-ish", false)
	e.acked(e.slack.Slash(slAda, ch, "/imagine", "a fox"))
	eph := e.waitEphemeral(slAda, "invite me with /invite @kontextbot")
	if eph.Via != "response_url" {
		t.Errorf("answered through %s", eph.Via)
	}
}

// Socket Mode: when Slack asks the bot to reconnect, it does, and keeps
// working.
func (e *slEnv) testReconnect(t *testing.T) {
	n := e.slack.Connections()
	e.slack.Disconnect()
	e.wait("a new Socket Mode connection", func() bool { return e.slack.Connections() > n && e.slack.Connected() })
	ch := e.slack.CreateChannel("after-reconnect", true)
	e.imagine(slAda, ch, "still here")
}

// HTTP mode: a request with a bad signature, a stale timestamp or no
// signature is refused with 401 and does nothing; the url_verification
// challenge is answered.
func (e *slEnv) testSignatures(t *testing.T) {
	ch := e.slack.CreateChannel("signed", true)
	base := "http://" + e.addr
	status, body, err := e.slack.URLVerification(base, "c-h-a-l-l-e-n-g-e")
	if err != nil || status != 200 || !strings.Contains(string(body), "c-h-a-l-l-e-n-g-e") {
		t.Errorf("url_verification: %d %s %v", status, body, err)
	}
	form := url.Values{"team_id": {e.slack.Options().TeamID}, "channel_id": {ch}, "user_id": {slAda}, "command": {"/imagine"},
		"text": {"an unsigned fox"}, "trigger_id": {"1.2.3"}}.Encode()
	calls, creates := len(e.slack.Calls()), e.kx.Stats().Creates
	ctype := "application/x-www-form-urlencoded"
	for name, send := range map[string]func() (int, []byte, error){
		"bad signature": func() (int, []byte, error) {
			return e.slack.SignedRequest(base+"/slack/commands", ctype, []byte(form), time.Now(), "v0="+strings.Repeat("ab", 32))
		},
		"old timestamp": func() (int, []byte, error) {
			return e.slack.SignedRequest(base+"/slack/commands", ctype, []byte(form), time.Now().Add(-6*time.Minute), "")
		},
		"no signature": func() (int, []byte, error) {
			return e.slack.SignedRequest(base+"/slack/commands", ctype, []byte(form), time.Now(), "-")
		},
		"body changed": func() (int, []byte, error) {
			sig := slackfake.Sign(e.slack.Options().SigningSecret, time.Now(), []byte(form))
			return e.slack.SignedRequest(base+"/slack/commands", ctype, []byte(form+"x"), time.Now(), sig)
		},
		"signed event with another secret": func() (int, []byte, error) {
			ev := []byte(`{"type":"url_verification","challenge":"x"}`)
			return e.slack.SignedRequest(base+"/slack/events", "application/json", ev, time.Now(), slackfake.Sign("other", time.Now(), ev))
		},
	} {
		status, _, err := send()
		if err != nil || status != http.StatusUnauthorized {
			t.Errorf("%s: got %d %v, want 401", name, status, err)
		}
	}
	// A signed request after them is handled; by then nothing may have
	// come of the refused ones.
	e.acked(e.slack.Slash(slAda, ch, "/usage", ""))
	e.waitEphemeral(slAda, "You have made")
	for _, c := range e.slack.Calls()[calls:] {
		if c.Method != "chat.postEphemeral" {
			t.Errorf("a refused request led to %s", c.Method)
		}
	}
	if len(e.slack.TopLevel(ch)) != 0 || e.kx.Stats().Creates != creates {
		t.Error("a refused request did some work")
	}
}

// TestSlackRestartDeliversWaitingJob stops the bot while one job runs and
// another waits; after the restart both are delivered, the waiting job's
// status message (posted by the first process) is removed, and a button
// posted by the first process works.
func TestSlackRestartDeliversWaitingJob(t *testing.T) {
	slNoLeaks(t)
	for _, mode := range []string{"socket", "http"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			e := slStart(t, mode, map[string]string{"KONTEXT_SLOTS": "1", "SHUTDOWN_TIMEOUT": "200ms"})
			ch := e.slack.CreateChannel("restart", true)
			before := e.imagine(slAda, ch, "made before --seed 9")
			e.kx.Inject(kontexttest.Create, kontexttest.Fault{Delay: 5 * time.Second})
			e.acked(e.slack.Slash(slAda, ch, "/imagine", "the running one --seed 1"))
			// Commands of one channel are handled in order, so the first job
			// holds the slot before the second is submitted.
			e.acked(e.slack.Slash(slAda, ch, "/imagine", "the waiting one --seed 2"))
			e.wait("the second job to wait", func() bool {
				for _, m := range e.statuses(ch, "") {
					if strings.Contains(string(m.Blocks), "the waiting one") && strings.Contains(m.Text, "Queued") {
						return true
					}
				}
				return false
			})
			e.stopBot()
			if imgs := e.images(ch, ""); len(imgs) != 1 {
				t.Fatalf("%d images before the restart, want 1", len(imgs))
			}
			e.startBot()
			imgs := e.waitImages(ch, "", 3)[1:]
			got := map[string]int64{}
			for _, m := range imgs {
				p := e.prov(m)
				got[p.Prompt] = p.Seed
			}
			if got["the running one"] != 1 || got["the waiting one"] != 2 || len(got) != 2 {
				t.Errorf("delivered %v", got)
			}
			e.wait("the status messages of both processes to go", func() bool { return len(e.statuses(ch, "")) == 0 })
			if !strings.Contains(e.logs.String(), "resumed_jobs=2") {
				t.Errorf("the restart did not resume 2 jobs:\n%s", e.logs.String())
			}
			// Buttons posted by the first process work in the second.
			e.click(slBob, before, "kontext_reroll")
			re := e.waitImages(ch, before.TS, 2)[1]
			if p := e.prov(re); p.Prompt != "made before" || p.Seed == 9 {
				t.Errorf("reroll after the restart: %+v", p)
			}
			e.checkClean()
		})
	}
}

// A wrong token stops serve at start with a sentence naming the variable.
func TestSlackStartRefusesWrongTokens(t *testing.T) {
	slNoLeaks(t)
	for _, c := range []struct{ name, key, value, want string }{
		{"BotToken", "SLACK_BOT_TOKEN", "xoxb-wrong", "SLACK_BOT_TOKEN"},
		{"AppToken", "SLACK_APP_TOKEN", "xapp-wrong", "SLACK_APP_TOKEN"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, env := fakeEnv(t, kontexttest.Options{})
			if err := os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600); err != nil {
				t.Fatal(err)
			}
			fake := slackfake.New(slackfake.Options{})
			t.Cleanup(fake.Close)
			env["SLACK_BOT_TOKEN"], env["SLACK_APP_TOKEN"] = fake.Options().BotToken, fake.Options().AppToken
			env["SLACK_API_URL"], env["HTTP_ADDR"] = fake.APIURL(), slFreeAddr(t)
			env[c.key] = c.value
			ctx, cancel := context.WithTimeout(context.Background(), slWait)
			defer cancel()
			var stdout, stderr bytes.Buffer
			err := run(ctx, []string{"serve"}, envMap(env), &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "invalid_auth") {
				t.Errorf("got %v, want an invalid_auth error naming %s", err, c.want)
			}
		})
	}
}
