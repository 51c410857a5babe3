package discord

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/bwmarrin/discordgo"
	"go.uber.org/goleak"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/platforms/discord/discordtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCustomIDs(t *testing.T) {
	long := strings.Repeat("z", 64)
	for _, action := range []string{actReroll, actUndo, actEdit, actCancel, actEditTurn, actEditMsg} {
		id := customID(action, long)
		if len(id) > 100 {
			t.Errorf("%s: custom id %d characters long", action, len(id))
		}
		a, arg, err := parseCustomID(id)
		if err != nil || a != action || arg != long {
			t.Errorf("parse(%q) = %q %q %v", id, a, arg, err)
		}
	}
	for _, bad := range []string{"", "k", "k:reroll", "k:reroll:", "x:reroll:i1", "k:paint:i1", "k:reroll:I1", "k:reroll:i/1",
		"k:reroll:i1:extra", "k:undo:" + strings.Repeat("a", 65)} {
		if _, _, err := parseCustomID(bad); err == nil {
			t.Errorf("parse(%q) accepted", bad)
		}
	}
}

func TestParseSlash(t *testing.T) {
	att := &discordgo.MessageAttachment{ID: "55", URL: "https://cdn.discordapp.com/a/b.png"}
	data := discordgo.ApplicationCommandInteractionData{
		Name: "edit",
		Options: []*discordgo.ApplicationCommandInteractionDataOption{
			{Name: "prompt", Type: discordgo.ApplicationCommandOptionString, Value: "add a hat"},
			{Name: "aspect_ratio", Type: discordgo.ApplicationCommandOptionString, Value: "16:9"},
			{Name: "seed", Type: discordgo.ApplicationCommandOptionInteger, Value: float64(4294967295)},
			{Name: "model", Type: discordgo.ApplicationCommandOptionString, Value: kontext.ModelPro},
			{Name: "image", Type: discordgo.ApplicationCommandOptionAttachment, Value: "55"},
		},
		Resolved: &discordgo.ApplicationCommandInteractionDataResolved{Attachments: map[string]*discordgo.MessageAttachment{"55": att}},
	}
	a, err := parseSlash(data)
	if err != nil {
		t.Fatal(err)
	}
	if a.Prompt != "add a hat" || a.Aspect != "16:9" || a.Seed == nil || *a.Seed != 4294967295 || a.Model != kontext.ModelPro || a.Image != att {
		t.Errorf("got %+v", a)
	}
	bad := []*discordgo.ApplicationCommandInteractionDataOption{
		{Name: "seed", Value: float64(-1)},
		{Name: "seed", Value: 1.5},
		{Name: "aspect_ratio", Value: "5:1"},
		{Name: "model", Value: "flux-dev"},
		{Name: "image", Value: "404"},
	}
	for _, o := range bad {
		_, err := parseSlash(discordgo.ApplicationCommandInteractionData{Options: []*discordgo.ApplicationCommandInteractionDataOption{o}})
		var ue *bot.UserError
		if !errors.As(err, &ue) {
			t.Errorf("option %s=%v: got %v, want a user error", o.Name, o.Value, err)
		}
	}
}

func TestCommandsMatchTheProvider(t *testing.T) {
	cmds := commands()
	if len(cmds) != 7 {
		t.Fatalf("%d commands", len(cmds))
	}
	if h := cmds[4]; h.Name != cmdHelp || len(h.Options) != 0 || len(h.Description) > 100 || utf8.RuneCountInString(helpText) > 2000 {
		t.Errorf("/help is %+v with %d characters of help", h, utf8.RuneCountInString(helpText))
	}
	if h := cmds[5]; h.Name != cmdHistory || len(h.Options) != 0 || len(h.Description) > 100 || !strings.Contains(h.Description, "pick one") {
		t.Errorf("/history is %+v", h)
	}
	for _, c := range cmds[:2] {
		for _, o := range c.Options {
			if o.Name == "aspect_ratio" {
				for _, ch := range o.Choices {
					if !kontext.ValidAspect(ch.Value.(string)) {
						t.Errorf("/%s offers aspect %v", c.Name, ch.Value)
					}
				}
			}
			if o.Name == "model" {
				for _, ch := range o.Choices {
					if !kontext.ValidModel(ch.Value.(string)) {
						t.Errorf("/%s offers model %v", c.Name, ch.Value)
					}
				}
			}
		}
	}
	if cmds[3].Type != discordgo.MessageApplicationCommand || cmds[3].Name != cmdEditImage {
		t.Errorf("the message command is %+v", cmds[3])
	}
}

