package postgres_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
	"kontextbot/store/postgres"
	"kontextbot/store/postgres/pgtest"
)

// BenchmarkSharedQueueProvider is kontext's BenchmarkQueueProvider run on
// the shared queue through the bot's wiring: 3 replicas on one database,
// each a postgres.Scheduler (the bot.Scheduler the app uses) whose RunFunc
// makes the job's image through its own kontext client, against one fake
// provider with 6 slots, 64x64 images and a run time of 0.8 L plus up to
// 0.4 L of jitter (L = 100 ms, or KONTEXT_BENCH_L). Only the store I/O of
// bot.Core (loading the job, storing the image) is left out, so that the
// figures are the queue's. Run it with -benchtime=1x:
//
//   - saturation: 20 users (user u submits on replica u mod 3) each keep 3
//     jobs submitted for a warm-up and a 6 s window; utilization, jain and
//     max_inflight/provider_429 as in kontext's benchmark;
//   - dispatch_ms: in that window, from a slot freeing on one replica to
//     the next run starting (about to send its create) on any replica, each
//     start matched with the oldest unmatched free slot; p50 and p99. A
//     slot frees when the job's prediction is final: the client (with
//     Prefer: wait) has its create answered with the finished prediction,
//     calls OnCreated, and gives the slot back (kontext.WithSlotRelease)
//     before downloading;
//   - light user: a heavy user queues 100 jobs on replica 0, then a light
//     user submits one on replica 1; light_wait_L is its wait in L.
func BenchmarkSharedQueueProvider(b *testing.B) {
	latency, jitter, L := sharedBenchLatency()
	srv := kontexttest.NewServer(kontexttest.Options{APIKey: "k", Slots: 6, Latency: latency, Jitter: jitter, Pixels: 64 * 64})
	defer srv.Close()
	opts := postgres.QueueOptions{Slots: 6, UserRunning: 1 << 20, UserWaiting: 110, MaxWaiting: 300, Lease: 10 * time.Second}
	benchStarted.Clear()
	b.ResetTimer()
	util, jain, dispatch := sharedSaturate(b, srv, opts)
	light := sharedLightWait(b, srv, opts)
	b.StopTimer()
	st := srv.Stats()
	b.ReportMetric(util, "utilization")
	b.ReportMetric(float64(st.MaxActive), "max_inflight")
	b.ReportMetric(float64(st.SlotLimit429), "provider_429")
	b.ReportMetric(jain, "jain")
	b.ReportMetric(float64(light)/float64(L), "light_wait_L")
	slices.Sort(dispatch)
	pct := func(p float64) float64 {
		return float64(dispatch[min(len(dispatch)-1, int(p*float64(len(dispatch))))].Microseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "dispatch_p50_ms")
	b.ReportMetric(pct(0.99), "dispatch_p99_ms")
}

func sharedBenchLatency() (latency, jitter, mean time.Duration) {
	mean = 100 * time.Millisecond
	if v, err := time.ParseDuration(os.Getenv("KONTEXT_BENCH_L")); err == nil && v > 0 {
		mean = v
	}
	return mean * 4 / 5, mean * 2 / 5, mean
}

// benchReplicas starts n schedulers on a fresh schema, each running jobs
// with run (given the replica's client), and returns them and a stop.
func benchReplicas(b *testing.B, n int, srv *kontexttest.Server, opts postgres.QueueOptions,
	run func(client *kontext.Client, ctx context.Context, id string) error) ([]*postgres.Scheduler, func()) {
	u := pgtest.Schema(b)
	var scheds []*postgres.Scheduler
	var closers []func()
	for i := range n {
		db, err := postgres.Open(context.Background(), u, postgres.Options{})
		if err != nil {
			b.Fatal(err)
		}
		client, err := kontext.NewClient(kontext.Config{BaseURL: srv.URL, APIKey: "k", Model: kontext.ModelMax})
		if err != nil {
			b.Fatal(err)
		}
		s := db.Scheduler(fmt.Sprintf("r%d", i), opts)
		s.Start(func(ctx context.Context, id string) error { return run(client, ctx, id) })
		scheds = append(scheds, s)
		closers = append(closers, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := s.Close(ctx); err != nil {
				b.Errorf("close: %v", err)
			}
			client.Close()
			db.Close()
		})
	}
	return scheds, func() {
		for _, c := range closers {
			c()
		}
	}
}

var benchSeed atomic.Int64

// benchStarted maps the ids whose image was started to their prediction
// id, once known: a job handed over while the replicas stop at the end of
// a phase is followed by its prediction, as the bot does, not created
// again.
var benchStarted sync.Map

