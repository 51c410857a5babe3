package kontext

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"kontextbot/kontext/kontexttest"
)

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkQueueOverhead measures the queue's own CPU per job: submit,
// dispatch (a goroutine per running job) and finish, with a Run that does
// nothing, keeping a window of jobs in flight so that most of them wait.
// overhead_us is the whole process's CPU time (user+sys, GC included) over
// the loop divided by the jobs. "positions" adds a Position callback to
// every job, so the notifier recomputes positions as the line moves.
func BenchmarkQueueOverhead(b *testing.B) {
	for _, bc := range []struct {
		name      string
		positions bool
	}{{"plain", false}, {"positions", true}} {
		b.Run(bc.name, func(b *testing.B) {
			const users, window = 20, 128
			q := NewQueue(QueueOptions{Slots: 6, UserRunning: 6, UserWaiting: window, MaxWaiting: window})
			ctx, cancel := context.WithCancel(context.Background()) // a real caller's ctx can end
			defer cancel()
			run := func(context.Context) error { return nil }
			var told atomic.Int64
			var position func(int)
			if bc.positions {
				position = func(int) { told.Add(1) }
			}
			userIDs := make([]string, users)
			for i := range userIDs {
				userIDs[i] = fmt.Sprint("user", i)
			}
			inflight := make([]*Ticket, window)
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for i := range b.N {
				slot := i % window
				if tk := inflight[slot]; tk != nil {
					<-tk.Done()
				}
				tk, err := q.Submit(ctx, Job{ID: "job", User: userIDs[i%users], Run: run, Position: position})
				if err != nil {
					b.Fatalf("Submit: %v", err)
				}
				inflight[slot] = tk
			}
			for _, tk := range inflight {
				if tk != nil {
					<-tk.Done()
				}
			}
			b.StopTimer()
			cpu := cpuTime(b) - cpu0
			if _, err := q.Shutdown(context.Background()); err != nil {
				b.Fatalf("Shutdown: %v", err)
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "overhead_us")
		})
	}
}