func TestOriginRoundTrip(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123)
	for _, o := range []origin{
		{Mode: "i", App: "1", Token: "tok", At: at, Place: place{Guild: "g", Channel: "t", Parent: "c", Kind: kindThread, Ours: false}, Msg: "m"},
		{Mode: "c", Place: place{Channel: "dm", Kind: kindDM}, Msg: "s", Ref: "r"},
	} {
		got, ok := parseOrigin(o.encode())
		if !ok || got != o {
			t.Errorf("round trip of %+v gave %+v (%v)", o, got, ok)
		}
	}
	for _, m := range []map[string]string{nil, {"v": "2", "ch": "c"}, {"v": "1", "mode": "i", "ch": "c", "kind": "0"},
		{"v": "1", "mode": "x", "ch": "c", "kind": "0"}, {"v": "1", "mode": "c", "ch": "c", "kind": "9"}} {
		if _, ok := parseOrigin(m); ok {
			t.Errorf("parseOrigin(%v) accepted", m)
		}
	}
}

func TestPlaceKeys(t *testing.T) {
	th := place{Guild: "g", Channel: "t", Parent: "c", Kind: kindThread}
	if k := th.key(); k != (bot.ConvKey{Platform: Platform, Workspace: "g", Channel: "c", Thread: "t"}) {
		t.Errorf("thread key %+v", k)
	}
	if p := placeOf(th.key()); p.Channel != "t" || p.Kind != kindThread || p.Parent != "c" {
		t.Errorf("placeOf(thread) = %+v", p)
	}
	if p := placeOf(bot.ConvKey{Platform: Platform, Channel: "d"}); p.Kind != kindDM || p.Channel != "d" {
		t.Errorf("placeOf(dm) = %+v", p)
	}
}

func TestProgressPacing(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tr := &tracker{created: t0}
	tr.queued = 3
	txt, cancel, at := tr.progress(t0)
	if txt != "Queued · 3rd in line" || !cancel || !at.Equal(t0.Add(queuedGrace)) {
		t.Errorf("queued: %q %v %v", txt, cancel, at)
	}
	tr.shown, tr.last = txt, t0.Add(queuedGrace)
	tr.queued = 2
	if _, _, at := tr.progress(t0.Add(queuedGrace)); !at.Equal(tr.last.Add(progressEvery)) {
		t.Errorf("the next edit may go at %v, want %v", at, tr.last.Add(progressEvery))
	}
	tr.queued, tr.runningAt = 0, t0.Add(5*time.Second)
	if txt, _, at := tr.progress(t0.Add(5 * time.Second)); txt != "" || !at.Equal(tr.runningAt.Add(runningGrace)) {
		t.Errorf("during the running grace: %q at %v", txt, at)
	}
	txt, cancel, _ = tr.progress(t0.Add(11 * time.Second))
	if txt != "Generating… 6 s" || cancel {
		t.Errorf("running: %q cancel=%v", txt, cancel)
	}
	tr.shown, tr.last = txt, t0.Add(11*time.Second)
	if _, _, at := tr.progress(t0.Add(12 * time.Second)); !at.Equal(tr.last.Add(runningRefresh)) {
		t.Errorf("elapsed refresh at %v, want %v", at, tr.last.Add(runningRefresh))
	}
	tr.notBefore = t0.Add(time.Minute)
	if _, _, at := tr.progress(t0.Add(12 * time.Second)); !at.Equal(tr.notBefore) {
		t.Errorf("after a 429 the next edit goes at %v, want %v", at, tr.notBefore)
	}
}

func TestAllowedHosts(t *testing.T) {
	b := &Bot{}
	u := func(s string) *url.URL { p, _ := url.Parse(s); return p }
	for _, s := range []string{"https://cdn.discordapp.com/attachments/1/2/a.png", "https://media.discordapp.net/x.png", "https://CDN.discordapp.com/x"} {
		if !b.allowed(u(s)) {
			t.Errorf("%s refused", s)
		}
	}
	for _, s := range []string{"http://cdn.discordapp.com/x", "https://cdn.discordapp.com.evil.net/x", "https://evil.net/x",
		"https://cdn.discordapp.com:8443/x", "http://127.0.0.1:9/x", "file:///etc/passwd"} {
		if b.allowed(u(s)) {
			t.Errorf("%s allowed", s)
		}
	}
	b.api = u("http://127.0.0.1:9")
	if !b.allowed(u("http://127.0.0.1:9/attachments/x")) || b.allowed(u("http://127.0.0.1:10/x")) {
		t.Error("the DISCORD_API_URL host is the only extra host allowed")
	}
}

func TestRewriter(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Host + r.URL.Path }))
	defer srv.Close()
	base, _ := url.Parse(srv.URL + "/proxy")
	c := &http.Client{Transport: &rewriter{base: base, next: http.DefaultTransport}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(discordgo.EndpointGateway)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := base.Host + "/proxy/api/v9/gateway"; got != want {
		t.Errorf("request went to %q, want %q", got, want)
	}
}

