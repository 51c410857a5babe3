package discord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
)

// Leaser grants the gateway's leases: one per shard, held by one replica
// at a time, so every event reaches exactly one replica. The PostgreSQL
// store's Leases is one (a session advisory lock per lease on a
// connection of its own); without one, this process holds every shard.
type Leaser interface {
	// TryAcquire takes the lease name when no one holds it; ok is false
	// when someone does. lost closes when the lease is lost (the holder
	// must stop using it at once); release gives it up.
	TryAcquire(ctx context.Context, name string) (lost <-chan struct{}, release func(), ok bool, err error)
	// Peers is how many replicas share the leases, this one included.
	Peers(ctx context.Context) (int, error)
}

// DefaultLeaseRetry is how often a replica without a shard's lease tries
// to take it when Config.LeaseRetry is not set.
const DefaultLeaseRetry = 3 * time.Second

// localLeaser is the one-process Leaser: a lease is granted unless this
// process holds it already, and never lost.
type localLeaser struct {
	mu   sync.Mutex
	held map[string]bool
}

func (l *localLeaser) TryAcquire(_ context.Context, name string) (<-chan struct{}, func(), bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held[name] {
		return nil, nil, false, nil
	}
	l.held[name] = true
	var once sync.Once
	return make(chan struct{}), func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.held, name)
			l.mu.Unlock()
		})
	}, true, nil
}

func (l *localLeaser) Peers(context.Context) (int, error) { return 1, nil }

// shard is one gateway shard this replica may hold.
type shard struct {
	id int
	// Guarded by Bot.mu: the open session while the lease is held, the
	// lease's lost channel and its release.
	s       *discordgo.Session
	lost    <-chan struct{}
	release func()
	// down is set when s lost its connection; keep opens it again, at
	// once when wake says so (the first try after a loss), else at its
	// next tick. quiet is set while keep closes s itself.
	down, quiet bool
	wake        chan struct{}
	// extra is set while sh is held beyond this replica's share, taken
	// because no replica with room took it (replicas pinned with
	// DISCORD_SHARD_ID can leave a shard to the others): never handed
	// over for the share's sake. refrained counts the ticks this replica
	// left sh alone while at its share. Both are keep's alone.
	extra     bool
	refrained int
}

// strandedAfter is how many retries a replica at its share leaves a free
// shard to the others before it takes the shard itself.
const strandedAfter = 3

// leaseName names the lease of a shard.
func leaseName(id int) string { return "discord/gateway/" + strconv.Itoa(id) }

// newGateway is a session for shard sh's gateway connection, with the
// REST session's settings and the adapter's handlers. discordgo's own
// reconnect loop is off: it would keep reopening a session after Close,
// even one whose lease is gone; keep reconnects instead, only while the
// lease is held.
func (b *Bot) newGateway(sh *shard) *discordgo.Session {
	id := sh.id
	s, _ := discordgo.New("Bot " + b.cfg.Token) // fails only on an empty argument list
	s.Client = b.s.Client
	s.Dialer = b.s.Dialer
	s.StateEnabled = false
	s.SyncEvents = true
	s.ShouldRetryOnRateLimit = false
	s.MaxRestRetries = 2
	b.mu.Lock()
	s.Identify.Intents = b.intents
	b.mu.Unlock()
	s.ShardID, s.ShardCount = id, b.shardCount
	s.ShouldReconnectOnError = false
	s.AddHandler(func(s *discordgo.Session, _ *discordgo.Disconnect) {
		b.mu.Lock()
		if sh.s == s && !sh.quiet {
			sh.down = true
			select {
			case sh.wake <- struct{}{}:
			default:
			}
		}
		b.mu.Unlock()
	})
	s.AddHandler(b.onReady)
	s.AddHandler(b.onEvent)
	s.AddHandler(b.onMessage)
	return s
}

// open connects s to the gateway, without the Message Content intent when
// the gateway refuses it (close code 4014).
func (b *Bot) open(s *discordgo.Session) error {
	err := s.Open()
	if closeCode(err) == 4014 {
		b.noMessageContent("the gateway refused it (close code 4014, disallowed intents)")
		b.mu.Lock()
		b.intents = baseIntents
		b.mu.Unlock()
		s.Identify.Intents = baseIntents
		err = s.Open()
	}
	return err
}

// tryShard connects shard sh when its lease is free. A database error is
// logged and false returned (REST still works; the next try may succeed);
// a gateway error is returned.
func (b *Bot) tryShard(ctx context.Context, sh *shard) (bool, error) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return false, nil // closing: the shards are the other replicas' now
	}
	lost, release, ok, err := b.leaser.TryAcquire(ctx, leaseName(sh.id))
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("discord: gateway lease", "shard", sh.id, "err", err)
		}
		return false, nil
	}
	if !ok {
		return false, nil
	}
	s := b.newGateway(sh)
	if err := b.open(s); err != nil {
		_ = s.Close()
		release()
		return false, err
	}
	b.mu.Lock()
	sh.s, sh.lost, sh.release, sh.down = s, lost, release, false
	b.mu.Unlock()
	// A connection lost before sh.s was set went unflagged: look.
	s.RLock()
	ready := s.DataReady
	s.RUnlock()
	if !ready {
		b.mu.Lock()
		sh.down = true
		b.mu.Unlock()
	}
	b.log.Info("discord: gateway connected under the lease", "shard", sh.id, "shards", b.shardCount)
	return true, nil
}

// dropShard closes shard sh's gateway connection, then gives up its lease,
// in that order: no other replica connects while this one still is.
func (b *Bot) dropShard(sh *shard) {
	b.mu.Lock()
	s, release := sh.s, sh.release
	sh.s, sh.lost, sh.release, sh.extra = nil, nil, nil, false
	b.mu.Unlock()
	if s == nil {
		return
	}
	_ = s.Close()
	release()
}