func benchImage(ctx context.Context, client *kontext.Client, id string, final func()) error {
	if v, again := benchStarted.LoadOrStore(id, ""); again {
		if pid := v.(string); pid != "" {
			_, err := client.Resume(ctx, pid)
			return err
		}
		return nil
	}
	seed := benchSeed.Add(1)
	// As the bot does, a create in flight is not cut short by a handover
	// (here, not at all).
	_, err := client.Run(context.WithoutCancel(ctx), kontext.Request{Prompt: "a lighthouse at dusk, " + id, Seed: &seed,
		OnCreated: func(pid string) {
			benchStarted.Store(id, pid)
			if final != nil {
				final() // Prefer: wait: the create answers once the prediction is final
			}
		}})
	return err
}

func sharedSaturate(b *testing.B, srv *kontexttest.Server, opts postgres.QueueOptions) (utilization, jain float64, dispatch []time.Duration) {
	const users, perUser = 20, 3
	const warmup, window = time.Second, 6 * time.Second
	var mu sync.Mutex
	done := map[string]chan error{}
	var ends []time.Time // run ends not yet matched with a start
	counts := make([]atomic.Int64, users)
	var completed float64
	start := time.Now()
	from, to := start.Add(warmup), start.Add(warmup+window)
	atFrom := make(chan kontexttest.Stats, 1)
	time.AfterFunc(time.Until(from), func() { atFrom <- srv.Stats() })
	scheds, stop := benchReplicas(b, 3, srv, opts, func(client *kontext.Client, ctx context.Context, id string) error {
		began := time.Now()
		mu.Lock()
		if len(ends) > 0 {
			if began.After(from) && began.Before(to) {
				dispatch = append(dispatch, began.Sub(ends[0]))
			}
			ends = ends[1:]
		}
		mu.Unlock()
		err := benchImage(ctx, client, id, func() {
			mu.Lock()
			ends = append(ends, time.Now())
			mu.Unlock()
		})
		now := time.Now()
		mu.Lock()
		if err == nil {
			end, beg := now, began
			if end.After(to) {
				end = to
			}
			if beg.Before(from) {
				beg = from
			}
			if overlap := end.Sub(beg); overlap > 0 {
				completed += float64(overlap) / float64(now.Sub(began))
			}
		}
		ch := done[id]
		delete(done, id)
		mu.Unlock()
		if ch != nil {
			ch <- err
		}
		return err
	})
	stopping := make(chan struct{})
	var wg sync.WaitGroup
	var failures atomic.Int64
	for u := range users {
		for w := range perUser {
			wg.Go(func() {
				for n := 0; ; n++ {
					select {
					case <-stopping:
						return
					default:
					}
					id := fmt.Sprintf("u%d-%d-%d", u, w, n)
					ch := make(chan error, 1)
					mu.Lock()
					done[id] = ch
					mu.Unlock()
					if err := scheds[u%3].Submit(context.Background(), bot.Slot{ID: id, User: fmt.Sprint("user", u)}); err != nil {
						b.Errorf("Submit: %v", err)
						return
					}
					select {
					case err := <-ch:
						if err != nil {
							failures.Add(1)
						}
						if t := time.Now(); !t.Before(from) && t.Before(to) && err == nil {
							counts[u].Add(1)
						}
					case <-stopping:
						return
					}
				}
			})
		}
	}
	time.Sleep(time.Until(to))
	atTo := srv.Stats()
	close(stopping)
	wg.Wait()
	stop()
	b.Logf("429s: %d by the window's end, %d after the replicas stopped", atTo.SlotLimit429, srv.Stats().SlotLimit429)
	if n := failures.Load(); n > 0 {
		b.Fatalf("%d jobs failed", n)
	}
	var sum, sumSq float64
	for i := range counts {
		x := float64(counts[i].Load())
		sum += x
		sumSq += x * x
	}
	if sum == 0 || len(dispatch) == 0 {
		b.Fatal("no job completed in the window")
	}
	first := <-atFrom
	served := (atTo.RunTime - first.RunTime) / time.Duration(max(atTo.Runs-first.Runs, 1))
	ceiling := float64(opts.Slots) / served.Seconds()
	mu.Lock()
	defer mu.Unlock()
	return completed / window.Seconds() / ceiling, sum * sum / (float64(users) * sumSq), dispatch
}

func sharedLightWait(b *testing.B, srv *kontexttest.Server, opts postgres.QueueOptions) time.Duration {
	started := make(chan time.Time, 1)
	scheds, stop := benchReplicas(b, 3, srv, opts, func(client *kontext.Client, ctx context.Context, id string) error {
		if id == "light" {
			select {
			case started <- time.Now():
			default:
			}
		}
		return benchImage(ctx, client, id, nil)
	})
	defer stop()
	for i := range 100 {
		if err := scheds[0].Submit(context.Background(), bot.Slot{ID: fmt.Sprint("heavy-", i), User: "heavy"}); err != nil {
			b.Fatal(err)
		}
	}
	submitted := time.Now()
	if err := scheds[1].Submit(context.Background(), bot.Slot{ID: "light", User: "light"}); err != nil {
		b.Fatal(err)
	}
	return (<-started).Sub(submitted)
}
