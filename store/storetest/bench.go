package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"kontextbot/bot"
)

// BenchConvs is how many conversations the head benchmarks of every
// backend pre-fill, so their figures stand side by side.
const BenchConvs = 100_000

// BenchKey is the key of pre-filled conversation i: 50 workspaces, one
// channel each, all in a thread. A backend's prefill writes BenchConvs of
// them, each with two turns "a" and "b" (the head).
func BenchKey(i int) bot.ConvKey {
	return bot.ConvKey{Platform: "discord", Workspace: fmt.Sprintf("g%d", i%50), Channel: fmt.Sprintf("c%d", i), Thread: "t"}
}

// BenchHeadRead reads random pre-filled conversations out of n, and
// reports the latency's 50th and 99th percentiles.
func BenchHeadRead(b *testing.B, st bot.Store, n int) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	var lat []time.Duration
	for b.Loop() {
		key := BenchKey(rng.IntN(n))
		start := time.Now()
		c, err := st.Conversation(ctx, key)
		lat = append(lat, time.Since(start))
		if err != nil || c.Head == "" {
			b.Fatalf("Conversation(%v): %v", key, err)
		}
	}
	ReportLatency(b, lat)
}

// BenchHeadWrite moves the head (SetHead, a durable write) of random
// pre-filled conversations out of n between "a" and "b", and reports the
// latency's 50th and 99th percentiles.
func BenchHeadWrite(b *testing.B, st bot.Store, n int) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	var lat []time.Duration
	i := 0
	for b.Loop() {
		key := BenchKey(rng.IntN(n))
		id := "a"
		if i++; i%2 == 0 {
			id = "b"
		}
		start := time.Now()
		_, err := st.SetHead(ctx, key, id)
		lat = append(lat, time.Since(start))
		if err != nil {
			b.Fatalf("SetHead(%v): %v", key, err)
		}
	}
	ReportLatency(b, lat)
}

// ReportLatency reports the 50th and 99th percentiles of d in
// microseconds (p50_us, p99_us).
func ReportLatency(b *testing.B, d []time.Duration) {
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
