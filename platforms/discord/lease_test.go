package discord

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"kontextbot/bot"
	"kontextbot/platforms/discord/discordtest"
	"kontextbot/store/postgres"
	"kontextbot/store/postgres/pgtest"
)

// Lease timings of these tests: a lost connection is noticed within
// 2*leaseCheck, and a free lease taken within leaseRetry + 2*leaseCheck
// (the grant's grace) + the gateway handshake.
const (
	leaseCheck = 100 * time.Millisecond
	leaseRetry = 100 * time.Millisecond
	// takeover bounds the wait for another replica to connect.
	takeover = 5 * time.Second
)

// replica is one adapter with its own connections to the database, as a
// replica process has.
type replica struct {
	name   string
	db     *postgres.DB
	leases *postgres.Leases
	b      *Bot
}

// replicas starts n adapters, each with a PostgreSQL lease holder of its
// own on one schema, against one fake Discord.
func replicas(t *testing.T, dc *discordtest.Server, n, shards int) []*replica {
	t.Helper()
	return replicasPinned(t, dc, make([][]int, n), shards)
}

// replicasPinned starts one adapter per entry of pins, each allowed the
// shards its entry lists (nil: any).
func replicasPinned(t *testing.T, dc *discordtest.Server, pins [][]int, shards int) []*replica {
	t.Helper()
	n := len(pins)
	url := pgtest.Schema(t)
	var rs []*replica
	for i := range n {
		db, err := postgres.Open(context.Background(), url, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		r := &replica{name: fmt.Sprintf("r%d", i), db: db}
		leases := db.Leases(postgres.LeaseOptions{Check: leaseCheck, Replica: r.name})
		r.leases = leases
		r.b, err = New(Config{Token: dc.Token(), APIURL: dc.URL, Shards: shards, ShardIDs: pins[i], // global commands: every guild
			Leaser: leases, LeaseRetry: leaseRetry}, stubCore{submitted: make(chan *bot.Request, 10)})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.b.Start(context.Background()); err != nil {
			t.Fatalf("%s: Start: %v", r.name, err)
		}
		t.Cleanup(func() {
			r.b.Close()
			leases.Close()
			db.Close()
		})
		rs = append(rs, r)
	}
	return rs
}

// shardsOf lists the shards r holds.
func (r *replica) shardsOf() []int {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	var ids []int
	for _, sh := range r.b.shards {
		if sh.s != nil {
			ids = append(ids, sh.id)
		}
	}
	return ids
}

// kill ends r's lease connection from the server's side, as when r's
// process dies: the server releases its locks.
func (r *replica) kill(t *testing.T) {
	t.Helper()
	var n int
	err := r.db.Pool().QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1`, "kontextbot-leases/"+r.name).Scan(&n)
	// Usually one; two while the leaser is replacing a connection it
	// found broken. Every one of them ends.
	if err != nil || n < 1 {
		t.Fatalf("kill %s: %d connections ended, %v", r.name, n, err)
	}
}

// die is r's death: the server drops its lease connection, and nothing
// of r comes back.
func (r *replica) die(t *testing.T) {
	t.Helper()
	r.kill(t)
	r.leases.Close()
	r.b.Close()
}

// holders maps each shard to the replicas holding it.
func holders(rs []*replica) map[int][]string {
	m := map[int][]string{}
	for _, r := range rs {
		for _, id := range r.shardsOf() {
			m[id] = append(m[id], r.name)
		}
	}
	return m
}

// TestGatewayLeaseOneHolder: two replicas on one database connect one
// gateway session between them; when the holder dies the other connects
// within the takeover bound, never while the first still is; the replica
// without the gateway is healthy and delivers over REST.
func TestGatewayLeaseOneHolder(t *testing.T) {
	dc := discordtest.New(discordtest.Options{})
	t.Cleanup(dc.Close) // after the replicas' cleanups
	dc.AddTextChannel("1", "10", "art")
	rs := replicas(t, dc, 2, 1)

	if !dc.Wait(takeover, func() bool { return len(dc.Sessions()) == 1 }) {
		t.Fatalf("sessions = %v, want 1", dc.Sessions())
	}
	h := holders(rs)
	if len(h[0]) != 1 {
		t.Fatalf("shard 0 held by %v, want one replica", h[0])
	}
	holder, standby := rs[0], rs[1]
	if h[0][0] == rs[1].name {
		holder, standby = rs[1], rs[0]
	}
	for _, r := range rs {
		if err := r.b.Healthy(); err != nil {
			t.Errorf("%s: Healthy = %v", r.name, err)
		}
	}

	t.Run("the standby delivers over REST", func(t *testing.T) {
		in, err := dc.Slash("10", "5", "imagine", discordtest.String("prompt", "a lighthouse"))
		if err != nil {
			t.Fatal(err)
		}
		var req *bot.Request
		select {
		case req = <-holder.b.core.(stubCore).submitted:
		case <-time.After(5 * time.Second):
			t.Fatal("the gateway holder did not take the command")
		}
		select {
		case <-standby.b.core.(stubCore).submitted:
			t.Fatal("the standby received the command too")
		default:
		}
		job := &bot.Job{ID: "j1", User: "5", Prompt: "a lighthouse", Origin: req.Origin}
		d := &bot.Delivery{Job: job, Turn: bot.Turn{ID: "i1", Prompt: "a lighthouse", Format: "png"}, Image: testPNG(t)}
		posted, err := standby.b.Reporter(job).Deliver(context.Background(), job, d)
		if err != nil {
			t.Fatalf("standby Deliver: %v", err)
		}
		if msg, ok := dc.Message(posted.MessageID); !ok || len(msg.Attachments) != 1 {
			t.Errorf("delivered %+v, want the image", msg)
		}
		_ = in
	})

	t.Run("the holder dies and the standby takes over", func(t *testing.T) {
		before := len(dc.Identifies())
		holder.kill(t)
		if !dc.Wait(takeover, func() bool {
			h := holders(rs)
			return len(dc.Sessions()) == 1 && len(h[0]) == 1 && h[0][0] == standby.name
		}) {
			t.Fatalf("after the holder died: sessions %v, holders %v; want the standby alone", dc.Sessions(), holders(rs))
		}
		if n := len(dc.Identifies()); n != before+1 {
			t.Errorf("%d identifies after the takeover, want 1", n-before)
		}
		if n := dc.Overlaps(); n != 0 {
			t.Errorf("%d sessions of one shard overlapped", n)
		}
		// Messages now reach the new holder only.
		if _, err := dc.Slash("10", "5", "imagine", discordtest.String("prompt", "after")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-standby.b.core.(stubCore).submitted:
		case <-time.After(5 * time.Second):
			t.Fatal("the new holder did not take the command")
		}
		for _, r := range rs {
			if err := r.b.Healthy(); err != nil {
				t.Errorf("%s: Healthy = %v", r.name, err)
			}
		}
	})

	t.Run("a closed holder hands over", func(t *testing.T) {
		standby.b.Close()
		if !dc.Wait(takeover, func() bool {
			h := holders(rs)
			return len(dc.Sessions()) == 1 && len(h[0]) == 1 && h[0][0] == holder.name
		}) {
			t.Fatalf("after Close: sessions %v, holders %v; want %s alone", dc.Sessions(), holders(rs), holder.name)
		}
		if n := dc.Overlaps(); n != 0 {
			t.Errorf("%d sessions of one shard overlapped", n)
		}
		if err := standby.b.Healthy(); err == nil {
			t.Error("a closed adapter reports healthy")
		}
	})
}

// TestGatewayLeaseShards: with 2 shards and 2 replicas each holds one,
// though the first one started took both (it hands one over when the
// second arrives); each guild's commands reach only the replica holding
// its shard; when one replica dies the other holds both.
func TestGatewayLeaseShards(t *testing.T) {
	dc := discordtest.New(discordtest.Options{})
	t.Cleanup(dc.Close)                   // after the replicas' cleanups
	const guild0, guild1 = "1", "4194304" // shards (id >> 22) % 2: 0 and 1
	dc.AddTextChannel(guild0, "10", "zero")
	dc.AddTextChannel(guild1, "11", "one")
	rs := replicas(t, dc, 2, 2)

	spread := func() bool {
		s := dc.Sessions()
		return len(s) == 2 && s[0] == discordtest.Session{Shard: 0, Shards: 2} && s[1] == discordtest.Session{Shard: 1, Shards: 2} &&
			len(rs[0].shardsOf()) == 1 && len(rs[1].shardsOf()) == 1
	}
	if !dc.Wait(takeover, spread) {
		t.Fatalf("sessions %v, holders %v; want one shard each", dc.Sessions(), holders(rs))
	}
	for _, id := range dc.Identifies() {
		if len(id.Shard) != 2 || id.Shard[1] != 2 {
			t.Errorf("identify with shard %v, want [id 2]", id.Shard)
		}
	}
	if n := dc.Overlaps(); n != 0 {
		t.Errorf("%d sessions of one shard overlapped", n)
	}
	for shardID, channel := range []string{"10", "11"} {
		if _, err := dc.Slash(channel, "5", "imagine", discordtest.String("prompt", "shard "+channel)); err != nil {
			t.Fatal(err)
		}
		// Wait for the first submission, then a moment more for a second
		// one (a duplicate would come as fast).
		var got []string
		var quiet <-chan time.Time
		deadline := time.After(5 * time.Second)
	collect:
		for {
			for _, r := range rs {
				select {
				case req := <-r.b.core.(stubCore).submitted:
					got = append(got, r.name+":"+req.Prompt)
					if quiet == nil {
						quiet = time.After(500 * time.Millisecond)
					}
				default:
				}
			}
			select {
			case <-quiet:
				break collect
			case <-deadline:
				break collect
			case <-time.After(10 * time.Millisecond):
			}
		}
		holder := holders(rs)[shardID]
		if len(got) != 1 || len(holder) != 1 || got[0] != holder[0]+":shard "+channel {
			t.Errorf("the command in channel %s (shard %d, held by %v) reached %v, want its holder once", channel, shardID, holder, got)
		}
	}

	rs[0].die(t)
	if !dc.Wait(takeover, func() bool {
		return len(dc.Sessions()) == 2 && slices.Equal(rs[1].shardsOf(), []int{0, 1}) && len(rs[0].shardsOf()) == 0
	}) {
		t.Fatalf("after r0 died: sessions %v, holders %v; want r1 holding both", dc.Sessions(), holders(rs))
	}
	if n := dc.Overlaps(); n != 0 {
		t.Errorf("%d sessions of one shard overlapped", n)
	}
}

// TestGatewayLeaseNoZombieAfterOutage: the holder loses its lease while
// Discord's gateway is down (its session is reconnecting); when the
// gateway comes back exactly one replica connects. discordgo's own
// reconnect loop would keep reopening the dropped session after Close.
func TestGatewayLeaseNoZombieAfterOutage(t *testing.T) {
	dc := discordtest.New(discordtest.Options{})
	t.Cleanup(dc.Close)
	rs := replicas(t, dc, 2, 1)
	if !dc.Wait(takeover, func() bool { return len(dc.Sessions()) == 1 && len(holders(rs)[0]) == 1 }) {
		t.Fatalf("sessions %v, holders %v", dc.Sessions(), holders(rs))
	}
	holder := rs[0]
	if holders(rs)[0][0] == rs[1].name {
		holder = rs[1]
	}
	dc.SetGatewayDown(true)
	if !dc.Wait(takeover, func() bool { return holder.b.Healthy() != nil }) {
		t.Fatal("the holder reports healthy while the gateway is down")
	}
	holder.kill(t)
	if !dc.Wait(takeover, func() bool { return len(holder.shardsOf()) == 0 }) {
		t.Fatal("the holder kept the shard after losing its lease")
	}
	before := len(dc.Identifies())
	dc.SetGatewayDown(false)
	if !dc.Wait(takeover, func() bool { return len(dc.Sessions()) == 1 && len(holders(rs)[0]) == 1 }) {
		t.Fatalf("after the outage: sessions %v, holders %v; want one", dc.Sessions(), holders(rs))
	}
	// Give a zombie reconnect (discordgo backs off 1, 2, 4 s) time to show:
	// it would connect beside the holder (an overlap, or two sessions).
	// A second identify without either is a lease handed on, which a
	// loaded machine can cause by renewing late; it is logged, not failed.
	time.Sleep(2500 * time.Millisecond)
	if s := dc.Sessions(); len(s) != 1 || dc.Overlaps() != 0 {
		t.Errorf("sessions %v, overlaps %d since the outage; want 1 and 0", s, dc.Overlaps())
	}
	if n := len(dc.Identifies()) - before; n != 1 {
		t.Logf("%d identifies since the outage (a lease handed on without overlap)", n)
	}
	for _, r := range rs {
		if err := r.b.Healthy(); err != nil {
			t.Errorf("%s: %v", r.name, err)
		}
	}
}

// TestExplainGatewayCloses: a refused shard names DISCORD_SHARDS; a
// refused token names DISCORD_BOT_TOKEN.
func TestExplainGatewayCloses(t *testing.T) {
	b := &Bot{}
	for _, tc := range []struct {
		code int
		want string
	}{
		{4011, "DISCORD_SHARDS"},
		{4010, "DISCORD_SHARDS"},
		{4004, "DISCORD_BOT_TOKEN was refused"},
		{4000, "code 4000"},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			err := b.explainStart(&websocket.CloseError{Code: tc.code})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want it to say %q", err, tc.want)
			}
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != tc.code {
				t.Errorf("the close error is not wrapped: %v", err)
			}
		})
	}
}

// TestGatewayLeasePinnedShard: a replica pinned to shard 0
// (DISCORD_SHARD_ID) joins one that holds both shards; the first hands a
// shard over for the share's sake, the pinned one cannot take it, so the
// first takes it back after a few retries rather than leave it
// unconnected, and gives the pinned one shard 0.
func TestGatewayLeasePinnedShard(t *testing.T) {
	dc := discordtest.New(discordtest.Options{})
	t.Cleanup(dc.Close)
	rs := replicasPinned(t, dc, [][]int{nil, {0}}, 2)
	if !dc.Wait(3*takeover, func() bool {
		return len(dc.Sessions()) == 2 && slices.Equal(rs[0].shardsOf(), []int{1}) && slices.Equal(rs[1].shardsOf(), []int{0})
	}) {
		t.Fatalf("sessions %v, holders %v; want r1 (pinned) on shard 0, r0 on shard 1", dc.Sessions(), holders(rs))
	}
	if n := dc.Overlaps(); n != 0 {
		t.Errorf("%d sessions of one shard overlapped", n)
	}
	// Stable: nothing moves any more.
	before := len(dc.Identifies())
	time.Sleep(20 * leaseRetry)
	if n := len(dc.Identifies()); n != before || len(dc.Sessions()) != 2 {
		t.Errorf("%d identifies after settling, sessions %v; want none and 2", n-before, dc.Sessions())
	}
}

// TestGatewayShardsOneProcess: without a Leaser (bbolt, one process) Start
// connects every shard before it returns, each identifying its own shard.
func TestGatewayShardsOneProcess(t *testing.T) {
	dc := discordtest.New(discordtest.Options{})
	t.Cleanup(dc.Close)
	b, err := New(Config{Token: dc.Token(), APIURL: dc.URL, Shards: 3}, stubCore{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []discordtest.Session{{Shard: 0, Shards: 3}, {Shard: 1, Shards: 3}, {Shard: 2, Shards: 3}}
	if got := dc.Sessions(); !slices.Equal(got, want) {
		t.Errorf("sessions %v, want %v", got, want)
	}
	// A shard is healthy once its READY is handled, which discordgo does
	// on its own goroutine after Open returns.
	deadline := time.Now().Add(5 * time.Second)
	for err := b.Healthy(); err != nil; err = b.Healthy() {
		if time.Now().After(deadline) {
			t.Errorf("Healthy: %v", err)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := New(Config{Token: dc.Token(), Shards: 2, ShardIDs: []int{2}}, stubCore{}); err == nil || !strings.Contains(err.Error(), "DISCORD_SHARD_ID") {
		t.Errorf("shard 2 of 2: got %v, want an error naming DISCORD_SHARD_ID", err)
	}
}
