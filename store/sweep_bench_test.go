package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"kontextbot/bot"
)

// fixture describes a store file for the maintenance benchmarks, relative
// to a reference time now: conversations and finished jobs are either
// recent (touched an hour before now) or idle (40 days before now, past a
// 30-day retention), claims unexpired or expired.
type fixture struct {
	convs, idleConvs   int // conversations in all, and how many of them are idle
	jobs, idleJobs     int // finished jobs in all, and how many are idle
	live               int // waiting jobs (recent)
	claims, oldClaims  int // claims in all, and how many have expired
	now                time.Time
	recent, idle, keep time.Time // recent and idle Updated times, and the sweep cutoff
}

func newFixture(f fixture) fixture {
	f.now = time.Now()
	f.recent = f.now.Add(-time.Hour)
	f.idle = f.now.Add(-40 * 24 * time.Hour)
	f.keep = f.now.Add(-30 * 24 * time.Hour)
	return f
}

// fixtureKey is conversation i of a fixture; keys sort in i order so the
// bulk loader appends.
func fixtureKey(i int) bot.ConvKey {
	return bot.ConvKey{Platform: "discord", Workspace: "g", Channel: fmt.Sprintf("c%07d", i), Thread: "t"}
}

// fixtureConvIdle reports whether conversation i is idle: idle ones are
// spread evenly through the key space.
func (f fixture) convIdle(i int) bool {
	return f.idleConvs > 0 && i%(f.convs/f.idleConvs) == 0 && i/(f.convs/f.idleConvs) < f.idleConvs
}

func (f fixture) jobIdle(i int) bool {
	return f.idleJobs > 0 && i%(f.jobs/f.idleJobs) == 0 && i/(f.jobs/f.idleJobs) < f.idleJobs
}

