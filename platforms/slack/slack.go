// Package slack is kontextbot's Slack adapter, on slack-go: slash
// commands, thread follow-ups, mentions, the "Edit image" shortcut and
// buttons, in Socket Mode or over HTTP, with results posted back.
//
// Where things happen in Slack:
//
//   - /imagine and /edit run in a channel (Slack has no slash commands in
//     threads). The result is posted as a new message carrying the image and
//     its buttons, and that message becomes the root of the picture's
//     thread: the conversation.
//   - In a picture's thread every message from a person edits the current
//     image, with the images attached to it as further references.
//   - Outside the bot's threads, a mention of the bot with an image attached,
//     or in a thread below an image, edits that image; the result is posted
//     in the mention's thread, which becomes a picture thread.
//   - The "Edit image" message shortcut and the buttons (Reroll, Undo, Edit,
//     Cancel) carry everything they need in their values and in the modal's
//     private_metadata, so they work after a restart.
//
// Every envelope (Socket Mode) or request (HTTP) is acknowledged before any
// slow work; the work runs in goroutines that Close waits for.
package slack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	slackgo "github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"kontextbot/bot"
)

// Platform is the name Slack conversations and jobs carry.
const Platform = "slack"

// Config configures the adapter.
type Config struct {
	// BotToken is the bot token, xoxb-...
	BotToken string
	// AppToken, xapp-..., selects Socket Mode.
	AppToken string
	// SigningSecret selects HTTP mode: Handler serves /slack/events,
	// /slack/commands and /slack/interactive, verifying every request.
	SigningSecret string
	// APIURL, when set, sends Web API traffic to another host (proxies,
	// tests) instead of https://slack.com/api/.
	APIURL string
	// Logger receives the adapter's logs; nil discards.
	Logger *slog.Logger
	// Out receives setup notices for the operator; nil discards.
	Out io.Writer
}

// Core is what the adapter needs of the bot core.
type Core interface {
	Submit(ctx context.Context, req *bot.Request) (*bot.Job, error)
	Undo(ctx context.Context, req *bot.Request) (*bot.Delivery, error)
	Details(ctx context.Context, req *bot.Request) (*bot.Details, error)
	Delete(ctx context.Context, req *bot.Request) (*bot.Deleted, error)
	History(ctx context.Context, req *bot.Request) (*bot.HistorySheet, error)
	Use(ctx context.Context, req *bot.Request) (*bot.Delivery, error)
	Branch(ctx context.Context, req *bot.Request) (*bot.Delivery, error)
	Usage(ctx context.Context, req *bot.Request) (bot.UsageReport, error)
	Settings(ctx context.Context, req *bot.Request) (bot.Effective, error)
	SetSettings(ctx context.Context, req *bot.Request, s bot.WorkspaceSettings) (bot.Effective, error)
	Cancel(ctx context.Context, jobID, userID string) error
	RecordPost(ctx context.Context, key bot.ConvKey, turnID string, posted bot.Posted) error
	Check(ctx context.Context, req *bot.Request) error
	Store() bot.Store
}

var _ Core = (*bot.Core)(nil)

// Timings. Tests inside the package shorten some of them.
const (
	// defaultStatusEvery is the least time between two updates of one
	// status message.
	defaultStatusEvery = 2 * time.Second
	// defaultElapsedEvery is how often "Generating… N s" is refreshed.
	defaultElapsedEvery = 5 * time.Second
	// startTimeout bounds Start: auth.test and the first Socket Mode hello.
	startTimeout = 30 * time.Second
	// callTimeout bounds one Web API call made outside a job's context.
	callTimeout = 20 * time.Second
	// downloadTimeout bounds the download of one file people posted.
	downloadTimeout = 60 * time.Second
	// shareTimeout bounds the wait for an uploaded file's message to appear.
	shareTimeout = 20 * time.Second
	// maxBody bounds the body of one HTTP mode request.
	maxBody = 2 << 20
)

