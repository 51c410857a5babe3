// Package discord is kontextbot's Discord adapter, on discordgo: slash
// commands, the "Edit image" message command, replies, picture threads and
// buttons, turned into bot requests, with results posted back.
//
// Every event is acknowledged at once (interactions are deferred well
// inside Discord's 3 seconds) and handled in the background. Nothing a
// button or a job needs lives only in memory: custom ids carry the image
// or job id, and a job's Origin says where to answer, so buttons and jobs
// survive a restart. No message the bot sends can ping anyone.
package discord

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"

	"kontextbot/bot"
)

// Platform is the name Discord conversations and jobs carry.
const Platform = "discord"

// Permissions is the permission integer the bot asks for in its invite
// URL: View Channel, Send Messages, Send Messages in Threads, Create
// Public Threads, Attach Files and Read Message History (309237746688).
const Permissions = discordgo.PermissionViewChannel | discordgo.PermissionSendMessages |
	discordgo.PermissionSendMessagesInThreads | discordgo.PermissionCreatePublicThreads |
	discordgo.PermissionAttachFiles | discordgo.PermissionReadMessageHistory

// Application flags that say the Message Content intent is enabled.
const (
	flagGatewayMessageContent        = 1 << 18
	flagGatewayMessageContentLimited = 1 << 19
)

// baseIntents are the gateway intents the bot always needs; the
// privileged Message Content intent comes on top when the app has it.
const baseIntents = discordgo.IntentGuildMessages | discordgo.IntentDirectMessages

// Config configures the adapter.
type Config struct {
	// Token is the bot token (without the "Bot " prefix).
	Token string
	// GuildID, when set, registers the commands in that server only
	// (instant); otherwise globally.
	GuildID string
	// APIURL, when set, sends REST and gateway traffic to another host
	// (proxies, tests) instead of https://discord.com.
	APIURL string
	// Logger receives the adapter's logs; nil discards.
	Logger *slog.Logger
	// Out receives setup notices for the operator (the invite URL); nil discards.
	Out io.Writer
	// Now is the clock used for interaction token ages and progress; nil
	// means time.Now.
	Now func() time.Time
	// Wait spends a rate-limit wait (Discord's retry_after); nil means a
	// real timer. Tests pass a fake clock so a long retry_after costs no
	// time.
	Wait func(ctx context.Context, d time.Duration) error
	// Shards is the number of gateway shards (DISCORD_SHARDS); zero means
	// one. Each shard is a lease: with several replicas each holds its
	// share of the shards.
	Shards int
	// ShardIDs, when set, are the only shards this replica may hold
	// (DISCORD_SHARD_ID); by default any.
	ShardIDs []int
	// Leaser grants the gateway's leases across replicas; nil means this
	// process holds every shard (one process).
	Leaser Leaser
	// LeaseRetry is how often a replica without a shard's lease tries to
	// take it; zero means DefaultLeaseRetry.
	LeaseRetry time.Duration
	// PublicKey, when set (DISCORD_PUBLIC_KEY, hex), serves interactions
	// over HTTP (Handler): the app's Interactions Endpoint URL points at
	// the bot, so any replica answers them. Empty: over the gateway.
	PublicKey string
}

// Core is what the adapter needs of the bot core; *bot.Core is one.
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
	Store() bot.Store
}

var _ Core = (*bot.Core)(nil)

// Bot is the Discord adapter.
type Bot struct {
	cfg  Config
	core Core
	log  *slog.Logger
	out  io.Writer
	now  func() time.Time
	wait func(ctx context.Context, d time.Duration) error
	s    *discordgo.Session // REST; the gateway's sessions are per shard
	api  *url.URL           // Config.APIURL parsed, or nil

	leaser     Leaser
	leaseRetry time.Duration
	shardCount int
	shards     []*shard
	fetch      *http.Client // attachment downloads: never carries the token

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
	// events counts the event handlers running (a subset of wg): Close
	// lets them finish before it cancels them.
	events   sync.WaitGroup
	appID    string
	botID    string
	botName  string
	appFlags int
	content  bool // the Message Content intent is in use
	intents  discordgo.Intent
	started  bool
	warned   bool
	channels map[string]chanInfo
	trackers map[string]*tracker
	serial   map[string]chan struct{}
	edits    map[string][]time.Time // our recent edits per channel
	targets  map[string]target      // context-menu targets awaiting their modal
	// deadThreads are threads found deleted or archived and locked: their
	// conversations are posted in the parent channel.
	deadThreads map[string]bool
	// noThreads are channels where creating a thread was refused, until
	// when not to try again (a cache: after a restart one more try).
	noThreads map[string]time.Time
	// uploadLimits are the upload limits interactions reported per server.
	uploadLimits map[string]int
	closeOnce    sync.Once
	// key verifies interactions sent to the endpoint (nil: none is
	// served); answers are the endpoint's requests waiting for their
	// interaction's initial response, by interaction id.
	key     ed25519.PublicKey
	answers map[string]chan struct{}
}