// BenchmarkQueueWaiting10k queues 10,000 jobs of 100 users behind six busy
// slots and reports the memory allocated per waiting job (Ticket, Done
// channel, the watch on the Submit ctx, user state, position notifications:
// every job has a Position callback and a cancellable ctx), and the time to
// submit one.
func BenchmarkQueueWaiting10k(b *testing.B) {
	const jobs, users, slots = 10000, 100, 6
	userIDs := make([]string, users)
	for i := range userIDs {
		userIDs[i] = fmt.Sprint("user", i)
	}
	jobIDs := make([]string, jobs)
	for i := range jobIDs {
		jobIDs[i] = fmt.Sprint("job", i)
	}
	block := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	never := func(context.Context) error { return errors.New("a waiting job ran") }
	position := func(int) {}
	b.ReportAllocs()
	var perJob, perSubmit float64
	for range b.N {
		b.StopTimer()
		q := NewQueue(QueueOptions{Slots: slots, UserRunning: slots, UserWaiting: jobs, MaxWaiting: jobs})
		ctx, cancel := context.WithCancel(context.Background())
		for range slots {
			if _, err := q.Submit(ctx, Job{ID: "blocker", User: "blocker", Run: block}); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		b.StartTimer()
		start := time.Now()
		for i := range jobs {
			if _, err := q.Submit(ctx, Job{ID: jobIDs[i], User: userIDs[i%users], Run: never, Position: position}); err != nil {
				b.Fatalf("Submit %d: %v", i, err)
			}
		}
		elapsed := time.Since(start)
		b.StopTimer()
		// Let the notifier tell every job its place before measuring.
		for range 1000 {
			q.mu.Lock()
			busy := q.notifying
			q.mu.Unlock()
			if !busy {
				break
			}
			time.Sleep(time.Millisecond)
		}
		runtime.ReadMemStats(&m1)
		perJob = float64(m1.TotalAlloc-m0.TotalAlloc) / jobs
		perSubmit = float64(elapsed.Nanoseconds()) / jobs
		if st := q.Stats(); st.Waiting != jobs || st.Running != slots {
			b.Fatalf("Stats = %+v, want %d waiting, %d running", st, jobs, slots)
		}
		stopNow, stop := context.WithCancel(context.Background())
		stop() // cancel the blockers at once
		handed, _ := q.Shutdown(stopNow)
		cancel()
		if len(handed) != jobs {
			b.Fatalf("Shutdown handed back %d jobs, want %d", len(handed), jobs)
		}
		b.StartTimer()
	}
	b.ReportMetric(perJob, "B/waiting_job")
	b.ReportMetric(perSubmit, "ns/submit")
}

// The provider benchmarks run the queue against the fake provider through
// the real client. The fake has 6 slots and a prediction takes 0.8 L plus a
// uniform jitter in [0, 0.4 L): L on average (100 ms unless
// KONTEXT_BENCH_L says otherwise, see benchLatency). Images are 64x64 so
// that PNG encoding and decoding stay out of the figures. Each sub-benchmark
// does a fixed amount of work whatever b.N (run it with -benchtime=1x):
//
//   - saturation: 20 users each keep 3 jobs submitted (a new one as soon as
//     one finishes) for provWarmup + provWindow. utilization is completed
//     jobs per second in the window ÷ (6/L), with L the mean run time the
//     fake drew for the predictions that finished in the window (the
//     nominal L plus the sampling noise of its jitter), the completions counted
//     edge-corrected (each successful job counts the fraction of its Run
//     that falls inside the window: the same rate as a raw count, without
//     its ±2-job quantization at the window's edges); jain is Jain's
//     fairness index of the raw counts of jobs each user completed inside
//     the window;
//   - light user: a heavy user queues 100 jobs, then a light user submits
//     one; light_wait_L is the light job's wait (Submit to Run starting) in
//     units of L;
//   - max_inflight and provider_429 are the fake's MaxActive and
//     SlotLimit429 over both phases.
//
// The per-user running cap is lifted out of the measurement in all three
// (UserRunning = provNoCap), so only the policy differs: with a cap, the
// heavy user could not fill the slots (nor take the slot a job gives back
// while it downloads its result), the light user would find a free one,
// and light_wait_L would flatter every variant. With 20 busy users the cap
// changes nothing in the saturation phase. fair is round-robin; fifo6 is a
// plain FIFO with 6 workers; fifo1 one worker, like most bots.
const (
	provSlots   = 6
	provUsers   = 20
	provPerUser = 3
	provWarmup  = 500 * time.Millisecond
	provWindow  = 6 * time.Second
	provHeavy   = 100
	provNoCap   = 1 << 20
)

// provLatency and provJitter give the fake's run time, fixed plus uniform
// jitter; provL is its mean. L defaults to 100 ms; KONTEXT_BENCH_L=200ms
// (for example) scales both parts. Each job also spends a fixed few
// milliseconds of loopback HTTP between one prediction ending and the
// next starting, a share of L that shrinks as L grows (CometAPI's real L
// is 3-10 s).
var provLatency, provJitter, provL = benchLatency()

func benchLatency() (latency, jitter, mean time.Duration) {
	mean = 100 * time.Millisecond
	if v, err := time.ParseDuration(os.Getenv("KONTEXT_BENCH_L")); err == nil && v > 0 {
		mean = v
	}
	return mean * 4 / 5, mean * 2 / 5, mean
}

func BenchmarkQueueProvider(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts QueueOptions
	}{
		{"fair", QueueOptions{Slots: 6, UserRunning: provNoCap, Policy: RoundRobin}},
		{"fifo6", QueueOptions{Slots: 6, UserRunning: provNoCap, Policy: FIFO}},
		{"fifo1", QueueOptions{Slots: 1, UserRunning: provNoCap, Policy: FIFO}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const key = "bench-key"
			srv := kontexttest.NewServer(kontexttest.Options{APIKey: key, Slots: provSlots,
				Latency: provLatency, Jitter: provJitter, Pixels: 64 * 64})
			defer srv.Close()
			client, err := NewClient(Config{BaseURL: srv.URL, APIKey: key, Model: ModelMax})
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
			opts := bc.opts
			opts.UserWaiting = provHeavy + 10 // room for the heavy user's batch
			opts.MaxWaiting = provHeavy + provUsers*provPerUser

			b.ResetTimer()
			utilization, jain, busy, meanRun := provSaturate(b, client, srv, opts)
			lightWait := provLightWait(b, client, opts)
			b.StopTimer()

			// Not metrics, to keep the units above the only ones: how much
			// of the gap to utilization 1 is the queue's (slots idle
			// between jobs) and how much is a job's own time beyond L.
			b.Logf("slots busy %.4f of the window; mean Run %.1fms for L = %v", busy,
				float64(meanRun)/float64(time.Millisecond), provL)
			st := srv.Stats()
			b.ReportMetric(utilization, "utilization")
			b.ReportMetric(float64(st.MaxActive), "max_inflight")
			b.ReportMetric(float64(st.SlotLimit429), "provider_429")
			b.ReportMetric(jain, "jain")
			b.ReportMetric(float64(lightWait)/float64(provL), "light_wait_L")
		})
	}
}