// Bot is the Slack adapter.
type Bot struct {
	cfg     Config
	core    Core
	log     *slog.Logger
	out     io.Writer
	api     *slackgo.Client
	apiBase *url.URL // the Web API base: slack.com, or SLACK_API_URL
	hc      *http.Client
	files   *http.Client
	socket  bool

	statusEvery, elapsedEvery time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	// sockCtx ends the Socket Mode connection; Close ends it first, so
	// Slack sends the app's envelopes to the other replicas' connections
	// while the events already received are handled.
	sockCtx    context.Context
	sockCancel context.CancelFunc

	life   sync.Mutex // guards closed and wg.Add
	closed bool
	wg     sync.WaitGroup

	ackMu   sync.Mutex
	unacked map[*acker]bool // requests not yet acknowledged (see acker)

	mu       sync.Mutex
	inflight int                                // events received and not yet handled (see track)
	idle     chan struct{}                      // closed when inflight drops to 0, while Close waits
	statuses map[string]*status                 // by job id
	queues   map[string][]func(context.Context) // by key, see serial
	uploads  map[string]string                  // by job id: a file whose completion got no clear answer

	started   atomic.Bool
	connected atomic.Bool
	connErr   atomic.Pointer[error]
	team      string // the workspace the token belongs to
	botUser   string // the bot's user id (U...)
	botID     string // the bot's bot id (B...)
	botName   string

	seen    *dedupe
	handler http.Handler
}

var (
	_ bot.Platform = (*Bot)(nil)
	_ bot.Reporter = reporter{}
)

// New returns an adapter; Start connects it.
func New(cfg Config, core Core) (*Bot, error) {
	switch {
	case core == nil:
		return nil, errors.New("slack: no core")
	case cfg.BotToken == "":
		return nil, errors.New("slack: SLACK_BOT_TOKEN is not set")
	case cfg.AppToken == "" && cfg.SigningSecret == "":
		return nil, errors.New("slack: set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode)")
	}
	base := slackgo.APIURL
	if cfg.APIURL != "" {
		base = strings.TrimRight(cfg.APIURL, "/") + "/"
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("slack: SLACK_API_URL %q is not an http(s) URL", cfg.APIURL)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	b := &Bot{cfg: cfg, core: core, log: log, out: out, apiBase: u, socket: cfg.AppToken != "",
		statusEvery: defaultStatusEvery, elapsedEvery: defaultElapsedEvery,
		statuses: map[string]*status{}, queues: map[string][]func(context.Context){}, uploads: map[string]string{}, seen: newDedupe(10 * time.Minute)}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.sockCtx, b.sockCancel = context.WithCancel(b.ctx)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	b.hc = &http.Client{Transport: &tokenTransport{base: tr, allowed: b.mayReceiveToken}, Timeout: 60 * time.Second}
	b.files = &http.Client{Transport: b.hc.Transport, Timeout: downloadTimeout, CheckRedirect: b.checkRedirect}
	opts := []slackgo.Option{
		slackgo.OptionAPIURL(base),
		slackgo.OptionHTTPClient(b.hc),
		slackgo.OptionRetry(3), // 429: wait Retry-After and try again
		slackgo.OptionLog(slog.NewLogLogger(log.Handler(), slog.LevelDebug)),
		slackgo.OptionOnWarning(func(method string, _ any, w *slackgo.Warning) {
			// The request is left out: it can carry what people wrote.
			log.Warn("slack: Web API warning", "method", method, "codes", w.Codes, "warnings", w.Warnings)
		}),
	}
	if cfg.AppToken != "" {
		opts = append(opts, slackgo.OptionAppLevelToken(cfg.AppToken))
	}
	b.api = slackgo.New(cfg.BotToken, opts...)
	if !b.socket {
		b.handler = b.newHandler()
	}
	return b, nil
}

// Name is the platform name.
func (b *Bot) Name() string { return Platform }

// Reporter reports on job in Slack, from what job.Origin says.
func (b *Bot) Reporter(job *bot.Job) bot.Reporter { return reporter{b: b} }

// Start checks the token and, in Socket Mode, connects; it returns once
// events flow.
func (b *Bot) Start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	auth, err := b.api.AuthTestContext(ctx)
	if err != nil {
		return fmt.Errorf("slack: auth.test: %w (is SLACK_BOT_TOKEN the app's Bot User OAuth Token, and is the app installed?)", err)
	}
	b.team, b.botUser, b.botID, b.botName = auth.TeamID, auth.UserID, auth.BotID, auth.User
	if b.socket {
		if err := b.startSocket(ctx); err != nil {
			b.Close() // serve closes only the platforms that started
			return err
		}
		if b.cfg.SigningSecret != "" {
			fmt.Fprintln(b.out, "Slack: SLACK_APP_TOKEN is set, so the bot uses Socket Mode; SLACK_SIGNING_SECRET is not used.")
		}
		fmt.Fprintf(b.out, "Slack: connected to %s as @%s (Socket Mode).\n", auth.Team, auth.User)
	} else {
		fmt.Fprintf(b.out, "Slack: signed in to %s as @%s (HTTP mode). In the app's settings, point the Request URLs at this server:\n"+
			"  Event Subscriptions: https://YOUR-HOST/slack/events\n"+
			"  Slash Commands:      https://YOUR-HOST/slack/commands\n"+
			"  Interactivity:       https://YOUR-HOST/slack/interactive\n", auth.Team, auth.User)
	}
	b.started.Store(true)
	return nil
}