var (
	_ bot.Platform = (*Bot)(nil)
	_ bot.Reporter = (*reporter)(nil)
)

// New returns an adapter; Start connects it.
func New(cfg Config, core Core) (*Bot, error) {
	cfg.Token = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(cfg.Token), "Bot "))
	if cfg.Token == "" {
		return nil, errors.New("discord: DISCORD_BOT_TOKEN is empty: copy the token from the Developer Portal (your app → Bot → Reset Token)")
	}
	if core == nil {
		return nil, errors.New("discord: no core")
	}
	b := &Bot{cfg: cfg, core: core, log: cfg.Logger, out: cfg.Out, now: cfg.Now,
		done: make(chan struct{}), channels: map[string]chanInfo{}, trackers: map[string]*tracker{},
		serial: map[string]chan struct{}{}, edits: map[string][]time.Time{}, targets: map[string]target{},
		deadThreads: map[string]bool{}, noThreads: map[string]time.Time{}, uploadLimits: map[string]int{},
		answers: map[string]chan struct{}{}}
	if strings.TrimSpace(cfg.PublicKey) != "" {
		k, err := ParsePublicKey(cfg.PublicKey)
		if err != nil {
			return nil, err
		}
		b.key = k
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.out == nil {
		b.out = io.Discard
	}
	if b.now == nil {
		b.now = time.Now
	}
	b.wait = cfg.Wait
	if b.wait == nil {
		b.wait = sleep
	}
	b.leaser = cfg.Leaser
	if b.leaser == nil {
		b.leaser = &localLeaser{held: map[string]bool{}}
	}
	b.leaseRetry = cfg.LeaseRetry
	if b.leaseRetry <= 0 {
		b.leaseRetry = DefaultLeaseRetry
	}
	b.shardCount = max(cfg.Shards, 1)
	if len(cfg.ShardIDs) == 0 {
		for i := range b.shardCount {
			b.shards = append(b.shards, &shard{id: i, wake: make(chan struct{}, 1)})
		}
	}
	for _, id := range cfg.ShardIDs {
		if id < 0 || id >= b.shardCount {
			return nil, fmt.Errorf("discord: shard %d is not one of the %d shards (DISCORD_SHARD_ID must be from 0 to DISCORD_SHARDS-1)", id, b.shardCount)
		}
		b.shards = append(b.shards, &shard{id: id, wake: make(chan struct{}, 1)})
	}
	b.intents = baseIntents | discordgo.IntentMessageContent
	transport := http.DefaultTransport.(*http.Transport).Clone()
	var rt http.RoundTripper = &limits{next: transport}
	if cfg.APIURL != "" {
		u, err := url.Parse(strings.TrimRight(cfg.APIURL, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("discord: DISCORD_API_URL %q is not an http(s) URL", cfg.APIURL)
		}
		b.api = u
		rt = &limits{next: &rewriter{base: u, next: transport}}
	}
	s, err := discordgo.New("Bot " + cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("discord: %w", err)
	}
	s.Client = &http.Client{Timeout: 30 * time.Second, Transport: rt}
	dialer := *websocket.DefaultDialer
	dialer.HandshakeTimeout = 15 * time.Second
	s.Dialer = &dialer
	s.StateEnabled = false
	s.SyncEvents = true // events arrive in order; handlers return at once
	s.ShouldRetryOnRateLimit = false
	s.MaxRestRetries = 2
	b.s = s
	b.fetch = &http.Client{Timeout: downloadTimeout, Transport: transport, CheckRedirect: b.checkRedirect}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

// rewriter sends requests for discord.com to another base URL.
type rewriter struct {
	base *url.URL
	next http.RoundTripper
}

func (t *rewriter) RoundTrip(r *http.Request) (*http.Response, error) {
	if h := r.URL.Hostname(); h == "discord.com" || h == "discordapp.com" {
		r = r.Clone(r.Context())
		r.URL.Scheme, r.URL.Host = t.base.Scheme, t.base.Host
		r.URL.Path = t.base.Path + r.URL.Path
		if r.URL.RawPath != "" {
			r.URL.RawPath = t.base.Path + r.URL.RawPath
		}
		r.Host = ""
	}
	return t.next.RoundTrip(r)
}

// limits turns a 502 answer to a write into an error (badGatewayError),
// and hides the rate-limit headers of a 429 from discordgo. Its
// ratelimiter would otherwise hold the route's next request in a sleep
// that no context ends (as long as X-RateLimit-Reset-After says, minutes
// on some routes); the adapter waits out a 429 itself instead (retry),
// within the caller's deadline. Headers of successful answers are left
// alone, so discordgo still paces requests before a limit is reached.
type limits struct{ next http.RoundTripper }

func (t *limits) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusBadGateway && r.Method != http.MethodGet {
		// See badGatewayError.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		return nil, &badGatewayError{method: r.Method}
	}
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		for _, h := range []string{"X-RateLimit-Remaining", "X-RateLimit-Reset", "X-RateLimit-Reset-After", "X-RateLimit-Global"} {
			resp.Header.Del(h)
		}
	}
	return resp, err
}

