package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"kontextbot/bot"
	"kontextbot/store/storetest"
)

// benchConvs is how many conversations the latency benchmarks pre-fill, as
// the bbolt store's benchmarks do.
const benchConvs = 100_000

func benchKey(i int) bot.ConvKey {
	return bot.ConvKey{Platform: "discord", Workspace: fmt.Sprintf("g%d", i%50), Channel: fmt.Sprintf("c%d", i), Thread: "t"}
}

// prefill writes n conversations of two turns ("a", head "b") that share
// one 1 KB image, like the bbolt benchmarks' prefill, with COPY.
func prefill(b *testing.B, db *DB, n int) {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	data := make([]byte, 1024)
	copy(data, "shared bench image")
	sha := storetest.SHA(data)
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	if _, err := db.pool.Exec(ctx, `INSERT INTO images (sha256, data, refs) VALUES ($1, $2, $3)`, sha, data, 2*n); err != nil {
		b.Fatal(err)
	}
	rows := make([][]any, 0, n)
	for i := range n {
		var turns []bot.Turn
		for _, id := range []string{"a", "b"} {
			t := storetest.Turn(id)
			t.SHA256, t.Bytes = sha, len(data)
			t.Messages = []string{fmt.Sprintf("%d%s", i, id)}
			turns = append(turns, t)
		}
		js, err := json.Marshal(turns)
		if err != nil {
			b.Fatal(err)
		}
		k := benchKey(i)
		rows = append(rows, []any{k.Platform, k.Workspace, k.Channel, k.Thread, "b", js, t0})
	}
	_, err := db.pool.CopyFrom(ctx, pgx.Identifier{"conversations"},
		[]string{"platform", "workspace", "channel", "thread", "head", "turns", "updated"}, pgx.CopyFromRows(rows))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := db.pool.Exec(ctx, `ANALYZE conversations`); err != nil {
		b.Fatal(err)
	}
	b.Logf("prefilled %d conversations in %v", n, time.Since(start).Round(time.Millisecond))
}

// reportLatency reports the 50th and 99th percentile of d in microseconds.
func reportLatency(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	pct := func(p float64) float64 {
		return float64(d[min(len(d)-1, int(p*float64(len(d))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50_us")
	b.ReportMetric(pct(0.99), "p99_us")
}

// BenchmarkConversationRead reads random conversations out of 100,000.
func BenchmarkConversationRead(b *testing.B) {
	ctx := context.Background()
	db := openTest(b, Options{})
	prefill(b, db, benchConvs)
	rng := rand.New(rand.NewPCG(1, 2))
	var lat []time.Duration
	for b.Loop() {
		key := benchKey(rng.IntN(benchConvs))
		start := time.Now()
		c, err := db.Conversation(ctx, key)
		lat = append(lat, time.Since(start))
		if err != nil || c.Head == "" {
			b.Fatalf("Conversation(%v): %v", key, err)
		}
	}
	reportLatency(b, lat)
}

// BenchmarkHeadWrite moves the head (SetHead: one transaction that locks
// the row, reads it and writes it, committed durably) of random
// conversations out of 100,000.
func BenchmarkHeadWrite(b *testing.B) {
	ctx := context.Background()
	db := openTest(b, Options{})
	prefill(b, db, benchConvs)
	rng := rand.New(rand.NewPCG(3, 4))
	var lat []time.Duration
	i := 0
	for b.Loop() {
		key := benchKey(rng.IntN(benchConvs))
		id := "a"
		if i++; i%2 == 0 {
			id = "b"
		}
		start := time.Now()
		_, err := db.SetHead(ctx, key, id)
		lat = append(lat, time.Since(start))
		if err != nil {
			b.Fatalf("SetHead(%v): %v", key, err)
		}
	}
	reportLatency(b, lat)
}