var provSeed atomic.Int64

// provJob is one image through the client.
func provJob(client *Client, id, user string, started func(), finished func(error)) Job {
	return Job{ID: id, User: user, Run: func(ctx context.Context) error {
		if started != nil {
			started()
		}
		seed := provSeed.Add(1)
		_, err := client.Run(ctx, Request{Prompt: "a lighthouse at dusk, " + id, Seed: &seed})
		if finished != nil {
			finished(err)
		}
		return err
	}}
}

// provSaturate keeps every user busy and measures the window. busy is the
// fraction of slot time in the window spent inside Run, meanRun the mean
// duration of the Runs that ended in the window.
func provSaturate(b *testing.B, client *Client, srv *kontexttest.Server, opts QueueOptions) (utilization, jain, busy float64, meanRun time.Duration) {
	q := NewQueue(opts)
	counts := make([]atomic.Int64, provUsers)
	var failures, busyNanos, runNanos, runs atomic.Int64
	var mu sync.Mutex
	var completed float64 // completions in the window, edge-corrected
	var firstErr atomic.Value
	stop := make(chan struct{})
	start := time.Now()
	from, to := start.Add(provWarmup), start.Add(provWarmup+provWindow)
	// The fake's latency as really served in the window: the mean run time
	// it drew for the predictions that finished there. Dividing by it
	// rather than by the nominal L keeps the jitter's sampling noise (a
	// few hundred draws) out of utilization.
	atFrom := make(chan kontexttest.Stats, 1)
	time.AfterFunc(time.Until(from), func() { atFrom <- srv.Stats() })
	var wg sync.WaitGroup
	for u := range provUsers {
		user := fmt.Sprint("user", u)
		for w := range provPerUser {
			wg.Go(func() {
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					var began time.Time
					job := provJob(client, fmt.Sprint(user, "/", w, "/", n), user, func() { began = time.Now() }, func(err error) {
						now := time.Now()
						end, beg := now, began
						if end.After(to) {
							end = to
						}
						if beg.Before(from) {
							beg = from
						}
						overlap := end.Sub(beg)
						if overlap > 0 {
							busyNanos.Add(int64(overlap))
						}
						if err != nil {
							failures.Add(1)
							firstErr.CompareAndSwap(nil, err)
							return
						}
						if overlap > 0 {
							mu.Lock()
							completed += float64(overlap) / float64(now.Sub(began))
							mu.Unlock()
						}
						if !now.Before(from) && now.Before(to) {
							counts[u].Add(1)
							runNanos.Add(int64(now.Sub(began)))
							runs.Add(1)
						}
					})
					tk, err := q.Submit(context.Background(), job)
					if errors.Is(err, ErrShutdown) {
						return
					}
					if err != nil {
						b.Errorf("Submit: %v", err)
						return
					}
					<-tk.Done()
				}
			})
		}
	}
	time.Sleep(time.Until(to)) // the measurement window itself
	atTo := srv.Stats()
	close(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := q.Shutdown(ctx); err != nil { // running jobs finish normally
		b.Fatalf("Shutdown: %v", err)
	}
	wg.Wait()
	if n := failures.Load(); n > 0 {
		b.Fatalf("%d jobs failed, the first with: %v", n, firstErr.Load())
	}
	var sum, sumSq float64
	for i := range counts {
		x := float64(counts[i].Load())
		sum += x
		sumSq += x * x
	}
	if sum == 0 {
		b.Fatalf("no job completed in the window")
	}
	rate := completed / provWindow.Seconds()
	first := <-atFrom
	served := (atTo.RunTime - first.RunTime) / time.Duration(max(atTo.Runs-first.Runs, 1))
	ceiling := float64(provSlots) / served.Seconds()
	busy = float64(busyNanos.Load()) / (float64(opts.Slots) * float64(provWindow))
	meanRun = time.Duration(runNanos.Load() / runs.Load())
	return rate / ceiling, sum * sum / (float64(provUsers) * sumSq), busy, meanRun
}

