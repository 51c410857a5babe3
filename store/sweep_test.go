package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"kontextbot/bot"
)

// checkStore checks every invariant of the package comment over the whole
// file: image reference counts and images, message mappings, and the
// three indexes.
func checkStore(tb testing.TB, db *DB) {
	tb.Helper()
	err := db.bolt.View(func(tx *bbolt.Tx) error {
		refs := map[string]uint64{}
		convs := 0
		err := tx.Bucket(bucketConvs).ForEach(func(k, v []byte) error {
			convs++
			var c bot.Conversation
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			if tx.Bucket(bucketConvIdx).Get(append(timeKey(c.Updated), k...)) == nil {
				return fmt.Errorf("conversation %s (updated %v) is not indexed", k, c.Updated)
			}
			for _, t := range c.Turns {
				refs[t.SHA256]++
				for _, m := range t.Messages {
					mk, _ := messageKey(c.Key, m)
					var ref messageRef
					if err := json.Unmarshal(tx.Bucket(bucketMessages).Get(mk), &ref); err != nil {
						return fmt.Errorf("message %s of %s: %w", m, k, err)
					}
					if ref.Key != c.Key || ref.Turn != t.ID {
						return fmt.Errorf("message %s of %s turn %s maps to %+v", m, k, t.ID, ref)
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n := tx.Bucket(bucketConvIdx).Stats().KeyN; n != convs {
			return fmt.Errorf("conv_updated has %d entries for %d conversations", n, convs)
		}
		err = tx.Bucket(bucketRefs).ForEach(func(k, v []byte) error {
			if got, want := refCount(v), refs[string(k)]; got != want {
				return fmt.Errorf("image %s: %d references counted, %d turns use it", k, got, want)
			}
			delete(refs, string(k))
			return nil
		})
		if err != nil {
			return err
		}
		if len(refs) > 0 {
			return fmt.Errorf("images used but not counted: %v", refs)
		}
		if a, b := tx.Bucket(bucketImages).Stats().KeyN, tx.Bucket(bucketRefs).Stats().KeyN; a != b {
			return fmt.Errorf("%d images for %d reference counts", a, b)
		}
		err = tx.Bucket(bucketMessages).ForEach(func(k, v []byte) error {
			var ref messageRef
			if err := json.Unmarshal(v, &ref); err != nil {
				return err
			}
			c, err := getConv(tx, ref.Key)
			if err != nil {
				return fmt.Errorf("message %s: %w", k, err)
			}
			if t := c.Turn(ref.Turn); t == nil || !slices.ContainsFunc(t.Messages, func(m string) bool {
				mk, _ := messageKey(c.Key, m)
				return bytes.Equal(mk, k)
			}) {
				return fmt.Errorf("message %s: not listed in its turn", k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		live, done := 0, 0
		err = tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
			var j bot.Job
			if err := json.Unmarshal(v, &j); err != nil {
				return err
			}
			if j.State.Live() {
				live++
				if tx.Bucket(bucketJobsLive).Get(k) == nil {
					return fmt.Errorf("live job %s is not in jobs_live", k)
				}
			} else {
				done++
				if tx.Bucket(bucketJobsDone).Get(append(timeKey(j.Updated), k...)) == nil {
					return fmt.Errorf("%s job %s is not in jobs_done", j.State, k)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n := tx.Bucket(bucketJobsLive).Stats().KeyN; n != live {
			return fmt.Errorf("jobs_live has %d entries for %d live jobs", n, live)
		}
		if n := tx.Bucket(bucketJobsDone).Stats().KeyN; n != done {
			return fmt.Errorf("jobs_done has %d entries for %d finished jobs", n, done)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("store invariants: %v", err)
	}
	if err := db.check(); err != nil {
		tb.Fatalf("bbolt check: %v", err)
	}
}

func TestTimeKeyOrder(t *testing.T) {
	times := []time.Time{
		{},
		time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Unix(-1, 999_999_999),
		time.Unix(0, 0),
		time.Unix(0, 1),
		t0,
		t0.Add(time.Nanosecond),
		t0.Add(time.Second),
		time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for i := 1; i < len(times); i++ {
		a, b := timeKey(times[i-1]), timeKey(times[i])
		if bytes.Compare(a, b) >= 0 {
			t.Errorf("timeKey(%v) = %x does not sort before timeKey(%v) = %x", times[i-1], a, times[i], b)
		}
	}
	if !bytes.Equal(timeKey(t0), timeKey(t0.In(time.FixedZone("X", 3600)))) {
		t.Errorf("timeKey depends on the location")
	}
}

// TestIndexesFollowWrites: every write keeps conv_updated, jobs_live and
// jobs_done exact.
func TestIndexesFollowWrites(t *testing.T) {
	ctx := context.Background()
	clock := newClock(t0)
	db := openTest(t, Options{Now: clock.Now, History: 2})
	for i := range 3 {
		clock.Set(t0.Add(time.Duration(i) * time.Minute))
		if _, err := db.AddTurn(ctx, keyA, turn(turnID(i)), img(i), nil, nil); err != nil {
			t.Fatal(err)
		}
		checkStore(t, db)
	}
	clock.Set(t0.Add(time.Hour))
	if _, err := db.SetHead(ctx, keyA, turnID(1)); err != nil {
		t.Fatal(err)
	}
	checkStore(t, db)
	if err := db.AddMessage(ctx, keyA, turnID(1), "m1"); err != nil {
		t.Fatal(err)
	}
	checkStore(t, db)

	job := &bot.Job{ID: "j1", State: bot.JobWaiting, Created: t0, Updated: t0}
	for _, st := range []bot.JobState{bot.JobWaiting, bot.JobSubmitted, bot.JobPosting, bot.JobDelivered, bot.JobFailed, bot.JobWaiting} {
		job.State = st
		job.Updated = job.Updated.Add(time.Minute)
		if err := db.PutJob(ctx, job); err != nil {
			t.Fatal(err)
		}
		checkStore(t, db)
		live, err := db.LiveJobs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(live), map[bool]int{true: 1, false: 0}[st.Live()]; got != want {
			t.Errorf("state %s: LiveJobs has %d jobs, want %d", st, got, want)
		}
	}
	// AddTurn's job lands in its index in the same transaction.
	job.State, job.Updated = bot.JobDelivered, t0.Add(2*time.Hour)
	if _, err := db.AddTurn(ctx, keyB, turn("b1"), img(9), job, nil); err != nil {
		t.Fatal(err)
	}
	checkStore(t, db)
	if live, err := db.LiveJobs(ctx); err != nil || len(live) != 0 {
		t.Errorf("LiveJobs after delivery: got %d jobs, %v; want none", len(live), err)
	}
}

// fillSweep stores n conversations idle at t0 (each with its own image,
// one shared by all, and a message per turn), n recent ones, n finished
// jobs idle at t0, n recent ones and n live old ones, and claims, so that
// every kind of record spans several sweep batches.
func fillSweep(t *testing.T, db *DB, clock *fakeClock, n int) {
	t.Helper()
	ctx := context.Background()
	db.bolt.NoSync = true // a fixture: durability is not under test here
	defer func() { db.bolt.NoSync = false }()
	shared := img(1 << 30)
	for _, at := range []time.Time{t0, t0.Add(48 * time.Hour)} {
		clock.Set(at)
		for i := range n {
			key := bot.ConvKey{Platform: "discord", Workspace: "g", Channel: fmt.Sprintf("%d-%d", at.Unix(), i)}
			for k, data := range [][]byte{shared, img(int(at.Unix()) + i)} {
				tr := turn(turnID(k))
				tr.Messages = []string{fmt.Sprintf("m%d-%d-%d", at.Unix(), i, k)}
				if _, err := db.AddTurn(ctx, key, tr, data, nil, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for i := range n {
		for _, j := range []*bot.Job{
			{ID: fmt.Sprint("old", i), State: bot.JobDelivered, Updated: t0},
			{ID: fmt.Sprint("new", i), State: bot.JobFailed, Updated: t0.Add(48 * time.Hour)},
			{ID: fmt.Sprint("live", i), State: bot.JobWaiting, Updated: t0},
		} {
			if err := db.PutJob(ctx, j); err != nil {
				t.Fatal(err)
			}
		}
	}
	clock.Set(t0.Add(72 * time.Hour))
	for i := range 5 * sweepClaimBatch {
		ttl := time.Hour
		if i%2 == 0 {
			ttl = -time.Hour
		}
		if _, err := db.Claim(ctx, fmt.Sprint("claim", i), ttl); err != nil {
			t.Fatal(err)
		}
	}
}

// countingCtx reports cancellation from its limit-th call of Err on, and
// runs hook (if set) on every call before that.
type countingCtx struct {
	context.Context
	calls atomic.Int64
	limit int64
	hook  func()
}

func (c *countingCtx) Err() error {
	if c.calls.Add(1) >= c.limit {
		return context.Canceled
	}
	if c.hook != nil {
		c.hook()
	}
	return nil
}

// TestSweepBatches: a sweep over more records than a batch removes
// exactly what is idle, in several transactions, and other writes go
// through between its batches.
func TestSweepBatches(t *testing.T) {
	clock := newClock(t0)
	db := openTest(t, Options{Now: clock.Now})
	const n = 2*sweepJobBatch + 10
	fillSweep(t, db, clock, n)
	checkStore(t, db)

	// Between batches, a write from another goroutine must complete: it
	// could not while the sweep held the write transaction.
	writes := 0
	ctx := &countingCtx{Context: context.Background(), limit: 1 << 30}
	ctx.hook = func() {
		done := make(chan error, 1)
		go func() {
			done <- db.PutJob(context.Background(), &bot.Job{ID: fmt.Sprint("during", writes), State: bot.JobWaiting, Updated: t0})
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("PutJob during the sweep: %v", err)
			}
			writes++
		case <-time.After(10 * time.Second):
			t.Fatal("a write waited for the whole sweep")
		}
	}
	st, err := db.Sweep(ctx, t0.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if want := (SweepStats{Conversations: n, Images: n, Jobs: n, Messages: 2 * n, Claims: 5 * sweepClaimBatch / 2}); st != want {
		t.Errorf("SweepStats: got %+v, want %+v", st, want)
	}
	if writes < 3 {
		t.Errorf("writes between batches: got %d, want at least 3 (one per batch of conversations and jobs)", writes)
	}
	checkStore(t, db)
	for _, c := range []struct {
		bucket []byte
		want   int
	}{{bucketConvs, n}, {bucketImages, n + 1}, {bucketMessages, 2 * n}, {bucketJobs, 2*n + writes}, {bucketClaims, 5 * sweepClaimBatch / 2}} {
		if got := db.countKeys(t, c.bucket); got != c.want {
			t.Errorf("keys in %s after the sweep: got %d, want %d", c.bucket, got, c.want)
		}
	}
	if got, want := db.refs(t, shaOf(img(1<<30))), uint64(n); got != want {
		t.Errorf("references to the shared image: got %d, want %d", got, want)
	}
	live, err := db.LiveJobs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(live), n+writes; got != want {
		t.Errorf("LiveJobs after the sweep: got %d, want %d (live jobs are never swept)", got, want)
	}
}

// TestSweepCancelledMidway: a sweep cut short keeps what its committed
// batches removed, counts it, leaves every invariant intact, and the next
// sweep finishes the work.
func TestSweepCancelledMidway(t *testing.T) {
	clock := newClock(t0)
	db := openTest(t, Options{Now: clock.Now})
	const n = 2*sweepJobBatch + 10
	fillSweep(t, db, clock, n)
	cut := t0.Add(24 * time.Hour)

	ctx := &countingCtx{Context: context.Background(), limit: 2} // one batch, then cancelled
	first, err := db.Sweep(ctx, cut)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Sweep: got %v, want context.Canceled", err)
	}
	if first.Conversations == 0 || first.Conversations >= n {
		t.Errorf("first Sweep removed %d conversations, want some of %d (one batch)", first.Conversations, n)
	}
	if got := db.countKeys(t, bucketConvs); got != 2*n-first.Conversations {
		t.Errorf("conversations left: got %d, want %d", got, 2*n-first.Conversations)
	}
	checkStore(t, db)

	rest, err := db.Sweep(context.Background(), cut)
	if err != nil {
		t.Fatal(err)
	}
	var total SweepStats
	total.add(first)
	total.add(rest)
	if want := (SweepStats{Conversations: n, Images: n, Jobs: n, Messages: 2 * n, Claims: 5 * sweepClaimBatch / 2}); total != want {
		t.Errorf("both sweeps: got %+v, want %+v", total, want)
	}
	checkStore(t, db)
}

// TestSweepStaleIndexEntries: index entries that lost their record (a
// corrupted or hand-edited file) are dropped without harm.
func TestSweepStaleIndexEntries(t *testing.T) {
	ctx := context.Background()
	clock := newClock(t0)
	db := openTest(t, Options{Now: clock.Now})
	if _, err := db.AddTurn(ctx, keyA, turn("t1"), img(1), nil, nil); err != nil {
		t.Fatal(err)
	}
	err := db.bolt.Update(func(tx *bbolt.Tx) error {
		if err := tx.Bucket(bucketConvIdx).Put(append(timeKey(t0.Add(-time.Hour)), "discord/g/gone/"...), nil); err != nil {
			return err
		}
		if err := tx.Bucket(bucketConvIdx).Put(append(timeKey(t0.Add(-time.Hour)), keyA.String()...), nil); err != nil {
			return err // stale: keyA's Updated is t0
		}
		if err := tx.Bucket(bucketJobsDone).Put(append(timeKey(t0.Add(-time.Hour)), "gone"...), nil); err != nil {
			return err
		}
		return tx.Bucket(bucketConvIdx).Put([]byte("short"), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := db.Sweep(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	if st != (SweepStats{}) {
		t.Errorf("SweepStats: got %+v, want zero", st)
	}
	if _, err := db.Conversation(ctx, keyA); err != nil {
		t.Errorf("conversation behind a stale entry: %v", err)
	}
	checkStore(t, db)
}

// makeSchema1 turns a schema 2 file into what schema 1 wrote: the same
// buckets without the three indexes, and version 1.
func makeSchema1(t *testing.T, path string) {
	t.Helper()
	b, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = b.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketConvIdx, bucketJobsLive, bucketJobsDone} {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte("1"))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func schemaOf(t *testing.T, path string) string {
	t.Helper()
	b, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var v string
	if err := b.View(func(tx *bbolt.Tx) error {
		v = string(tx.Bucket(bucketMeta).Get(keySchema))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestMigrateSchema1: a schema 1 file gets its indexes built on Open,
// once; the store then works as if it had always had them.
func TestMigrateSchema1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kontext.db")
	clock := newClock(t0)
	db, err := Open(path, Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	fillSweep(t, db, clock, 20)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	makeSchema1(t, path)

	db, err = Open(path, Options{Now: clock.Now})
	if err != nil {
		t.Fatalf("Open of a schema 1 file: %v", err)
	}
	checkStore(t, db) // the indexes are complete and exact
	live, err := db.LiveJobs(ctx)
	if err != nil || len(live) != 20 {
		t.Errorf("LiveJobs after the migration: got %d jobs, %v; want 20", len(live), err)
	}
	// Drop one index entry by hand: a migration run again would rebuild it.
	var dropped []byte
	err = db.bolt.Update(func(tx *bbolt.Tx) error {
		k, _ := tx.Bucket(bucketJobsLive).Cursor().First()
		dropped = bytes.Clone(k)
		return tx.Bucket(bucketJobsLive).Delete(k)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if got := schemaOf(t, path); got != strconv.Itoa(SchemaVersion) {
		t.Errorf("schema after the migration: got %q, want %d", got, SchemaVersion)
	}
	db, err = Open(path, Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if live, err := db.LiveJobs(ctx); err != nil || len(live) != 19 {
		t.Errorf("LiveJobs after reopening: got %d jobs, %v; want 19 (the migration ran again, restoring %s)", len(live), err, dropped)
	}
	if err := db.PutJob(ctx, &bot.Job{ID: string(dropped), State: bot.JobWaiting, Updated: t0}); err != nil {
		t.Fatal(err)
	}
	st, err := db.Sweep(ctx, t0.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if want := (SweepStats{Conversations: 20, Images: 20, Jobs: 20, Messages: 40, Claims: 5 * sweepClaimBatch / 2}); st != want {
		t.Errorf("Sweep after the migration: got %+v, want %+v", st, want)
	}
	checkStore(t, db)
}

// TestMigrateSchema1Fails: a migration that cannot finish leaves the file
// at version 1, untouched, and says why.
func TestMigrateSchema1Fails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kontext.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.PutJob(context.Background(), &bot.Job{ID: "ok", State: bot.JobWaiting}); err != nil {
		t.Fatal(err)
	}
	if err := db.bolt.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketJobs).Put([]byte("broken"), []byte("{not json"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	makeSchema1(t, path)
	db, err = Open(path, Options{})
	if err == nil {
		db.Close()
		t.Fatal("Open: got nil error, want the migration's")
	}
	for _, want := range []string{"migrate schema 1 to 2", "broken", path} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q: want it to contain %q", err, want)
		}
	}
	if got := schemaOf(t, path); got != "1" {
		t.Errorf("schema after the failed migration: got %q, want \"1\"", got)
	}
	b, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketJobsLive) != nil {
			return errors.New("jobs_live exists after the failed migration")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}