func TestDownloadLimits(t *testing.T) {
	big := bytes.Repeat([]byte{1}, bot.MaxImageBytes+10)
	mux := http.NewServeMux()
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) { w.Write(big) })
	mux.HandleFunc("/away", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://example.com/x.png", http.StatusFound)
	})
	mux.HandleFunc("/gone", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Error("a download carried an Authorization header")
		}
		w.Write([]byte("data"))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	b, err := New(Config{Token: "t", APIURL: srv.URL}, stubCore{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	att := func(path string, size int) *discordgo.MessageAttachment {
		return &discordgo.MessageAttachment{URL: srv.URL + path, Size: size}
	}
	if _, err := b.download(ctx, att("/ok", 25<<20)); !errors.Is(err, bot.ErrImageTooLarge) {
		t.Errorf("announced size: %v", err)
	}
	if _, err := b.download(ctx, att("/big", 10)); !errors.Is(err, bot.ErrImageTooLarge) {
		t.Errorf("actual size: %v", err)
	}
	if _, err := b.download(ctx, att("/away", 10)); err == nil {
		t.Error("a redirect off Discord was followed")
	}
	if _, err := b.download(ctx, att("/gone", 10)); err == nil || bot.Explain(err) != errDownload.Msg {
		t.Errorf("404: %v", err)
	}
	if _, err := b.download(ctx, &discordgo.MessageAttachment{URL: "https://evil.example/x.png"}); !errors.Is(err, errNotDiscordFile) {
		t.Errorf("foreign host: %v", err)
	}
	if data, err := b.download(ctx, att("/ok", 4)); err != nil || string(data) != "data" {
		t.Errorf("ok: %q %v", data, err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	if _, err := New(Config{}, stubCore{}); err == nil || !strings.Contains(err.Error(), "DISCORD_BOT_TOKEN") {
		t.Errorf("empty token: %v", err)
	}
	if _, err := New(Config{Token: "t", APIURL: "ftp://x"}, stubCore{}); err == nil {
		t.Error("an ftp API URL was accepted")
	}
}

// stubCore records requests and answers from a conversation store in memory.
type stubCore struct {
	submitted chan *bot.Request
}

func (c stubCore) Submit(_ context.Context, req *bot.Request) (*bot.Job, error) {
	if c.submitted != nil {
		c.submitted <- req
	}
	return &bot.Job{ID: "j1", User: req.User, Origin: req.Origin, Prompt: req.Prompt}, nil
}
func (stubCore) Undo(context.Context, *bot.Request) (*bot.Delivery, error) {
	return nil, bot.ErrNothingToUndo
}
func (stubCore) Details(context.Context, *bot.Request) (*bot.Details, error) {
	return nil, bot.ErrNoImage
}
func (stubCore) Delete(context.Context, *bot.Request) (*bot.Deleted, error) {
	return nil, bot.ErrNoImage
}
func (stubCore) History(context.Context, *bot.Request) (*bot.HistorySheet, error) {
	return nil, bot.ErrEmptyHistory
}
func (stubCore) Use(context.Context, *bot.Request) (*bot.Delivery, error) {
	return nil, bot.ErrEmptyHistory
}
func (stubCore) Branch(context.Context, *bot.Request) (*bot.Delivery, error) {
	return nil, bot.ErrEmptyHistory
}
func (stubCore) Usage(context.Context, *bot.Request) (bot.UsageReport, error) {
	return bot.UsageReport{}, nil
}
func (stubCore) Cancel(context.Context, string, string) error { return bot.ErrJobGone }
func (stubCore) Settings(context.Context, *bot.Request) (bot.Effective, error) {
	return bot.Effective{}, bot.ErrNotSettingsAdmin
}
func (stubCore) SetSettings(context.Context, *bot.Request, bot.WorkspaceSettings) (bot.Effective, error) {
	return bot.Effective{}, bot.ErrNotSettingsAdmin
}
func (stubCore) RecordPost(context.Context, bot.ConvKey, string, bot.Posted) error {
	return nil
}
func (stubCore) Store() bot.Store { return emptyStore{} }

type emptyStore struct{ bot.Store }

func (emptyStore) Conversation(context.Context, bot.ConvKey) (*bot.Conversation, error) {
	return nil, bot.ErrNotFound
}
func (emptyStore) Message(context.Context, bot.ConvKey, string) (bot.ConvKey, string, error) {
	return bot.ConvKey{}, "", bot.ErrNotFound
}

// started runs an adapter against a fake Discord, with a clock a test can move.
func started(t *testing.T, core Core) (*Bot, *discordtest.Server, *atomic.Int64) {
	t.Helper()
	dc := discordtest.New(discordtest.Options{})
	t.Cleanup(dc.Close)
	dc.AddTextChannel("1", "10", "art")
	var offset atomic.Int64
	b, err := New(Config{Token: dc.Token(), GuildID: "1", APIURL: dc.URL,
		Now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }}, core)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, dc, &offset
}

func testPNG(t *testing.T) []byte {
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, 8, 8))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestReporterKnowsTheTokenIsOld: a job older than the interaction token
// is posted as a channel reply without trying the token (the bot's own
// clock says it is too old), and a flood of progress calls never blocks
// and edits at most once per 2 s.
func TestReporterKnowsTheTokenIsOld(t *testing.T) {
	core := stubCore{submitted: make(chan *bot.Request, 1)}
	b, dc, offset := started(t, core)
	in, err := dc.Slash("10", "5", "imagine", discordtest.String("prompt", "an old owl"))
	if err != nil {
		t.Fatal(err)
	}
	var req *bot.Request
	select {
	case req = <-core.submitted:
	case <-time.After(5 * time.Second):
		t.Fatal("no request")
	}
	job := &bot.Job{ID: "jold", User: "5", Prompt: "an old owl", Origin: req.Origin}
	rep := b.Reporter(job)

	start := time.Now()
	for i := 30; i > 0; i-- {
		rep.Queued(job, i)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("30 Queued calls took %s", d)
	}
	if !dc.Wait(5*time.Second, func() bool { m, _ := dc.Original(in.ID); return strings.HasPrefix(m.Content, "Queued") }) {
		t.Fatal("no progress shown")
	}
	time.Sleep(2500 * time.Millisecond)
	m, _ := dc.Original(in.ID)
	if n := len(m.History); n > 3 { // "", then at most 2 queued texts in 2.5 s
		t.Errorf("%d progress edits in 2.5 s: %q", n-1, m.History)
	}
	if m.Content != "Queued · 1st in line" {
		t.Errorf("the status shows %q, want the latest position", m.Content)
	}

	offset.Store(int64(20 * time.Minute))
	d := &bot.Delivery{Job: job, Turn: bot.Turn{ID: "i1", Prompt: "an old owl", Format: "png"}, Image: testPNG(t)}
	posted, err := rep.Deliver(context.Background(), job, d)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := dc.Message(posted.MessageID)
	if msg.ReplyTo != m.ID || len(msg.Attachments) != 1 || msg.Interaction != "" {
		t.Errorf("delivered %+v, want a reply to the response %s", msg, m.ID)
	}
	if dc.ExpiredTokenCalls() != 0 {
		t.Error("the bot tried a token its own clock knew was expired")
	}
	if posted.Thread == nil || posted.Thread.Thread != posted.MessageID || posted.Thread.Channel != "10" {
		t.Errorf("posted %+v, want a thread under channel 10", posted)
	}
}

// TestCloseStopsProgress: trackers end with Close, even mid-job.
func TestCloseStopsProgress(t *testing.T) {
	core := stubCore{submitted: make(chan *bot.Request, 1)}
	b, dc, _ := started(t, core)
	if _, err := dc.Slash("10", "5", "imagine", discordtest.String("prompt", "x")); err != nil {
		t.Fatal(err)
	}
	req := <-core.submitted
	var wg sync.WaitGroup
	for i := range 20 {
		job := &bot.Job{ID: "j" + string(rune('a'+i)), Origin: req.Origin}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := b.Reporter(job)
			r.Queued(job, i+1)
			r.Running(job)
		}()
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { b.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung")
	}
	// goleak (TestMain) checks no tracker outlived Close.
}

func TestStartRefusesABadToken(t *testing.T) {
	dc := discordtest.New(discordtest.Options{})
	defer dc.Close()
	b, err := New(Config{Token: "wrong", APIURL: dc.URL, Out: io.Discard}, stubCore{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = b.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "DISCORD_BOT_TOKEN was refused") {
		t.Errorf("got %v", err)
	}
	if b.Healthy() == nil {
		t.Error("healthy without a connection")
	}
}

// TestStartThreadAlreadyStarted: a thread already started from the
// message (by a replica that died after posting a result and before
// recording it, or by a try whose answer was lost) is the thread: Discord
// answers 160004, and the thread has the message's id.
func TestStartThreadAlreadyStarted(t *testing.T) {
	b, dc, _ := started(t, stubCore{submitted: make(chan *bot.Request, 1)})
	dc.AddUser("5", "ada")
	m, err := dc.Say(discordtest.Say{ChannelID: "10", UserID: "5", Content: "a picture"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := b.startThread(context.Background(), "10", m.ID, "a picture")
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.startThread(context.Background(), "10", m.ID, "a picture")
	if err != nil {
		t.Fatalf("starting it again: %v", err)
	}
	if got, want := again.ID, first.ID; got != want {
		t.Errorf("thread %s, want the one already started, %s", got, want)
	}
	if v := dc.Violations(); len(v) > 0 {
		t.Errorf("violations: %v", v)
	}
}
