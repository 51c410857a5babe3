package slack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	slackgo "github.com/slack-go/slack"
	"go.uber.org/goleak"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/slack/slackfake"
	"kontextbot/store"
)

// harness is the adapter over a real core, store, client and queue,
// against the fake Slack and the fake provider.
type harness struct {
	t      *testing.T
	fake   *slackfake.Server
	kx     *kontexttest.Server
	core   *bot.Core
	bot    *Bot
	http   *httptest.Server
	closed bool
}

type harnessOpts struct {
	mode    string // "socket" (default) or "http"
	slots   int
	tweak   func(*Bot)
	noStart bool
	slack   slackfake.Options // PingInterval is set
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	kx := kontexttest.NewServer(kontexttest.Options{APIKey: "k", Latency: 20 * time.Millisecond, Pixels: 96 * 96})
	o.slack.PingInterval = 500 * time.Millisecond
	fake := slackfake.New(o.slack)
	db, err := store.Open(filepath.Join(t.TempDir(), "k.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	client, err := kontext.NewClient(kontext.Config{BaseURL: kx.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if o.slots == 0 {
		o.slots = 2
	}
	queue := kontext.NewQueue(kontext.QueueOptions{Slots: o.slots})
	core := bot.New(bot.Config{}, db, client, bot.NewLocalScheduler(queue))
	opts := fake.Options()
	cfg := Config{BotToken: opts.BotToken, APIURL: fake.APIURL()}
	if o.mode == "http" {
		cfg.SigningSecret = opts.SigningSecret
	} else {
		cfg.AppToken = opts.AppToken
	}
	b, err := New(cfg, core)
	if err != nil {
		t.Fatal(err)
	}
	if o.tweak != nil {
		o.tweak(b)
	}
	core.Register(b)
	h := &harness{t: t, fake: fake, kx: kx, core: core, bot: b}
	if o.mode == "http" {
		h.http = httptest.NewServer(b.Handler())
		fake.SetHTTPTarget(h.http.URL)
	}
	t.Cleanup(func() {
		h.close()
		if h.http != nil {
			h.http.Close()
		}
		client.Close()
		db.Close()
		fake.Close()
		kx.Close()
		goleak.VerifyNone(t, ignore)
	})
	if !o.noStart {
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// close drains the core and closes the adapter, as serve does.
func (h *harness) close() {
	if h.closed {
		return
	}
	h.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.core.Close(ctx); err != nil {
		h.t.Errorf("core close: %v", err)
	}
	if err := h.bot.Close(); err != nil {
		h.t.Errorf("close: %v", err)
	}
}

func (h *harness) wait(what string, cond func() bool) {
	h.t.Helper()
	if !h.fake.Wait(10*time.Second, cond) {
		h.t.Fatalf("timed out waiting for %s; problems %q", what, h.fake.Problems())
	}
}

func (h *harness) botImages(channel, thread string) []slackfake.Message {
	var msgs []slackfake.Message
	if thread == "" {
		msgs = h.fake.TopLevel(channel)
	} else {
		msgs = h.fake.Thread(channel, thread)
	}
	var out []slackfake.Message
	for _, m := range msgs {
		if m.BotID != "" && len(m.Files) > 0 {
			out = append(out, m)
		}
	}
	return out
}

func (h *harness) checkClean() {
	h.t.Helper()
	for _, p := range h.fake.CheckAcks() {
		h.t.Errorf("fake Slack: %s", p)
	}
}

func testPNG(t *testing.T) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, 40, 30))
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	img.Set(1, 1, color.White)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// The whole flow over Socket Mode, then Close: no goroutine is left.
func TestSocketModeFlowLeavesNoGoroutines(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ch := h.fake.CreateChannel("general", true)
	h.fake.Slash("U1", ch, "/imagine", "a boat --seed 4")
	h.wait("the image", func() bool { return len(h.botImages(ch, "")) == 1 })
	root := h.botImages(ch, "")[0]
	h.fake.Say("U1", ch, root.TS, "make it sail")
	h.wait("the edit", func() bool { return len(h.botImages(ch, root.TS)) == 2 })
	edit := h.botImages(ch, root.TS)[1]
	p, err := kontexttest.ReadProvenance(h.fake.FileData(edit.Files[0].ID))
	if err != nil || p.InputSHA256 != sum(h.fake.FileData(root.Files[0].ID)) {
		t.Errorf("edit provenance %+v %v", p, err)
	}
	if err := h.bot.Healthy(); err != nil {
		t.Errorf("healthy: %v", err)
	}
	h.checkClean()
	h.close()
	if err := h.bot.Healthy(); err == nil {
		t.Error("healthy after Close")
	}
}

// Status updates of one job are at least statusEvery apart, however
// often the state changes; "Generating… N s" counts up while it runs.
func TestStatusThrottle(t *testing.T) {
	const every = 400 * time.Millisecond
	h := newHarness(t, harnessOpts{slots: 1, tweak: func(b *Bot) { b.statusEvery, b.elapsedEvery = every, 100*time.Millisecond }})
	ch := h.fake.CreateChannel("q", true)
	h.kx.Inject(kontexttest.Create, kontexttest.Fault{Delay: 1200 * time.Millisecond}, kontexttest.Fault{Delay: 2500 * time.Millisecond})
	h.fake.Slash("U1", ch, "/imagine", "first")
	h.wait("the first job to run", func() bool {
		for _, m := range h.fake.TopLevel(ch) {
			if strings.Contains(m.Text, "Generating") {
				return true
			}
		}
		return false
	})
	h.fake.Slash("U1", ch, "/imagine", "second")
	h.wait("both images, and no status left", func() bool {
		if len(h.botImages(ch, "")) != 2 {
			return false
		}
		for _, m := range h.fake.TopLevel(ch) {
			if len(m.Files) == 0 {
				return false
			}
		}
		return true
	})
	var second slackfake.Message
	for _, m := range h.fake.AllMessages(ch) {
		if m.BotID != "" && len(m.Files) == 0 && strings.Contains(string(m.Blocks), "second") {
			second = m
		}
	}
	var lines []string
	for i, e := range second.Edits {
		lines = append(lines, e.Text)
		if i > 0 && e.At.Sub(second.Edits[i-1].At) < every-20*time.Millisecond {
			t.Errorf("updates %d and %d only %s apart", i-1, i, e.At.Sub(second.Edits[i-1].At))
		}
	}
	joined := strings.Join(lines, " | ")
	if !strings.Contains(joined, "Queued · 1st in line") || !strings.Contains(joined, "Generating… 1 s") || !strings.Contains(joined, "Generating… 2 s") {
		t.Errorf("status went through %q", lines)
	}
	h.checkClean()
}

// A job accepted by an earlier process reports from its Origin alone:
// its status message is updated, the image goes where the job was asked,
// and the status goes.
func TestReporterFromOriginAlone(t *testing.T) {
	h := newHarness(t, harnessOpts{tweak: func(b *Bot) { b.statusEvery = 100 * time.Millisecond }})
	ch := h.fake.CreateChannel("old", true)
	ts, err := h.bot.postStatus(context.Background(), ch, "", "an old job")
	if err != nil {
		t.Fatal(err)
	}
	job := &bot.Job{ID: "jold", Kind: bot.KindImagine, Prompt: "an old job", User: "U1",
		Conv:   bot.ConvKey{Platform: Platform, Workspace: "T0KONTEXT", Channel: ch},
		Origin: map[string]string{originChannel: ch, originStatus: ts, originUser: "U1"}}
	rep := h.bot.Reporter(job)
	rep.Running(job)
	h.wait("the status to say Generating", func() bool {
		m, _ := h.fake.Message(ch, ts)
		return strings.Contains(m.Text, "Generating")
	})
	seed := int64(3)
	d := &bot.Delivery{Job: job, Conv: job.Conv, Turn: bot.Turn{ID: "iold", Kind: bot.KindImagine, Prompt: "an old job", Seed: &seed, Format: "png"}, Image: testPNG(t)}
	posted, err := rep.Deliver(context.Background(), job, d)
	if err != nil {
		t.Fatal(err)
	}
	imgs := h.botImages(ch, "")
	if len(imgs) != 1 || posted.MessageID != ch+":"+imgs[0].TS || posted.Thread == nil || posted.Thread.Thread != imgs[0].TS {
		t.Fatalf("posted %+v, images %+v", posted, imgs)
	}
	if m, _ := h.fake.Message(ch, ts); !m.Deleted {
		t.Error("the status message stayed")
	}
	if !bytes.Equal(h.fake.FileData(imgs[0].Files[0].ID), d.Image) {
		t.Error("the posted file is not the image")
	}
	// A late position report (they are asynchronous) posts nothing.
	rep.Queued(job, 1)
	time.Sleep(50 * time.Millisecond)
	for _, m := range h.fake.TopLevel(ch) {
		if len(m.Files) == 0 {
			t.Errorf("a status message came back: %+v", m)
		}
	}
	// Fail tells the requester only.
	job2 := *job
	job2.ID = "jold2"
	h.bot.Reporter(&job2).Fail(context.Background(), &job2, "The image provider failed.")
	h.wait("the ephemeral failure", func() bool {
		e := h.fake.Ephemerals("U1")
		return len(e) == 1 && e[0].Text == "The image provider failed."
	})
	h.checkClean()
}

// HTTP mode: verification before anything, 503 before Start, the
// challenge answered.
func TestHTTPHandler(t *testing.T) {
	h := newHarness(t, harnessOpts{mode: "http", noStart: true})
	base := h.http.URL
	body := []byte(url.Values{"command": {"/usage"}, "channel_id": {"C1"}, "user_id": {"U1"}}.Encode())
	form := "application/x-www-form-urlencoded"
	if st, _, _ := h.fake.SignedRequest(base+"/slack/commands", form, body, time.Now(), ""); st != http.StatusServiceUnavailable {
		t.Errorf("before Start: %d, want 503", st)
	}
	if err := h.bot.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		path   string
		ts     time.Time
		sig    string
		body   []byte
		status int
	}{
		{"no signature", "/slack/commands", time.Now(), "-", body, 401},
		{"bad signature", "/slack/commands", time.Now(), "v0=00", body, 401},
		{"stale", "/slack/commands", time.Now().Add(-10 * time.Minute), "", body, 401},
		{"from the future", "/slack/commands", time.Now().Add(10 * time.Minute), "", body, 401},
		{"bad payload", "/slack/interactive", time.Now(), "", []byte("payload=%7Bnot-json"), 400},
	}
	calls := len(h.fake.Calls())
	for _, c := range cases {
		st, _, err := h.fake.SignedRequest(base+c.path, form, c.body, c.ts, c.sig)
		if err != nil || st != c.status {
			t.Errorf("%s: %d %v, want %d", c.name, st, err, c.status)
		}
	}
	if n := len(h.fake.Calls()) - calls; n != 0 {
		t.Errorf("refused requests made %d Web API calls", n)
	}
	st, answer, err := h.fake.URLVerification(base, "abc123")
	if err != nil || st != 200 || !strings.Contains(string(answer), `"challenge":"abc123"`) {
		t.Errorf("url_verification: %d %s %v", st, answer, err)
	}
	resp, err := http.Get(base + "/slack/events")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET: %d", resp.StatusCode)
		}
	}
	// A verified command is acknowledged at once and handled after.
	ch := h.fake.CreateChannel("c", true)
	env := h.fake.Slash("U1", ch, "/usage", "")
	if !env.Acked(3*time.Second) || env.Status() != 200 || len(env.Body()) != 0 {
		t.Errorf("slash: %d %q", env.Status(), env.Body())
	}
	h.wait("the usage answer", func() bool { return len(h.fake.Ephemerals("U1")) == 1 })
	h.checkClean()
}