// build writes the fixture into a new store at path with a fast bulk
// loader: many records per transaction, through the same helpers the
// store's writes use (so every index is maintained), then closes it.
// Conversation i has two turns: "a" on an image all conversations share,
// and the head "b" on an image of its own; each turn is posted as one
// message.
func (f fixture) build(tb testing.TB, path string) {
	tb.Helper()
	start := time.Now()
	db, err := Open(path, Options{Now: func() time.Time { return f.now }})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	db.bolt.NoSync = true // a fixture: one fsync at Close is enough
	defer func() { db.bolt.NoSync = false; _ = db.bolt.Sync() }()
	shared := make([]byte, 1024)
	copy(shared, "shared fixture image")
	sharedSHA := shaOf(shared)
	own := make([]byte, 256)
	copy(own, "own fixture image")
	const perTx = 20_000
	for lo := 0; lo < f.convs; lo += perTx {
		err := db.bolt.Update(func(tx *bbolt.Tx) error {
			tx.Bucket(bucketConvs).FillPercent = 0.9
			for i := lo; i < min(lo+perTx, f.convs); i++ {
				upd := f.recent
				if f.convIdle(i) {
					upd = f.idle
				}
				c := &bot.Conversation{Key: fixtureKey(i), Head: "b", Updated: upd}
				binary.BigEndian.PutUint64(own[248:], uint64(i))
				for _, tc := range []struct {
					id   string
					data []byte
					sha  string
				}{{"a", shared, sharedSHA}, {"b", own, ""}} {
					t := turn(tc.id)
					if tc.sha == "" {
						tc.sha = shaOf(tc.data)
					}
					t.SHA256, t.Bytes = tc.sha, len(tc.data)
					c.Turns = append(c.Turns, t)
					if _, err := addRef(tx, tc.sha, tc.data); err != nil {
						return err
					}
					if _, err := attachMessage(tx, c, tc.id, fmt.Sprintf("m%07d%s", i, tc.id)); err != nil {
						return err
					}
				}
				if err := fixturePutConv(tx, c); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	seed := int64(7)
	job := func(i int, state bot.JobState, upd time.Time) *bot.Job {
		return &bot.Job{ID: fmt.Sprintf("job%08d", i), Kind: bot.KindEdit, Conv: fixtureKey(i % max(f.convs, 1)),
			User: fmt.Sprintf("U%05d", i%1000), UserName: "someone", Prompt: "make the sky a little more orange, please",
			Model: "flux-kontext-max", Aspect: "1:1", Seed: seed, Base: "b",
			Origin:  map[string]string{"channel": "C0123456", "status": "1712345678.123456"},
			State:   state,
			Result:  "turn-" + fmt.Sprint(i),
			Created: upd.Add(-time.Minute), Updated: upd}
	}
	total := f.jobs + f.live
	for lo := 0; lo < total; lo += 4 * perTx {
		err := db.bolt.Update(func(tx *bbolt.Tx) error {
			tx.Bucket(bucketJobs).FillPercent = 0.9
			for i := lo; i < min(lo+4*perTx, total); i++ {
				var j *bot.Job
				switch {
				case i >= f.jobs:
					j = job(i, bot.JobWaiting, f.recent)
					j.Result = ""
				case f.jobIdle(i):
					j = job(i, bot.JobDelivered, f.idle)
				default:
					j = job(i, bot.JobDelivered, f.recent)
				}
				if err := putJob(tx, j); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	err = db.bolt.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketClaims)
		for i := range f.claims {
			exp := f.now.Add(time.Hour)
			if i < f.oldClaims {
				exp = f.now.Add(-time.Hour)
			}
			if err := b.Put(fmt.Appendf(nil, "discord/interaction/%09d", i), binary.BigEndian.AppendUint64(nil, uint64(exp.UnixNano()))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Logf("fixture: %d conversations (%d idle), %d finished jobs (%d idle), %d live, %d claims in %v",
		f.convs, f.idleConvs, f.jobs, f.idleJobs, f.live, f.claims, time.Since(start).Round(time.Millisecond))
}

// percentile is the p-th percentile of d (sorted in place).
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(p*float64(len(d))))]
}

// copyFile copies the fixture template so each iteration starts afresh.
func copyFile(tb testing.TB, from, to string) {
	tb.Helper()
	src, err := os.Open(from)
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		tb.Fatal(err)
	}
	// On disk before the clock starts, as a file is at a real start: else
	// the first fsync of Open would write the whole copy out.
	if err := dst.Sync(); err != nil {
		tb.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkSweep100k runs the retention sweep over 100,000 conversations
// (10,000 of them idle), 100,000 finished jobs (10,000 idle) and 10,000
// claims (5,000 expired) while two writers keep writing: one moves the
// head of random recent conversations (SetHead), one records new jobs
// (PutJob), each a durable write. max_write_wait_ms and p99_write_wait_ms
// are the longest and 99th percentile of those writes while the sweep ran
// (each write's own fsync included); max_write_nosweep_ms and
// p99_write_nosweep_ms the same for the 3 s before the sweep, the same
// writers alone (the baseline: what the machine's fsync costs).
// max_sweep_tx_ms and p99_sweep_tx_ms are how long the sweep's
// transactions held the write lock, commit included: the longest a write
// can wait for maintenance; max_sweep_work_ms is the longest work inside
// one before its commit. (Before the change the whole sweep was one
// transaction, so max_write_wait_ms stood for it.) sweep_txs is how many
// transactions the sweep took, sweep_ms its duration. Each iteration starts from a fresh
// copy of the fixture (built once per call; run it with -benchtime=1x).
func BenchmarkSweep100k(b *testing.B) {
	ctx := context.Background()
	f := newFixture(fixture{convs: 100_000, idleConvs: 10_000, jobs: 100_000, idleJobs: 10_000, live: 10,
		claims: 10_000, oldClaims: 5_000})
	dir := b.TempDir()
	tmpl := filepath.Join(dir, "template.db")
	f.build(b, tmpl)
	var sweepTime time.Duration
	var waits, alone, works, helds []time.Duration
	writes := 0
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		path := filepath.Join(dir, "work.db")
		copyFile(b, tmpl, path)
		db, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		var work, held []time.Duration
		db.sweepHeld = func(w, h time.Duration) {
			work = append(work, w)
			held = append(held, h)
		}
		// phase: 0 before the sweep (the writers' own latency, the
		// baseline), 1 while it runs, 2 after.
		var (
			mu    sync.Mutex
			phase int
			lat   [2][]time.Duration
			n     int
			wg    sync.WaitGroup
			stop  = make(chan struct{})
		)
		record := func(d time.Duration, from, to int) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case from <= 1 && to >= 1:
				n++
				lat[1] = append(lat[1], d)
			case to == 0:
				lat[0] = append(lat[0], d)
			}
		}
		current := func() int {
			mu.Lock()
			defer mu.Unlock()
			return phase
		}
		setPhase := func(p int) {
			mu.Lock()
			phase = p
			mu.Unlock()
		}
		writers := []func(rng *rand.Rand, k int) error{
			func(rng *rand.Rand, k int) error {
				i := rng.IntN(f.convs)
				if f.convIdle(i) {
					i++
				}
				_, err := db.SetHead(ctx, fixtureKey(i), []string{"a", "b"}[k%2])
				return err
			},
			func(rng *rand.Rand, k int) error {
				return db.PutJob(ctx, &bot.Job{ID: fmt.Sprintf("new%08d", k), State: bot.JobWaiting, Created: f.now, Updated: f.now})
			},
		}
		for w, write := range writers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), uint64(i)))
				for k := 0; ; k++ {
					select {
					case <-stop:
						return
					default:
					}
					from := current()
					start := time.Now()
					if err := write(rng, k); err != nil {
						b.Error(err)
						return
					}
					record(time.Since(start), from, current())
				}
			})
		}
		time.Sleep(3 * time.Second) // the writers alone: the baseline
		setPhase(1)
		b.StartTimer()
		start := time.Now()
		st, err := db.Sweep(ctx, f.keep)
		took := time.Since(start)
		b.StopTimer()
		setPhase(2)
		time.Sleep(20 * time.Millisecond)
		close(stop)
		wg.Wait()
		if err != nil {
			b.Fatal(err)
		}
		if st.Conversations != f.idleConvs || st.Jobs != f.idleJobs || st.Claims != f.oldClaims {
			b.Fatalf("Sweep: got %+v, want %d conversations, %d jobs, %d claims", st, f.idleConvs, f.idleJobs, f.oldClaims)
		}
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		waits = append(waits, lat[1]...)
		alone = append(alone, lat[0]...)
		works = append(works, work...)
		helds = append(helds, held...)
		sweepTime += took
		writes += n
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
	b.ReportMetric(ms(slices.Max(waits)), "max_write_wait_ms")
	b.ReportMetric(ms(percentile(waits, 0.99)), "p99_write_wait_ms")
	b.ReportMetric(ms(slices.Max(alone)), "max_write_nosweep_ms")
	b.ReportMetric(ms(percentile(alone, 0.99)), "p99_write_nosweep_ms")
	if len(helds) > 0 {
		b.ReportMetric(ms(slices.Max(helds)), "max_sweep_tx_ms")
		b.ReportMetric(ms(percentile(helds, 0.99)), "p99_sweep_tx_ms")
		b.ReportMetric(ms(slices.Max(works)), "max_sweep_work_ms")
		b.ReportMetric(float64(len(helds))/float64(b.N), "sweep_txs")
	}
	b.ReportMetric(ms(sweepTime)/float64(b.N), "sweep_ms")
	b.ReportMetric(float64(writes)/float64(b.N), "writes_during_sweep")
}