// provLightWait measures how long a light user's single job waits behind a
// heavy user's batch.
func provLightWait(b *testing.B, client *Client, opts QueueOptions) time.Duration {
	q := NewQueue(opts)
	for i := range provHeavy {
		if _, err := q.Submit(context.Background(), provJob(client, fmt.Sprint("heavy/", i), "heavy", nil, nil)); err != nil {
			b.Fatalf("Submit heavy %d: %v", i, err)
		}
	}
	var startedAt time.Time
	submitted := time.Now()
	tk, err := q.Submit(context.Background(), provJob(client, "light", "light", func() { startedAt = time.Now() }, nil))
	if err != nil {
		b.Fatalf("Submit light: %v", err)
	}
	<-tk.Done()
	if err := tk.Err(); err != nil {
		b.Fatalf("light job: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := q.Shutdown(ctx); err != nil { // hands back the heavy rest; running ones finish
		b.Fatalf("Shutdown: %v", err)
	}
	return startedAt.Sub(submitted)
}

// BenchmarkQueueTwoModels runs the queue against the fake provider with
// BFL's limits: 24 active tasks per key, of which flux-kontext-max may
// use 6 (the fake answers 429 past either), and the queue's pools set
// alike (Slots 24, Pools max 6). 20 users each keep 2 max and 2 pro jobs
// submitted for provWarmup + provWindow, so both models always have more
// demand than room. Reported:
//
//   - utilization_max: max jobs completed per second in the window ÷
//     (6/L), L the fake's mean run time there (as BenchmarkQueueProvider);
//   - utilization_account: all jobs per second ÷ (24/L);
//   - utilization_pro: pro jobs per second ÷ (18/L), the account's slots
//     max leaves to it;
//   - max_inflight_max, max_inflight_pro, max_inflight: the fake's highest
//     counts of active max and pro predictions and of all of them (at
//     their limits: 6, 18 or more, 24);
//   - provider_429: the fake's slot-limit 429s (0: the queue never sent
//     more than either limit allows);
//   - jain: Jain's index of the jobs each user completed in the window.
func BenchmarkQueueTwoModels(b *testing.B) {
	const (
		key      = "bench-key"
		slots    = 24
		maxSlots = 6
		users    = 20
		perModel = 2
	)
	srv := kontexttest.NewServer(kontexttest.Options{APIKey: key, Slots: slots, ModelSlots: map[string]int{ModelMax: maxSlots},
		Latency: provLatency, Jitter: provJitter, Pixels: 64 * 64})
	defer srv.Close()
	client, err := NewClient(Config{BaseURL: srv.URL, APIKey: key, Model: ModelMax})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	q := NewQueue(QueueOptions{Slots: slots, Pools: map[string]int{ModelMax: maxSlots}, UserRunning: provNoCap,
		UserWaiting: 4 * perModel, MaxWaiting: users * 2 * perModel})

	b.ResetTimer()
	start := time.Now()
	from, to := start.Add(provWarmup), start.Add(provWarmup+provWindow)
	atFrom := make(chan kontexttest.Stats, 1)
	time.AfterFunc(time.Until(from), func() { atFrom <- srv.Stats() })
	var mu sync.Mutex
	completed := map[string]float64{} // per model, edge-corrected
	counts := make([]int, users)
	var failures atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for u := range users {
		user := fmt.Sprint("user", u)
		for _, model := range []string{ModelMax, ModelPro} {
			for w := range perModel {
				wg.Go(func() {
					for n := 0; ; n++ {
						select {
						case <-stop:
							return
						default:
						}
						id := fmt.Sprint(user, "/", model, "/", w, "/", n)
						job := Job{ID: id, User: user, Pool: PoolOf(model), Run: func(ctx context.Context) error {
							began := time.Now()
							seed := provSeed.Add(1)
							_, err := client.Run(ctx, Request{Prompt: "a lighthouse at dusk, " + id, Model: model, Seed: &seed})
							now := time.Now()
							if err != nil {
								failures.Add(1)
								firstErr.CompareAndSwap(nil, err)
								return err
							}
							end, beg := now, began
							if end.After(to) {
								end = to
							}
							if beg.Before(from) {
								beg = from
							}
							if overlap := end.Sub(beg); overlap > 0 {
								mu.Lock()
								completed[model] += float64(overlap) / float64(now.Sub(began))
								if !now.Before(from) && now.Before(to) {
									counts[u]++
								}
								mu.Unlock()
							}
							return nil
						}}
						tk, err := q.Submit(context.Background(), job)
						if errors.Is(err, ErrShutdown) {
							return
						}
						if err != nil {
							b.Errorf("Submit: %v", err)
							return
						}
						<-tk.Done()
					}
				})
			}
		}
	}
	time.Sleep(time.Until(to))
	atTo := srv.Stats()
	close(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := q.Shutdown(ctx); err != nil {
		b.Fatalf("Shutdown: %v", err)
	}
	wg.Wait()
	b.StopTimer()
	if n := failures.Load(); n > 0 {
		b.Fatalf("%d jobs failed, the first with: %v", n, firstErr.Load())
	}
	first := <-atFrom
	served := (atTo.RunTime - first.RunTime) / time.Duration(max(atTo.Runs-first.Runs, 1))
	rate := func(model string) float64 { return completed[model] / provWindow.Seconds() }
	var sum, sumSq float64
	for _, c := range counts {
		sum += float64(c)
		sumSq += float64(c) * float64(c)
	}
	st := srv.Stats()
	b.Logf("mean served run time %.1fms for L = %v; jobs in the window: max %.0f, pro %.0f", float64(served)/float64(time.Millisecond),
		provL, completed[ModelMax], completed[ModelPro])
	b.ReportMetric(rate(ModelMax)/(float64(maxSlots)/served.Seconds()), "utilization_max")
	b.ReportMetric(rate(ModelPro)/(float64(slots-maxSlots)/served.Seconds()), "utilization_pro")
	b.ReportMetric((rate(ModelMax)+rate(ModelPro))/(float64(slots)/served.Seconds()), "utilization_account")
	b.ReportMetric(float64(st.MaxActiveModel[ModelMax]), "max_inflight_max")
	b.ReportMetric(float64(st.MaxActiveModel[ModelPro]), "max_inflight_pro")
	b.ReportMetric(float64(st.MaxActive), "max_inflight")
	b.ReportMetric(float64(st.SlotLimit429), "provider_429")
	b.ReportMetric(sum*sum/(float64(users)*sumSq), "jain")
}