// startSocket connects Socket Mode and waits for Slack's hello.
func (b *Bot) startSocket(ctx context.Context) error {
	sm := socketmode.New(b.api, socketmode.OptionLog(slog.NewLogLogger(b.log.Handler(), slog.LevelDebug)))
	ready := make(chan struct{})
	runErr := make(chan error, 1)
	if !b.spawn(func(context.Context) {
		err := sm.RunContext(b.sockCtx)
		if b.sockCtx.Err() == nil { // RunContext always returns an error
			b.log.Error("slack: Socket Mode stopped", "err", err)
			b.setDisconnected(err)
		}
		runErr <- err
	}) {
		return errors.New("slack: closed")
	}
	b.spawn(func(context.Context) { b.socketLoop(sm, ready) })
	select {
	case <-ready:
		return nil
	case err := <-runErr:
		return fmt.Errorf("slack: Socket Mode: %w (is SLACK_APP_TOKEN an app-level token with connections:write, and Socket Mode enabled?)", err)
	case <-ctx.Done():
		msg := "no hello from Slack"
		if p := b.connErr.Load(); p != nil {
			msg = (*p).Error()
		}
		return fmt.Errorf("slack: Socket Mode did not connect in time: %s", msg)
	}
}

// Handler serves Slack's HTTP mode routes; nil in Socket Mode.
func (b *Bot) Handler() http.Handler { return b.handler }

// Close disconnects and waits for the adapter's goroutines.
func (b *Bot) Close() error {
	// Acknowledge what was received, while the connection is up: this
	// process handles it, for up to closeGrace, before the rest stops.
	// Then stop receiving.
	b.ackPending()
	b.sockCancel()
	b.mu.Lock()
	var idle chan struct{}
	if b.inflight > 0 {
		b.idle = make(chan struct{})
		idle = b.idle
	}
	b.mu.Unlock()
	if idle != nil {
		grace := time.NewTimer(closeGrace)
		select {
		case <-idle:
		case <-grace.C:
		}
		grace.Stop()
	}
	b.life.Lock()
	b.closed = true
	b.life.Unlock()
	b.cancel()
	b.wg.Wait()
	b.connected.Store(false)
	b.hc.CloseIdleConnections()
	return nil
}