// BenchmarkStartup100k measures a start on a file holding 100,000
// conversations (3,333 idle: a day's share of a 30-day retention),
// 1,000,000 finished jobs kept and 10 waiting jobs, up to the store work
// of the first answer: Open, the retention sweep started in the
// background as the app starts it, LiveJobs as Recover reads it, then the
// first request's checks and record (Usage, LiveJobs for the limits,
// PutJob). start_ms is that whole span. Each iteration starts from a fresh
// copy of the fixture (built once per call; run it with -benchtime=1x).
func BenchmarkStartup100k(b *testing.B) {
	ctx := context.Background()
	f := newFixture(fixture{convs: 100_000, idleConvs: 3_333, jobs: 1_000_000, live: 10, claims: 1000, oldClaims: 500})
	dir := b.TempDir()
	tmpl := filepath.Join(dir, "template.db")
	f.build(b, tmpl)
	var total, open, live time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		path := filepath.Join(dir, "work.db")
		copyFile(b, tmpl, path)
		b.StartTimer()
		start := time.Now()
		db, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		opened := time.Now()
		sctx, stopSweep := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _, _ = db.Sweep(sctx, f.keep) })
		jobs, err := db.LiveJobs(ctx) // Recover
		if err != nil {
			b.Fatal(err)
		}
		recovered := time.Now()
		if len(jobs) != f.live {
			b.Fatalf("LiveJobs: got %d, want %d", len(jobs), f.live)
		}
		// The first request: limits, then the job is recorded.
		if _, _, err := db.Usage(ctx, "discord", "g", "U00001", f.now); err != nil {
			b.Fatal(err)
		}
		if _, err := db.LiveJobs(ctx); err != nil {
			b.Fatal(err)
		}
		if err := db.PutJob(ctx, &bot.Job{ID: "first", State: bot.JobWaiting, Created: f.now, Updated: f.now}); err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		stopSweep()
		wg.Wait()
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		total += elapsed
		open += opened.Sub(start)
		live += recovered.Sub(opened)
	}
	b.ReportMetric(float64(total.Microseconds())/1e3/float64(b.N), "start_ms")
	b.ReportMetric(float64(open.Microseconds())/1e3/float64(b.N), "open_ms")
	b.ReportMetric(float64(live.Microseconds())/1e3/float64(b.N), "livejobs_ms")
}