func TestStartErrors(t *testing.T) {
	t.Run("BotToken", func(t *testing.T) {
		h := newHarness(t, harnessOpts{noStart: true})
		h.bot.api = slackgo.New("xoxb-wrong", slackgo.OptionAPIURL(h.fake.APIURL()), slackgo.OptionHTTPClient(h.bot.hc))
		err := h.bot.Start(context.Background())
		if err == nil || !strings.Contains(err.Error(), "SLACK_BOT_TOKEN") || !strings.Contains(err.Error(), "invalid_auth") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("AppToken", func(t *testing.T) {
		h := newHarness(t, harnessOpts{noStart: true})
		h.bot.api = slackgo.New(h.fake.Options().BotToken, slackgo.OptionAPIURL(h.fake.APIURL()),
			slackgo.OptionHTTPClient(h.bot.hc), slackgo.OptionAppLevelToken("xapp-wrong"))
		err := h.bot.Start(context.Background())
		if err == nil || !strings.Contains(err.Error(), "SLACK_APP_TOKEN") {
			t.Errorf("got %v", err)
		}
		if h.bot.Healthy() == nil {
			t.Error("healthy without a connection")
		}
	})
	t.Run("Config", func(t *testing.T) {
		for _, cfg := range []Config{{}, {BotToken: "xoxb-1"}, {BotToken: "xoxb-1", AppToken: "xapp-1", APIURL: "ftp://x"}} {
			if _, err := New(cfg, &bot.Core{}); err == nil {
				t.Errorf("New(%+v) accepted", cfg)
			}
		}
	})
}

// When the Socket Mode connection drops, Healthy says so; it recovers
// when the connection is back.
func TestHealthyFollowsTheConnection(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	if err := h.bot.Healthy(); err != nil {
		t.Fatal(err)
	}
	h.fake.Disconnect()
	h.wait("a reconnection", func() bool { return h.fake.Connections() == 2 && h.fake.Connected() })
	deadline := time.Now().Add(5 * time.Second)
	for h.bot.Healthy() != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := h.bot.Healthy(); err != nil {
		t.Errorf("after reconnecting: %v", err)
	}
}

func TestTokenTransport(t *testing.T) {
	var gotAuth, gotBody atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotAuth.Store(r.Header.Get("Authorization"))
		gotBody.Store(string(b))
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer srv.Close()
	b := &Bot{apiBase: mustURL(srv.URL + "/api/")}
	c := &http.Client{Transport: &tokenTransport{base: http.DefaultTransport, allowed: b.mayReceiveToken}}
	resp, err := c.PostForm(srv.URL+"/api/chat.postMessage", url.Values{"token": {"xoxb-1"}, "text": {"hi"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if gotAuth.Load() != "Bearer xoxb-1" || strings.Contains(gotBody.Load().(string), "xoxb") || !strings.Contains(gotBody.Load().(string), "text=hi") {
		t.Errorf("auth %q body %q", gotAuth.Load(), gotBody.Load())
	}
	// Any other host: a request with a token is refused before it leaves.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.Error("the request reached a foreign host") }))
	defer other.Close()
	if _, err := c.PostForm(other.URL+"/x", url.Values{"token": {"xoxb-1"}}); err == nil {
		t.Error("a token went to a foreign host")
	}
	req, _ := http.NewRequest(http.MethodGet, other.URL+"/x", nil)
	req.Header.Set("Authorization", "Bearer xoxb-1")
	if _, err := c.Do(req); err == nil {
		t.Error("a bearer header went to a foreign host")
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestMayReceiveToken(t *testing.T) {
	b := &Bot{apiBase: mustURL("http://127.0.0.1:4000/api/")}
	for u, want := range map[string]bool{
		"https://files.slack.com/files-pri/T1-F1/a.png": true,
		"https://slack.com/api/x":                       true,
		"https://acme.slack.com/x":                      true,
		"https://slack-files.com/x":                     true,
		"http://files.slack.com/x":                      false, // not https
		"https://files.slack.com.evil.com/x":            false,
		"https://evilslack.com/x":                       false,
		"https://files.slack.com:8443/x":                false,
		"https://user:pw@files.slack.com/x":             false,
		"http://127.0.0.1:4000/files-pri/x":             true, // SLACK_API_URL's host
		"http://127.0.0.1:4001/files-pri/x":             false,
		"https://drive.google.com/x":                    false,
		"https://files.slack-gov.com/files-pri/T1-F1/a": true, // GovSlack
		"https://slack-gov.com/api/x":                   true,
		"https://files.slack-gov.com.evil.com/x":        false,
		"https://evilslack-gov.com/x":                   false,
	} {
		if got := b.mayReceiveToken(mustURL(u)); got != want {
			t.Errorf("%s: %v, want %v", u, got, want)
		}
	}
}

func TestDownload(t *testing.T) {
	img := testPNG(t)
	var foreignHits atomic.Int32
	foreign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { foreignHits.Add(1) }))
	defer foreign.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("/ok.png", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer xoxb-1" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(img)
	})
	mux.HandleFunc("/login.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, "<html>sign in</html>")
	})
	mux.HandleFunc("/big.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(make([]byte, bot.MaxImageBytes+10))
	})
	mux.HandleFunc("/away.png", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, foreign.URL+"/x.png", http.StatusFound)
	})
	mux.HandleFunc("/gone.png", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "gone", http.StatusForbidden) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	b, err := New(Config{BotToken: "xoxb-1", AppToken: "xapp-1", APIURL: srv.URL + "/api"}, &bot.Core{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	if got, err := b.download(ctx, srv.URL+"/ok.png"); err != nil || !bytes.Equal(got, img) {
		t.Errorf("ok: %v", err)
	}
	if _, err := b.download(ctx, srv.URL+"/login.png"); !errors.Is(err, errNoFilesRead) {
		t.Errorf("html: %v", err)
	}
	if _, err := b.download(ctx, srv.URL+"/big.png"); !errors.Is(err, bot.ErrImageTooLarge) {
		t.Errorf("big: %v", err)
	}
	var ue *bot.UserError
	if _, err := b.download(ctx, srv.URL+"/gone.png"); !errors.As(err, &ue) {
		t.Errorf("403: %v", err)
	}
	if _, err := b.download(ctx, srv.URL+"/away.png"); err == nil {
		t.Error("followed a redirect to a foreign host")
	}
	if _, err := b.download(ctx, foreign.URL+"/x.png"); !errors.Is(err, errForeignFile) {
		t.Errorf("foreign: %v", err)
	}
	if foreignHits.Load() != 0 {
		t.Errorf("the foreign host was reached %d times", foreignHits.Load())
	}
}

func TestPickImage(t *testing.T) {
	png := slackgo.File{Name: "a.png", Mimetype: "image/png", Size: 10}
	txt := slackgo.File{Name: "a.txt", Mimetype: "text/plain", Size: 10}
	big := slackgo.File{Name: "b.png", Mimetype: "image/png", Size: bot.MaxImageBytes + 1}
	if f, err := pickImage([]slackgo.File{txt, png}); err != nil || f.Name != "a.png" {
		t.Errorf("mixed: %v %v", f, err)
	}
	if _, err := pickImage([]slackgo.File{txt}); !errors.Is(err, bot.ErrNotImage) {
		t.Errorf("text: %v", err)
	}
	if _, err := pickImage([]slackgo.File{big}); !errors.Is(err, bot.ErrImageTooLarge) {
		t.Errorf("big: %v", err)
	}
	if _, err := pickImage(nil); !errors.Is(err, errNoImageHere) {
		t.Errorf("none: %v", err)
	}
}

func TestText(t *testing.T) {
	b := &Bot{botUser: "UBOT"}
	for in, want := range map[string]string{
		"<@UBOT> make it blue":               "make it blue",
		"make it &lt;blue&gt; &amp; <@UBOT>": "make it <blue> & ",
		"ask <@U2> about it":                 "ask <@U2> about it",
		"<@UBOT|kontext> hi":                 "hi",
	} {
		if got := b.cleanText(in); got != strings.TrimSpace(want) {
			t.Errorf("cleanText(%q) = %q, want %q", in, got, want)
		}
	}
	if got := escape("<!channel> & <@U1>"); got != "&lt;!channel&gt; &amp; &lt;@U1&gt;" {
		t.Errorf("escape: %q", got)
	}
	if !tsLess("1700000000.000099", "1700000000.000100") || tsLess("1700000001.0", "1700000000.9") || !tsLess("999.1", "1000.0") {
		t.Error("tsLess")
	}
	if age := tsAge("1700000000.000000"); age < time.Hour {
		t.Errorf("tsAge %s", age)
	}
	if tsAge("nope") >= 0 {
		t.Error("tsAge of a non-timestamp")
	}
}

func TestShareTS(t *testing.T) {
	f := &slackgo.File{Shares: slackgo.Share{
		Public:  map[string][]slackgo.ShareFileInfo{"C1": {{Ts: "2.0", ThreadTs: "1.0"}, {Ts: "3.0"}}},
		Private: map[string][]slackgo.ShareFileInfo{"G1": {{Ts: "4.0"}}},
	}}
	for _, c := range []struct{ ch, thread, want string }{{"C1", "1.0", "2.0"}, {"C1", "", "3.0"}, {"G1", "", "4.0"}, {"C2", "", ""}} {
		if got := shareTS(f, c.ch, c.thread); got != c.want {
			t.Errorf("shareTS(%s, %s) = %q, want %q", c.ch, c.thread, got, c.want)
		}
	}
}

func TestTurnRef(t *testing.T) {
	r := turnRef{Turn: "iabc", Thread: "1.2"}
	got, ok := parseTurnRef(r.value())
	if !ok || got != r {
		t.Errorf("round trip: %+v", got)
	}
	if _, ok := parseTurnRef("jxyz"); ok {
		t.Error("a job id parsed as a turn")
	}
	if len(r.value()) > 2000 {
		t.Error("button value too long")
	}
}

// The manifest declares everything the adapter relies on, and the README's
// Slack setup explains every scope.
func TestManifestListsWhatTheBotUses(t *testing.T) {
	manifest, err := os.ReadFile("manifest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	setup, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := string(manifest)
	for _, want := range []string{
		"callback_id: " + cbShortcut, "type: message",
		"command: /imagine", "command: /edit", "command: /usage",
		"- app_mention\n", "- message.channels", "- message.groups", "- message.im", "- message.mpim",
		"is_enabled: true", "socket_mode_enabled: true",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("manifest.yaml lacks %q", want)
		}
	}
	for _, scope := range []string{"commands", "chat:write", "files:write", "files:read", "app_mentions:read",
		"channels:history", "groups:history", "im:history", "mpim:history", "users:read"} {
		if !strings.Contains(m, "      - "+scope+" ") {
			t.Errorf("manifest.yaml lacks the scope %s", scope)
		}
		if !strings.Contains(string(setup), "`"+scope+"`") {
			t.Errorf("README.md does not explain the scope %s", scope)
		}
	}
	for _, path := range []string{"/slack/events", "/slack/commands", "/slack/interactive"} {
		if !strings.Contains(m, path) || !strings.Contains(string(setup), path) {
			t.Errorf("the HTTP route %s is missing from manifest.yaml or README.md", path)
		}
	}
	// The header tells how many URL lines to uncomment for HTTP mode.
	urls := 0
	for _, line := range strings.Split(m, "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "# url: https://") || strings.HasPrefix(l, "# request_url: https://") {
			urls++
		}
	}
	words := map[int]string{3: "three", 4: "four", 5: "five", 6: "six"}
	if want := "uncomment the " + words[urls] + " URL lines"; urls == 0 || !strings.Contains(m, want) {
		t.Errorf("manifest.yaml has %d commented URL lines; its header should say %q", urls, want)
	}
}

// transient decides with slack-go's error types and the network's, never
// with the text of an error.
func TestTransient(t *testing.T) {
	refused := &url.Error{Op: "Post", URL: "https://slack.com/api/x", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	for _, c := range []struct {
		name  string
		err   error
		want  bool
		after time.Duration
	}{
		{"RateLimited", &slackgo.RateLimitedError{RetryAfter: 7 * time.Second}, true, 7 * time.Second},
		{"503", slackgo.StatusCodeError{Code: 503, Status: "503 Service Unavailable"}, true, 0},
		{"500Wrapped", fmt.Errorf("files.getUploadURLExternal: %w", slackgo.StatusCodeError{Code: 500}), true, 0},
		{"429WithoutRetryAfter", slackgo.StatusCodeError{Code: 429}, true, 0},
		{"404", slackgo.StatusCodeError{Code: 404}, false, 0},
		{"SlackInternalError", slackgo.SlackErrorResponse{Err: "internal_error"}, true, 0},
		{"SlackRatelimited", slackgo.SlackErrorResponse{Err: "ratelimited"}, true, 0},
		{"ChannelNotFound", slackgo.SlackErrorResponse{Err: "channel_not_found"}, false, 0},
		{"ConnectionRefused", refused, true, 0},
		{"ConnectionCut", fmt.Errorf("upload: %w", io.ErrUnexpectedEOF), true, 0},
		{"Timeout", &url.Error{Op: "Post", URL: "https://slack.com", Err: context.DeadlineExceeded}, true, 0},
		{"Canceled", &url.Error{Op: "Post", URL: "https://slack.com", Err: context.Canceled}, false, 0},
		{"Other", errors.New("503 in the text only"), false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, after := bot.IsTransient(transient(c.err))
			if got != c.want || after != c.after {
				t.Errorf("got %v (after %s), want %v (after %s)", got, after, c.want, c.after)
			}
			if marked := transient(c.err); marked.Error() != c.err.Error() {
				t.Errorf("marked as %q, want the original error kept", marked)
			}
		})
	}
}

// isStub tells Slack Connect's stubs from complete files.
func TestIsStub(t *testing.T) {
	for _, c := range []struct {
		name string
		f    slackgo.File
		want bool
	}{
		{"CheckFileInfo", slackgo.File{ID: "F1", FileAccess: "check_file_info"}, true},
		{"NothingButAnID", slackgo.File{ID: "F1"}, true},
		{"Complete", slackgo.File{ID: "F1", Mimetype: "image/png", URLPrivate: "https://files.slack.com/x"}, false},
		{"Visible", slackgo.File{ID: "F1", FileAccess: "visible", Filetype: "png", URLPrivate: "https://files.slack.com/x"}, false},
	} {
		if got := isStub(&c.f); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