// Name is the platform name.
func (b *Bot) Name() string { return Platform }

// Start connects to the gateway of every shard whose lease is free,
// reads who the bot is, registers the commands and returns; shards held
// elsewhere are taken in the background when their holder goes. With no
// Leaser (one process) every shard is connected when Start returns.
func (b *Bot) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, sh := range b.shards {
		if _, err := b.tryShard(ctx, sh); err != nil {
			b.dropShards()
			return b.explainStart(err)
		}
	}
	b.mu.Lock()
	appID := b.appID
	b.mu.Unlock()
	if appID == "" {
		// No shard here: READY never came; ask REST.
		if err := b.whoAmI(ctx); err != nil {
			b.dropShards()
			return b.explainStart(err)
		}
	}
	b.mu.Lock()
	flags, appID, name := b.appFlags, b.appID, b.botName
	b.content = b.intents&discordgo.IntentMessageContent != 0
	b.mu.Unlock()
	if b.content && flags&(flagGatewayMessageContent|flagGatewayMessageContentLimited) == 0 {
		b.noMessageContent("the application's flags say it is not enabled")
	}
	if appID == "" {
		b.dropShards()
		return errors.New("discord: the gateway's READY carried no application id")
	}
	err := b.retry(ctx, "register commands", true, func(opts []discordgo.RequestOption) error {
		_, err := b.s.ApplicationCommandBulkOverwrite(appID, b.cfg.GuildID, commands(), opts...)
		return err
	})
	if err != nil {
		b.dropShards()
		if status(err) == http.StatusForbidden && b.cfg.GuildID != "" {
			return fmt.Errorf("discord: registering commands in server %s was refused (%w): invite the bot to that server with the URL below, with the applications.commands scope, or check DISCORD_GUILD_ID\n  %s",
				b.cfg.GuildID, err, InviteURL(appID))
		}
		return fmt.Errorf("discord: registering commands: %w", err)
	}
	where := "globally (a Discord app already open may need a reload, Ctrl+R, to list them; DISCORD_GUILD_ID registers them in one server, instantly)"
	if b.cfg.GuildID != "" {
		where = "in server " + b.cfg.GuildID
	}
	fmt.Fprintf(b.out, "Discord: connected as %s. Commands /imagine, /edit, /usage, /help, /history, /kontext and \"Edit image\" registered %s.\n", name, where)
	fmt.Fprintf(b.out, "Discord: invite the bot to a server with (scopes bot + applications.commands, permissions %d):\n  %s\n", Permissions, InviteURL(appID))
	b.log.Info("discord connected", "bot", name, "app", appID, "message_content", b.content, "guild", b.cfg.GuildID)
	b.mu.Lock()
	b.started = true
	if !b.closed {
		for _, sh := range b.shards {
			b.wg.Add(1)
			go b.keep(sh)
		}
	}
	b.mu.Unlock()
	return nil
}

// dropShards disconnects every shard and gives up its lease.
func (b *Bot) dropShards() {
	for _, sh := range b.shards {
		b.dropShard(sh)
	}
}

// InviteURL is the OAuth2 URL that adds the bot to a server with the
// scopes and permissions it needs.
func InviteURL(appID string) string {
	return "https://discord.com/oauth2/authorize?client_id=" + url.QueryEscape(appID) +
		"&scope=bot+applications.commands&permissions=" + fmt.Sprint(Permissions)
}