// Healthy is nil while the adapter can receive events.
func (b *Bot) Healthy() error {
	switch {
	case !b.started.Load():
		return errors.New("slack: not started")
	case b.ctx.Err() != nil:
		return errors.New("slack: closed")
	case !b.socket:
		return nil
	case b.connected.Load():
		return nil
	}
	if p := b.connErr.Load(); p != nil {
		return fmt.Errorf("slack: Socket Mode disconnected: %w", *p)
	}
	return errors.New("slack: Socket Mode disconnected")
}

func (b *Bot) setDisconnected(err error) {
	b.connected.Store(false)
	if err != nil {
		b.connErr.Store(&err)
	}
}

// spawn runs fn in a goroutine that Close waits for; it reports false
// (and runs nothing) once the adapter is closed.
func (b *Bot) spawn(fn func(ctx context.Context)) bool {
	b.life.Lock()
	defer b.life.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		fn(b.ctx)
	}()
	return true
}

// closeGrace is how long Close lets the events already received finish.
const closeGrace = 10 * time.Second

// track counts an event received until the returned func, its end, is
// called: Close waits for them.
func (b *Bot) track() func() {
	b.mu.Lock()
	b.inflight++
	b.mu.Unlock()
	return func() { b.untrack(1) }
}

// untrack ends n tracked events.
func (b *Bot) untrack(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inflight -= n
	if b.inflight == 0 && b.idle != nil {
		close(b.idle)
		b.idle = nil
	}
}

// serial runs fn after every earlier fn of the same key, in its own
// goroutine: events of one conversation are handled in the order they
// arrived (three quick messages in a thread edit in that order), while
// different conversations run side by side.
// The request is acknowledged (a) when its job is stored or fn returns.
// With overlap, the next fn of key starts once this one is acknowledged
// (its job stored) instead of when it returns: requests that need only
// be stored in order (slash commands) do not wait for each other's
// queueing, which may wait for the shared queue.
func (b *Bot) serial(key string, a *acker, overlap bool, fn func(ctx context.Context)) {
	end := b.track()
	handle := func(ctx context.Context) {
		defer end()
		defer a.ack()
		fn(bot.WithStored(ctx, func(*bot.Job) { a.ack() }))
	}
	run := handle
	if overlap {
		run = func(ctx context.Context) {
			if !b.spawn(handle) {
				end()
				return
			}
			select {
			case <-a.done:
			case <-ctx.Done():
			}
		}
	}
	b.mu.Lock()
	q, busy := b.queues[key]
	b.queues[key] = append(q, run)
	b.mu.Unlock()
	if busy {
		return
	}
	started := b.spawn(func(ctx context.Context) {
		for {
			b.mu.Lock()
			q := b.queues[key]
			if len(q) == 0 {
				delete(b.queues, key)
				b.mu.Unlock()
				return
			}
			next := q[0]
			b.queues[key] = q[1:]
			b.mu.Unlock()
			next(ctx)
		}
	})
	if !started {
		b.mu.Lock()
		dropped := len(b.queues[key])
		delete(b.queues, key)
		b.mu.Unlock()
		b.untrack(dropped) // this event's and any queued behind it meanwhile
	}
}

// dedupe remembers keys for a while, so a message that arrives both as a
// message and as an app_mention (or an HTTP event Slack retries) is
// handled once.
type dedupe struct {
	mu   sync.Mutex
	ttl  time.Duration
	seen map[string]time.Time
}

func newDedupe(ttl time.Duration) *dedupe {
	return &dedupe{ttl: ttl, seen: map[string]time.Time{}}
}

// first reports whether key is new, and remembers it.
func (d *dedupe) first(key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	if t, ok := d.seen[key]; ok && now.Sub(t) < d.ttl {
		return false
	}
	if len(d.seen) > 4096 {
		for k, t := range d.seen {
			if now.Sub(t) >= d.ttl {
				delete(d.seen, k)
			}
		}
	}
	d.seen[key] = now
	return true
}