// fixturePutConv stores a fixture conversation as the store's writes do.
func fixturePutConv(tx *bbolt.Tx, c *bot.Conversation) error {
	if _, err := putConv(tx, c); err != nil {
		return err
	}
	return indexConv(tx, c.Key, time.Time{}, false, c.Updated)
}

// BenchmarkMigrate100k opens a schema 1 file holding 100,000
// conversations and 1,000,000 finished jobs: the one-time migration that
// builds the schema 2 indexes. migrate_ms is Open's duration.
func BenchmarkMigrate100k(b *testing.B) {
	f := newFixture(fixture{convs: 100_000, idleConvs: 3_333, jobs: 1_000_000, live: 10})
	dir := b.TempDir()
	tmpl := filepath.Join(dir, "template.db")
	f.build(b, tmpl)
	tb := bbolt.Options{}
	bb, err := bbolt.Open(tmpl, 0o600, &tb)
	if err != nil {
		b.Fatal(err)
	}
	err = bb.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketConvIdx, bucketJobsLive, bucketJobsDone} {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte("1"))
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := bb.Close(); err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		path := filepath.Join(dir, "work.db")
		copyFile(b, tmpl, path)
		b.StartTimer()
		start := time.Now()
		db, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		b.StopTimer()
		if jobs, err := db.LiveJobs(context.Background()); err != nil || len(jobs) != f.live {
			b.Fatalf("LiveJobs after the migration: %d jobs, %v; want %d", len(jobs), err, f.live)
		}
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(total.Microseconds())/1e3/float64(b.N), "migrate_ms")
}