// held counts the shards this replica holds, and the highest of them it
// may hand over (not held as extra; -1 if none).
func (b *Bot) held() (n, highest int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	highest = -1
	for _, sh := range b.shards {
		if sh.s != nil {
			n++
			if !sh.extra {
				highest = sh.id
			}
		}
	}
	return n, highest
}

// fairShare is how many shards one replica should hold: the shards spread
// evenly over the replicas present.
func (b *Bot) fairShare(ctx context.Context) int {
	ctx, cancel := context.WithTimeout(ctx, b.leaseRetry)
	defer cancel()
	peers, err := b.leaser.Peers(ctx)
	if err != nil || peers < 1 {
		return b.shardCount
	}
	return (b.shardCount + peers - 1) / peers
}

// keep holds shard sh for as long as the adapter runs: it disconnects when
// the lease is lost, takes the lease again when it is free and this
// replica holds less than its share (or when the shard stayed free for
// strandedAfter retries anyway), and hands its highest shard over when it
// holds more than its share (a replica joined).
func (b *Bot) keep(sh *shard) {
	defer b.wg.Done()
	t := time.NewTicker(b.leaseRetry)
	defer t.Stop()
	for {
		b.mu.Lock()
		s, lost, down := sh.s, sh.lost, sh.down
		connected := s != nil
		b.mu.Unlock()
		select {
		case <-b.ctx.Done():
			b.dropShard(sh)
			return
		case <-lost: // nil while not held: never ready
			b.log.Warn("discord: gateway lease lost; disconnecting this shard", "shard", sh.id)
			b.dropShard(sh)
			continue
		case <-sh.wake:
			b.mu.Lock()
			s, down = sh.s, sh.down
			connected = s != nil
			b.mu.Unlock()
		case <-t.C:
		}
		if connected && down {
			b.reopen(sh, s)
			continue
		}
		fair := b.fairShare(b.ctx)
		n, highest := b.held()
		switch {
		case connected && n > fair && highest == sh.id:
			b.log.Info("discord: handing a gateway shard over to another replica", "shard", sh.id, "held", n, "share", fair)
			b.dropShard(sh)
			sh.refrained = 0
		case connected:
		case n < fair || sh.refrained >= strandedAfter:
			ok, err := b.tryShard(b.ctx, sh)
			if err != nil && b.ctx.Err() == nil {
				b.log.Warn("discord: connecting to the gateway", "shard", sh.id, "err", b.explainStart(err))
			}
			b.mu.Lock()
			sh.extra = ok && n >= fair
			b.mu.Unlock()
			if ok {
				sh.refrained = 0
			}
		default:
			sh.refrained++
		}
	}
}

// reopen connects the held shard sh's session s again after it lost its
// connection (it resumes when Discord lets it).
func (b *Bot) reopen(sh *shard, s *discordgo.Session) {
	b.mu.Lock()
	if b.closed || sh.s != s {
		// Dropped meanwhile (Close gives the shards up first): a
		// session reopened now would be nobody's to close.
		b.mu.Unlock()
		return
	}
	sh.down = false
	b.mu.Unlock()
	err := b.open(s)
	if err == nil || errors.Is(err, discordgo.ErrWSAlreadyOpen) {
		b.log.Info("discord: gateway reconnected", "shard", sh.id)
		return
	}
	b.mu.Lock()
	sh.quiet = true // our own Close: try again at the next tick, not at once
	b.mu.Unlock()
	_ = s.Close()
	b.mu.Lock()
	sh.quiet = false
	if sh.s == s {
		sh.down = true
	}
	b.mu.Unlock()
	if b.ctx.Err() == nil {
		b.log.Warn("discord: reconnecting to the gateway", "shard", sh.id, "err", err)
	}
}

// whoAmI reads the application and its bot user over REST, for a replica
// that holds no gateway shard (no READY).
func (b *Bot) whoAmI(ctx context.Context) error {
	var app struct {
		ID    string `json:"id"`
		Flags int    `json:"flags"`
		Bot   *struct {
			ID       string `json:"id"`
			Username string `json:"username"`
		} `json:"bot"`
	}
	err := b.retry(ctx, "read the application", true, func(opts []discordgo.RequestOption) error {
		body, err := b.s.RequestWithBucketID("GET", discordgo.EndpointApplications+"/@me", nil, discordgo.EndpointApplications+"/@me", opts...)
		if err != nil {
			return err
		}
		return json.Unmarshal(body, &app)
	})
	if err != nil {
		return err
	}
	if app.ID == "" || app.Bot == nil {
		return errors.New("discord: GET /applications/@me carried no application id or bot user")
	}
	b.mu.Lock()
	b.appID, b.appFlags = app.ID, app.Flags
	b.botID, b.botName = app.Bot.ID, app.Bot.Username
	b.mu.Unlock()
	return nil
}

// gatewayHealth is nil when every shard this replica holds is connected.
// A replica holding none is a healthy standby: REST answers interactions
// and delivers jobs from any replica.
func (b *Bot) gatewayHealth() error {
	b.mu.Lock()
	started := b.started
	var held []*shard
	for _, sh := range b.shards {
		if sh.s != nil {
			held = append(held, &shard{id: sh.id, s: sh.s})
		}
	}
	b.mu.Unlock()
	if !started {
		return errors.New("discord: not connected to the gateway")
	}
	for _, sh := range held {
		sh.s.RLock()
		ready := sh.s.DataReady
		sh.s.RUnlock()
		if !ready {
			return fmt.Errorf("discord: shard %d: not connected to the gateway", sh.id)
		}
	}
	return nil
}