func (b *Bot) explainStart(err error) error {
	if status(err) == http.StatusUnauthorized || closeCode(err) == 4004 {
		return fmt.Errorf("discord: DISCORD_BOT_TOKEN was refused (%w): copy it again from the Developer Portal (your app → Bot → Reset Token)", err)
	}
	switch code := closeCode(err); code {
	case 0:
	case 4010, 4011:
		// Invalid shard; sharding required (too many servers for one).
		return fmt.Errorf("discord: the gateway refused the shard (close code %d: %w): set DISCORD_SHARDS to the number Discord recommends (GET /gateway/bot, \"shards\"), the same on every replica", code, err)
	default:
		return fmt.Errorf("discord: the gateway closed the connection with code %d: %w", code, err)
	}
	return fmt.Errorf("discord: connecting to the gateway: %w", err)
}

// noMessageContent says once, clearly, that the bot runs without the
// Message Content intent.
func (b *Bot) noMessageContent(why string) {
	b.mu.Lock()
	warned := b.warned
	b.warned, b.content = true, false
	b.mu.Unlock()
	if warned {
		return
	}
	b.log.Warn("discord: Message Content intent not enabled", "why", why)
	fmt.Fprintf(b.out, `Discord: the Message Content intent is not enabled for this application (%s).
  Without it I cannot read ordinary messages: replies to images and messages in
  picture threads only reach me when they @mention me. /imagine, /edit, /usage,
  the "Edit image" menu and @mentions work as usual.
  To enable it: https://discord.com/developers/applications → your app → Bot →
  Privileged Gateway Intents → Message Content Intent → Save, then restart me.
`, why)
}

func closeCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

// onReady records who the bot is; it runs inside Open (events are
// synchronous), so Start sees it.
func (b *Bot) onReady(_ *discordgo.Session, r *discordgo.Ready) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.User != nil {
		b.botID, b.botName = r.User.ID, r.User.Username
	}
	if r.Application != nil && r.Application.ID != "" {
		b.appID, b.appFlags = r.Application.ID, r.Application.Flags
	} else if b.appID == "" {
		b.appID = b.botID
	}
}

func (b *Bot) ids() (appID, botID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.appID, b.botID
}

// Close disconnects and waits for the adapter's goroutines.
func (b *Bot) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed, b.started = true, false
		b.mu.Unlock()
		// No event is taken from now on: the gateway is closed and its
		// leases given up at once, so another replica takes the shards
		// over while this one finishes. The events being handled finish
		// first (a request acknowledged to Discord is submitted, not
		// dropped: on a shared queue another replica runs it), for up to
		// closeGrace, before everything still running is cancelled.
		b.dropShards()
		handled := make(chan struct{})
		go func() {
			b.events.Wait()
			close(handled)
		}()
		grace := time.NewTimer(closeGrace)
		select {
		case <-handled:
		case <-grace.C:
		}
		grace.Stop()
		b.cancel()
		close(b.done)
		b.wg.Wait()
		b.dropShards() // those Start took, when it failed or no keeper ran
		b.s.Client.CloseIdleConnections()
		b.fetch.CloseIdleConnections()
	})
	return err
}

// closeGrace is how long Close lets the event handlers already running
// finish before it cancels them.
const closeGrace = 10 * time.Second

// Healthy is nil once started while the gateway connection of every
// shard this replica holds is up (a replica holding none is a standby).
func (b *Bot) Healthy() error { return b.gatewayHealth() }

// spawn runs f in a goroutine Close waits for; false once closed.
func (b *Bot) spawn(f func(ctx context.Context)) bool {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return false
	}
	b.wg.Add(1)
	b.events.Add(1)
	b.mu.Unlock()
	go func() {
		defer b.wg.Done()
		defer b.events.Done()
		defer b.recover()
		f(b.ctx)
	}()
	return true
}

// recover keeps one bad event from taking the bot down.
func (b *Bot) recover() {
	if v := recover(); v != nil {
		b.log.Error("discord: panic while handling an event", "panic", v, "stack", string(debug.Stack()))
	}
}

// serialize runs f after every earlier f of the same key: messages of one
// channel are handled in the order they were sent.
func (b *Bot) serialize(key string, f func(ctx context.Context)) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	prev := b.serial[key]
	done := make(chan struct{})
	b.serial[key] = done
	b.wg.Add(1)
	b.events.Add(1)
	b.mu.Unlock()
	go func() {
		defer b.wg.Done()
		defer b.events.Done()
		defer func() {
			close(done)
			b.mu.Lock()
			if b.serial[key] == done {
				delete(b.serial, key)
			}
			b.mu.Unlock()
		}()
		if prev != nil {
			select {
			case <-prev:
			case <-b.ctx.Done():
				return
			}
		}
		defer b.recover()
		f(b.ctx)
	}()
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
