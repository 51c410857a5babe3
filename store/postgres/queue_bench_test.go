package postgres

import (
	"context"
	"fmt"
	"kontextbot/store/postgres/pgtest"
	"slices"
	"testing"
	"time"
)

// BenchmarkQueueDispatch measures dispatch_ms: the time from a replica
// starting to give a slot back (Release) to another replica, woken by the
// notification, holding the next job (Next returned it). Three replicas,
// one slot, so every job start follows a release; each replica waits on
// Listen and asks Next when woken, as a replica's dispatcher would.
func BenchmarkQueueDispatch(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u := pgtest.Schema(b)
	type grant struct {
		q  *Queue
		id string
		at time.Time
	}
	got := make(chan grant, 16)
	qs := make([]*Queue, 3)
	for i := range qs {
		db, err := Open(ctx, u, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
		q := db.Queue(fmt.Sprintf("r%d", i), QueueOptions{Slots: 1, UserWaiting: 10, MaxWaiting: 1000})
		qs[i] = q
		wake := q.Listen(ctx)
		go func() {
			for range wake {
				for {
					j, err := q.Next(ctx)
					if err != nil || j == nil {
						break
					}
					got <- grant{q, j.ID, time.Now()}
				}
			}
		}()
	}
	n := 0
	submit := func() {
		if _, err := qs[n%3].Submit(ctx, fmt.Sprintf("j%d", n), fmt.Sprintf("u%d", n%7), ""); err != nil {
			b.Fatal(err)
		}
		n++
	}
	submit()
	cur := <-got
	var lat []time.Duration
	for b.Loop() {
		submit()
		// Let the submit's own wake-ups pass: they find the slot busy.
		time.Sleep(2 * time.Millisecond)
		start := time.Now()
		if ok, err := cur.q.Release(ctx, cur.id); err != nil || !ok {
			b.Fatalf("Release(%s): %v, %v", cur.id, ok, err)
		}
		cur = <-got
		lat = append(lat, cur.at.Sub(start))
	}
	b.StopTimer()
	reportMs(b, lat)
}

// reportMs reports the 50th and 99th percentile of d in milliseconds.
func reportMs(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	pct := func(p float64) float64 { return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds()) / 1e3 }
	b.ReportMetric(pct(0.50), "dispatch_p50_ms")
	b.ReportMetric(pct(0.99), "dispatch_p99_ms")
}
