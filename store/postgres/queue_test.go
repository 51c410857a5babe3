package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/store/postgres/pgtest"
)

// replicas opens n stores on one fresh schema, each with its own pool, as
// n processes would, and returns their queue handles (replica names r0,
// r1, ...).
func replicas(t *testing.T, n int, opts QueueOptions) []*Queue {
	t.Helper()
	u := pgtest.Schema(t)
	qs := make([]*Queue, n)
	for i := range n {
		db, err := Open(context.Background(), u, Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		qs[i] = db.Queue(fmt.Sprintf("r%d", i), opts)
	}
	return qs
}

func mustSubmit(t *testing.T, q *Queue, id, user, serial string) int {
	t.Helper()
	pos, err := q.Submit(context.Background(), id, user, serial)
	if err != nil {
		t.Fatalf("Submit(%s): %v", id, err)
	}
	return pos
}

func mustNext(t *testing.T, q *Queue) *QueuedJob {
	t.Helper()
	j, err := q.Next(context.Background())
	if err != nil {
		t.Fatalf("Next on %s: %v", q.replica, err)
	}
	return j
}

func mustRelease(t *testing.T, q *Queue, id string) {
	t.Helper()
	ok, err := q.Release(context.Background(), id)
	if err != nil || !ok {
		t.Fatalf("Release(%s) on %s: %v, %v; want removed", id, q.replica, ok, err)
	}
}

func idOf(j *QueuedJob) string {
	if j == nil {
		return ""
	}
	return j.ID
}

// TestQueueRoundRobinAcrossReplicas: a heavy user's batch submitted on one
// replica and light users' jobs submitted on others are served in turns,
// whichever replica asks for the next job.
func TestQueueRoundRobinAcrossReplicas(t *testing.T) {
	qs := replicas(t, 3, QueueOptions{Slots: 1, UserRunning: 1, UserWaiting: 10})
	for i := range 4 {
		mustSubmit(t, qs[0], fmt.Sprintf("heavy%d", i), "heavy", "")
	}
	mustSubmit(t, qs[1], "light0", "light", "")
	mustSubmit(t, qs[2], "other0", "other", "")
	mustSubmit(t, qs[1], "light1", "light", "")

	t.Run("positions seen from every replica", func(t *testing.T) {
		want := map[string]int{"heavy0": 1, "light0": 2, "other0": 3, "heavy1": 4, "light1": 5, "heavy2": 6, "heavy3": 7}
		for _, q := range qs {
			got, err := q.Positions(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("Positions on %s: got %v, want %v", q.replica, got, want)
			}
		}
	})
	var order []string
	for i := 0; ; i++ {
		q := qs[i%3]
		j := mustNext(t, q)
		if j == nil {
			break
		}
		if again := mustNext(t, qs[(i+1)%3]); again != nil {
			t.Fatalf("a second job started with one slot: %s", again.ID)
		}
		order = append(order, j.ID)
		mustRelease(t, q, j.ID)
	}
	want := []string{"heavy0", "light0", "other0", "heavy1", "light1", "heavy2", "heavy3"}
	if !slices.Equal(order, want) {
		t.Errorf("start order: got %v, want %v", order, want)
	}
}

// TestQueueReturningUserServedNext: a user whose jobs have all finished
// is served at the next slot, ahead of a heavy user's remaining batch.
func TestQueueReturningUserServedNext(t *testing.T) {
	qs := replicas(t, 2, QueueOptions{Slots: 1, UserRunning: 1, UserWaiting: 10})
	mustSubmit(t, qs[0], "light0", "light", "")
	j := mustNext(t, qs[0])
	mustRelease(t, qs[0], j.ID)
	for i := range 3 {
		mustSubmit(t, qs[0], fmt.Sprintf("heavy%d", i), "heavy", "")
	}
	h := mustNext(t, qs[1]) // heavy0 runs
	mustSubmit(t, qs[1], "light1", "light", "")
	mustRelease(t, qs[1], h.ID)
	if got := idOf(mustNext(t, qs[0])); got != "light1" {
		t.Errorf("next after the returning user's submit: got %q, want light1", got)
	}
}

// TestQueueCaps checks the running cap per user and the waiting caps, with
// submissions spread over replicas.
func TestQueueCaps(t *testing.T) {
	qs := replicas(t, 3, QueueOptions{Slots: 4, UserRunning: 2, UserWaiting: 3, MaxWaiting: 5})
	ctx := context.Background()
	for i := range 3 {
		mustSubmit(t, qs[i], fmt.Sprintf("a%d", i), "a", "")
	}
	_, err := qs[1].Submit(ctx, "a3", "a", "")
	var le *kontext.LimitError
	if !errors.Is(err, kontext.ErrUserWaitingLimit) || !errors.As(err, &le) || le.Limit != 3 {
		t.Errorf("4th waiting job of one user: got %v, want ErrUserWaitingLimit (3)", err)
	}
	mustSubmit(t, qs[2], "b0", "b", "")
	mustSubmit(t, qs[0], "b1", "b", "")
	if _, err := qs[1].Submit(ctx, "c0", "c", ""); !errors.Is(err, kontext.ErrQueueFull) {
		t.Errorf("6th waiting job: got %v, want ErrQueueFull", err)
	}
	if _, err := qs[1].Submit(ctx, "b1", "b", ""); !errors.Is(err, bot.ErrQueued) {
		t.Errorf("a job id already in the queue: got %v, want bot.ErrQueued", err)
	}
	// 4 slots, but a may run only 2: a0, b0, a1, b1 start; a2 waits.
	var started []string
	for i := 0; ; i++ {
		j := mustNext(t, qs[i%3])
		if j == nil {
			break
		}
		started = append(started, j.ID)
	}
	slices.Sort(started)
	if want := []string{"a0", "a1", "b0", "b1"}; !slices.Equal(started, want) {
		t.Errorf("started: got %v, want %v", started, want)
	}
	st, err := qs[2].Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (QueueStats{Slots: 4, Running: 4, Waiting: 1, Pools: map[string]kontext.PoolStats{"": {Slots: 4, Running: 4, Waiting: 1}}}); !reflect.DeepEqual(st, want) {
		t.Errorf("Stats: got %+v, want %+v", st, want)
	}
	// With a slot free, a is still at its running cap: nothing starts
	// until one of a's jobs ends.
	mustRelease(t, qs[1], "b0")
	if j := mustNext(t, qs[2]); j != nil {
		t.Errorf("Next with a at its running cap: got %s, want none", j.ID)
	}
	mustRelease(t, qs[0], "a0")
	if got := idOf(mustNext(t, qs[2])); got != "a2" {
		t.Errorf("Next after a0 ended: got %q, want a2", got)
	}
}

// TestQueueSerial: jobs of one conversation never run at once and start in
// submission order, while other work uses the free slots.
func TestQueueSerial(t *testing.T) {
	qs := replicas(t, 2, QueueOptions{Slots: 3, UserRunning: 3, UserWaiting: 10})
	mustSubmit(t, qs[0], "c1", "u1", "conv")
	mustSubmit(t, qs[1], "c2", "u2", "conv")
	mustSubmit(t, qs[0], "c3", "u1", "conv")
	mustSubmit(t, qs[1], "x1", "u2", "")
	var got []string
	for i := 0; ; i++ {
		j := mustNext(t, qs[i%2])
		if j == nil {
			break
		}
		got = append(got, j.ID)
	}
	if want := []string{"c1", "x1"}; !slices.Equal(got, want) {
		t.Fatalf("started: got %v, want %v (one job of the conversation at a time)", got, want)
	}
	for _, want := range []string{"c2", "c3"} {
		prev := got[0]
		mustRelease(t, qs[0], prev)
		j := mustNext(t, qs[1])
		if idOf(j) != want {
			t.Fatalf("after %s ended: got %q, want %s", prev, idOf(j), want)
		}
		got[0] = j.ID
		// Release must come from the owner.
		qs[0], qs[1] = qs[1], qs[0]
	}
}

// TestQueueCancelFromAnotherReplica: a waiting job cancelled elsewhere
// leaves at once; a running one is flagged for its owner, who sees it in
// Renew.
func TestQueueCancelFromAnotherReplica(t *testing.T) {
	ctx := context.Background()
	qs := replicas(t, 3, QueueOptions{Slots: 1, UserRunning: 1, UserWaiting: 10})
	mustSubmit(t, qs[0], "j1", "u1", "")
	mustSubmit(t, qs[0], "j2", "u2", "")
	mustSubmit(t, qs[0], "j3", "u3", "")
	run := mustNext(t, qs[0]) // j1
	if waiting, err := qs[1].Cancel(ctx, "j2"); err != nil || !waiting {
		t.Fatalf("Cancel of waiting j2: %v, %v; want removed", waiting, err)
	}
	pos, err := qs[2].Positions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"j3": 1}; fmt.Sprint(pos) != fmt.Sprint(want) {
		t.Errorf("positions after cancel: got %v, want %v", pos, want)
	}
	if waiting, err := qs[2].Cancel(ctx, run.ID); err != nil || waiting {
		t.Fatalf("Cancel of running j1: %v, %v; want flagged", waiting, err)
	}
	owned, canceled, err := qs[0].Renew(ctx)
	if err != nil || !slices.Equal(canceled, []string{"j1"}) || !slices.Equal(owned, []string{"j1"}) {
		t.Errorf("owner's Renew: got owned %v, canceled %v, %v; want [j1] [j1]", owned, canceled, err)
	}
	if err := qs[0].Hold(ctx, run.ID); !errors.Is(err, kontext.ErrCanceled) {
		t.Errorf("Hold of a job whose cancel was asked: got %v, want kontext.ErrCanceled", err)
	}
	if owned, other, err := qs[1].Renew(ctx); err != nil || len(other) != 0 || len(owned) != 0 {
		t.Errorf("another replica's Renew: got %v %v, %v; want nothing", owned, other, err)
	}
	if _, err := qs[1].Cancel(ctx, "nope"); !errors.Is(err, bot.ErrNotFound) {
		t.Errorf("Cancel of an unknown job: got %v, want ErrNotFound", err)
	}
	if ok, err := qs[1].Release(ctx, run.ID); err != nil || ok {
		t.Errorf("Release by a replica that does not own the job: %v, %v; want not removed", ok, err)
	}
	mustRelease(t, qs[0], run.ID)
	if got := idOf(mustNext(t, qs[1])); got != "j3" {
		t.Errorf("next: got %q, want j3", got)
	}
}

// TestQueueTakeover: a replica that stops renewing loses its running jobs
// to another once its lease lapses, with their slots; Handover gives them
// up at once.
func TestQueueTakeover(t *testing.T) {
	ctx := context.Background()
	const lease = 300 * time.Millisecond
	qs := replicas(t, 3, QueueOptions{Slots: 2, UserRunning: 2, UserWaiting: 10, Lease: lease})
	mustSubmit(t, qs[0], "j1", "u1", "")
	mustSubmit(t, qs[0], "j2", "u2", "")
	mustSubmit(t, qs[0], "j3", "u3", "")
	a, b := mustNext(t, qs[0]), mustNext(t, qs[1])
	if err := qs[0].Hold(ctx, a.ID); err != nil {
		t.Errorf("Hold by the owner: %v", err)
	}
	if err := qs[1].Hold(ctx, a.ID); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Hold by another replica: got %v, want ErrLeaseLost", err)
	}
	if taken, err := qs[2].Takeover(ctx); err != nil || len(taken) != 0 {
		t.Fatalf("Takeover of live leases: got %v, %v; want nothing", taken, err)
	}
	// r0 dies (stops renewing); r1 keeps renewing.
	deadline := time.Now().Add(10 * lease)
	var taken []QueuedJob
	for len(taken) == 0 && time.Now().Before(deadline) {
		time.Sleep(lease / 3)
		if _, _, err := qs[1].Renew(ctx); err != nil {
			t.Fatal(err)
		}
		var err error
		if taken, err = qs[2].Takeover(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(taken) != 1 || taken[0].ID != a.ID || !taken[0].TakenOver {
		t.Fatalf("Takeover after r0's lease lapsed: got %+v, want [%s taken over]", taken, a.ID)
	}
	if err := qs[0].Hold(ctx, a.ID); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Hold by the former owner after takeover: got %v, want ErrLeaseLost", err)
	}
	if err := qs[2].Hold(ctx, a.ID); err != nil {
		t.Errorf("Hold by the new owner: %v", err)
	}
	if owned, _, err := qs[0].Renew(ctx); err != nil || slices.Contains(owned, a.ID) {
		t.Errorf("the former owner's Renew: owned %v, %v; want %s gone", owned, err, a.ID)
	}
	// The slot went with the job: no third job starts.
	if j := mustNext(t, qs[2]); j != nil {
		t.Errorf("Next with both slots held: got %s", j.ID)
	}
	// The dead replica's late release does nothing; the new owner's does.
	if ok, _ := qs[0].Release(ctx, a.ID); ok {
		t.Error("the former owner released a job taken over")
	}
	mustRelease(t, qs[2], a.ID)
	if got := idOf(mustNext(t, qs[2])); got != "j3" {
		t.Errorf("next after the taken-over job ended: got %q, want j3", got)
	}
	// r1 stops on SIGTERM: its job is handed over at once.
	if n, err := qs[1].Handover(ctx); err != nil || n != 1 {
		t.Fatalf("Handover: %d, %v; want 1", n, err)
	}
	taken, err := qs[0].Takeover(ctx)
	if err != nil || len(taken) != 1 || taken[0].ID != b.ID {
		t.Errorf("Takeover after handover: got %+v, %v; want [%s]", taken, err, b.ID)
	}
}

// TestQueueSlotCapUnderConcurrency: 3 replicas, each with several workers
// taking jobs as fast as they can while others submit: never more than
// Slots jobs run, every job runs exactly once, and no slot stays free
// while work waits (every worker only stops when the queue is empty).
func TestQueueSlotCapUnderConcurrency(t *testing.T) {
	ctx := context.Background()
	const slots, users, perUser = 3, 6, 8
	qs := replicas(t, 3, QueueOptions{Slots: slots, UserRunning: 2, UserWaiting: perUser, MaxWaiting: 1000})
	var inflight, maxInflight atomic.Int32
	var mu sync.Mutex
	runs := map[string]int{}
	var submitted atomic.Int32
	var wg sync.WaitGroup
	for u := range users {
		wg.Go(func() {
			for i := range perUser {
				q := qs[(u+i)%3]
				if _, err := q.Submit(ctx, fmt.Sprintf("u%d-%d", u, i), fmt.Sprintf("u%d", u), ""); err != nil {
					t.Error(err)
					return
				}
				submitted.Add(1)
			}
		})
	}
	total := int32(users * perUser)
	for w := range 3 * slots {
		q := qs[w%3]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for {
				j, err := q.Next(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if j == nil {
					mu.Lock()
					done := len(runs) == int(total)
					mu.Unlock()
					if done {
						return
					}
					time.Sleep(2 * time.Millisecond)
					continue
				}
				n := inflight.Add(1)
				for m := maxInflight.Load(); n > m && !maxInflight.CompareAndSwap(m, n); m = maxInflight.Load() {
				}
				mu.Lock()
				runs[j.ID]++
				mu.Unlock()
				time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
				inflight.Add(-1)
				if ok, err := q.Release(ctx, j.ID); err != nil || !ok {
					t.Errorf("Release(%s): %v, %v", j.ID, ok, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := submitted.Load(); got != total {
		t.Fatalf("submitted %d, want %d", got, total)
	}
	if got := maxInflight.Load(); got > slots {
		t.Errorf("max in flight: got %d, want at most %d", got, slots)
	}
	if len(runs) != int(total) {
		t.Errorf("jobs run: got %d, want %d", len(runs), total)
	}
	for id, n := range runs {
		if n != 1 {
			t.Errorf("job %s ran %d times", id, n)
		}
	}
	st, err := qs[0].Stats(ctx)
	if err != nil || st.Running != 0 || st.Waiting != 0 {
		t.Errorf("Stats at the end: %+v, %v; want empty", st, err)
	}
}

// TestQueueWorkConservation drives random submits and releases on random
// replicas; after each, replicas ask for work until Next says none (as a
// notification makes them do). Then no slot may be free while a waiting
// job's user is below the running cap.
func TestQueueWorkConservation(t *testing.T) {
	ctx := context.Background()
	const slots, userRunning = 3, 2
	qs := replicas(t, 3, QueueOptions{Slots: slots, UserRunning: userRunning, UserWaiting: 20, MaxWaiting: 100})
	rng := rand.New(rand.NewPCG(5, 6))
	owner := map[string]*Queue{}
	var running []string
	n := 0
	for step := range 150 {
		if rng.IntN(2) == 0 || len(running) == 0 {
			u := fmt.Sprintf("u%d", rng.IntN(4))
			if _, err := qs[rng.IntN(3)].Submit(ctx, fmt.Sprintf("j%d", n), u, ""); err != nil && !errors.Is(err, kontext.ErrUserWaitingLimit) {
				t.Fatal(err)
			}
			n++
		} else {
			i := rng.IntN(len(running))
			id := running[i]
			mustRelease(t, owner[id], id)
			running = slices.Delete(running, i, i+1)
		}
		for {
			q := qs[rng.IntN(3)]
			j := mustNext(t, q)
			if j == nil {
				break
			}
			owner[j.ID] = q
			running = append(running, j.ID)
		}
		// The independent check, from the table.
		rows, err := qs[0].db.pool.Query(ctx, `SELECT user_id, state FROM queue_jobs`)
		if err != nil {
			t.Fatal(err)
		}
		userRun := map[string]int{}
		var waitingUsers []string
		total := 0
		for rows.Next() {
			var u, state string
			if err := rows.Scan(&u, &state); err != nil {
				t.Fatal(err)
			}
			if state == "running" {
				userRun[u]++
				total++
			} else {
				waitingUsers = append(waitingUsers, u)
			}
		}
		rows.Close()
		if total > slots {
			t.Fatalf("step %d: %d jobs running, more than %d slots", step, total, slots)
		}
		if total != len(running) {
			t.Fatalf("step %d: %d running in the table, %d handed out", step, total, len(running))
		}
		for _, u := range waitingUsers {
			if total < slots && userRun[u] < userRunning {
				t.Fatalf("step %d: a slot is free (%d/%d) while %s waits with %d running", step, total, slots, u, userRun[u])
			}
		}
	}
}

// TestQueueListen: a replica listening is woken by a change made on
// another replica, and its channel closes when its context ends.
func TestQueueListen(t *testing.T) {
	qs := replicas(t, 2, QueueOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	wake := qs[1].Listen(ctx)
	recv := func(what string) {
		t.Helper()
		select {
		case _, ok := <-wake:
			if !ok {
				t.Fatalf("%s: channel closed", what)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no wake-up", what)
		}
	}
	recv("connected") // a listener looks at the queue once it listens
	mustSubmit(t, qs[0], "j1", "u1", "")
	recv("submit on another replica")
	j := mustNext(t, qs[1])
	recv("next")
	mustRelease(t, qs[1], j.ID)
	recv("release")
	cancel()
	for range wake {
	}
}

// workers starts Work on each queue with run (a run that returns after its
// context ended left its job unfinished), and returns a function that
// stops replica i (as SIGTERM does) and waits for its Work to return.
func workers(t *testing.T, qs []*Queue, run func(q *Queue, ctx context.Context, j QueuedJob)) (stop func(i int)) {
	t.Helper()
	cancels := make([]context.CancelFunc, len(qs))
	dones := make([]chan struct{}, len(qs))
	for i, q := range qs {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i], dones[i] = cancel, make(chan struct{})
		go func() {
			defer close(dones[i])
			q.Work(ctx, func(ctx context.Context, j QueuedJob) error {
				run(q, ctx, j)
				return context.Cause(ctx) // a run cut short is handed over
			})
		}()
	}
	stop = func(i int) {
		cancels[i]()
		select {
		case <-dones[i]:
		case <-time.After(30 * time.Second):
			t.Errorf("Work of %s did not return", qs[i].replica)
		}
	}
	t.Cleanup(func() {
		for i := range qs {
			stop(i)
		}
	})
	return stop
}

// TestQueueWork: 3 replicas each running Work, jobs submitted on all of
// them: every job runs exactly once, never more than Slots at a time, and
// the queue ends empty.
func TestQueueWork(t *testing.T) {
	ctx := context.Background()
	const slots, users, perUser = 3, 6, 6
	qs := replicas(t, 3, QueueOptions{Slots: slots, UserRunning: 2, UserWaiting: perUser, MaxWaiting: 1000, Lease: 3 * time.Second})
	var inflight, maxInflight atomic.Int32
	var mu sync.Mutex
	runs := map[string]int{}
	allDone := make(chan struct{})
	const total = users * perUser
	workers(t, qs, func(q *Queue, ctx context.Context, j QueuedJob) {
		n := inflight.Add(1)
		for m := maxInflight.Load(); n > m && !maxInflight.CompareAndSwap(m, n); m = maxInflight.Load() {
		}
		time.Sleep(time.Duration(1+len(j.ID)%4) * time.Millisecond)
		inflight.Add(-1)
		mu.Lock()
		runs[j.ID]++
		if len(runs) == total {
			close(allDone)
		}
		mu.Unlock()
	})
	var wg sync.WaitGroup
	for u := range users {
		wg.Go(func() {
			for i := range perUser {
				if _, err := qs[(u+i)%3].Submit(ctx, fmt.Sprintf("u%d-%d", u, i), fmt.Sprintf("u%d", u), ""); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-allDone:
	case <-time.After(60 * time.Second):
		mu.Lock()
		t.Fatalf("only %d of %d jobs ran", len(runs), total)
	}
	if got := maxInflight.Load(); got > slots {
		t.Errorf("max in flight: got %d, want at most %d", got, slots)
	}
	mu.Lock()
	for id, n := range runs {
		if n != 1 {
			t.Errorf("job %s ran %d times", id, n)
		}
	}
	mu.Unlock()
	// The last releases follow the last runs.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err := qs[0].Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Running == 0 && st.Waiting == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue after every job ran: %+v, want empty", st)
		}
	}
}

// TestQueueWorkHandoverAndTakeover: a replica stopped as on SIGTERM hands
// its running job over at once (long before its lease would lapse), and
// another replica runs it as taken over; a job cancelled from another
// replica ends its run with kontext.ErrCanceled.
func TestQueueWorkHandoverAndTakeover(t *testing.T) {
	ctx := context.Background()
	qs := replicas(t, 2, QueueOptions{Slots: 1, Lease: 30 * time.Second})
	type event struct {
		replica string
		job     QueuedJob
		cause   error
	}
	events := make(chan event, 10)
	stop := workers(t, qs[:1], func(q *Queue, ctx context.Context, j QueuedJob) {
		<-ctx.Done()
		events <- event{q.replica, j, context.Cause(ctx)}
	})
	mustSubmit(t, qs[1], "long", "u1", "")
	// Wait until r0 runs it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st, err := qs[1].Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Running == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("r0 never started the job")
		}
	}
	started := make(chan QueuedJob, 1)
	workers(t, qs[1:], func(q *Queue, ctx context.Context, j QueuedJob) {
		started <- j
		<-ctx.Done()
		events <- event{q.replica, j, context.Cause(ctx)}
	})
	stop(0)
	ev := <-events
	if ev.replica != "r0" || !errors.Is(ev.cause, ErrHandedOver) {
		t.Errorf("r0's run ended with %v on %s, want ErrHandedOver", ev.cause, ev.replica)
	}
	select {
	case j := <-started:
		if j.ID != "long" || !j.TakenOver {
			t.Errorf("r1 started %+v, want long taken over", j)
		}
	case <-time.After(10 * time.Second): // the lease is 30 s: only the handover can explain a start
		t.Fatal("r1 did not take the handed-over job")
	}
	if _, err := qs[0].Cancel(ctx, "long"); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		if ev.replica != "r1" || !errors.Is(ev.cause, kontext.ErrCanceled) {
			t.Errorf("r1's run ended with %v on %s, want kontext.ErrCanceled", ev.cause, ev.replica)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the cancel never reached r1's run")
	}
}

// TestQueueWorkKilledReplica: a replica that dies without a word (its
// connections gone, as with SIGKILL or a lost host) loses its running job
// once its lease lapses; another replica runs it as taken over, and the
// slot stays accounted for throughout.
func TestQueueWorkKilledReplica(t *testing.T) {
	const lease = 400 * time.Millisecond
	qs := replicas(t, 2, QueueOptions{Slots: 1, Lease: lease})
	started := make(chan string, 10)
	workers(t, qs[:1], func(q *Queue, ctx context.Context, j QueuedJob) {
		started <- q.replica + ":" + j.ID
		<-ctx.Done()
	})
	mustSubmit(t, qs[1], "j1", "u1", "")
	mustSubmit(t, qs[1], "j2", "u2", "")
	if got := <-started; got != "r0:j1" {
		t.Fatalf("first start: got %s, want r0:j1", got)
	}
	took := make(chan QueuedJob, 10)
	workers(t, qs[1:], func(q *Queue, ctx context.Context, j QueuedJob) {
		took <- j
	})
	qs[0].db.Close() // r0 dies: no renewal, no release, no handover
	select {
	case j := <-took:
		if j.ID != "j1" || !j.TakenOver {
			t.Errorf("r1's first job: got %+v, want j1 taken over", j)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("r1 never took the dead replica's job over")
	}
	select {
	case j := <-took:
		if j.ID != "j2" || j.TakenOver {
			t.Errorf("r1's second job: got %+v, want j2", j)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("r1 never ran j2")
	}
}

// TestQueueReleaseNext: giving a slot back and taking the next job is one
// step on the releasing replica; only the owner releases.
func TestQueueReleaseNext(t *testing.T) {
	ctx := context.Background()
	qs := replicas(t, 2, QueueOptions{Slots: 1, UserRunning: 1, UserWaiting: 10})
	mustSubmit(t, qs[0], "j1", "u1", "")
	mustSubmit(t, qs[1], "j2", "u2", "")
	mustNext(t, qs[0]) // j1
	if removed, next, err := qs[1].ReleaseNext(ctx, "j1"); err != nil || removed || next != nil {
		t.Errorf("ReleaseNext by a replica that does not own j1: %v, %+v, %v; want nothing", removed, next, err)
	}
	removed, next, err := qs[0].ReleaseNext(ctx, "j1")
	if err != nil || !removed || idOf(next) != "j2" {
		t.Fatalf("ReleaseNext by the owner: %v, %+v, %v; want removed and j2", removed, next, err)
	}
	if err := qs[0].Hold(ctx, "j2"); err != nil {
		t.Errorf("Hold of the job ReleaseNext started: %v", err)
	}
	if removed, next, err := qs[0].ReleaseNext(ctx, "j2"); err != nil || !removed || next != nil {
		t.Errorf("ReleaseNext of the last job: %v, %+v, %v; want removed, none next", removed, next, err)
	}
	if st, err := qs[1].Stats(ctx); err != nil || st.Running != 0 || st.Waiting != 0 {
		t.Errorf("Stats: %+v, %v; want empty", st, err)
	}
}

// TestQueueFreeSlot: a running job whose prediction is final gives its
// slot to the next job, but still counts against its user's running cap
// and holds its conversation until it is released.
func TestQueueFreeSlot(t *testing.T) {
	ctx := context.Background()
	qs := replicas(t, 2, QueueOptions{Slots: 1, UserRunning: 1, UserWaiting: 10})
	mustSubmit(t, qs[0], "a1", "a", "")
	mustSubmit(t, qs[0], "a2", "a", "")
	mustSubmit(t, qs[1], "c1", "b", "conv")
	mustSubmit(t, qs[1], "c2", "c", "conv")
	mustNext(t, qs[0]) // a1
	if ok, err := qs[1].FreeSlot(ctx, "a1"); err != nil || ok {
		t.Errorf("FreeSlot by a replica that does not own a1: %v, %v; want nothing", ok, err)
	}
	if ok, err := qs[0].FreeSlot(ctx, "a1"); err != nil || !ok {
		t.Fatalf("FreeSlot by the owner: %v, %v", ok, err)
	}
	if st, err := qs[1].Stats(ctx); err != nil || st.Running != 0 {
		t.Errorf("Stats after FreeSlot: %+v, %v; want no slot held", st, err)
	}
	// a is at its running cap: the slot goes to c1, then nothing (c2 waits
	// for its conversation, a2 for a's cap, and the slot is taken).
	if got := idOf(mustNext(t, qs[1])); got != "c1" {
		t.Fatalf("next after the slot was freed: got %q, want c1", got)
	}
	if ok, _ := qs[1].FreeSlot(ctx, "c1"); !ok {
		t.Fatal("FreeSlot c1")
	}
	if j := mustNext(t, qs[0]); j != nil {
		t.Errorf("next with a at its cap and conv busy: got %s, want none", j.ID)
	}
	if err := qs[0].Hold(ctx, "a1"); err != nil {
		t.Errorf("Hold of a job whose slot was freed: %v", err)
	}
	mustRelease(t, qs[1], "c1")
	if got := idOf(mustNext(t, qs[1])); got != "c2" {
		t.Errorf("next after c1 ended: got %q, want c2", got)
	}
	mustRelease(t, qs[0], "a1")
	mustRelease(t, qs[1], "c2")
	if got := idOf(mustNext(t, qs[0])); got != "a2" {
		t.Errorf("next after a1 ended: got %q, want a2", got)
	}
}

// TestQueueWorkHandsOverJobsItDoesNotRun: a job marked running for this
// replica but not run by its Work (a start whose commit succeeded while
// its answer was lost) is handed over at the next renewal, not renewed for
// ever, and runs.
func TestQueueWorkHandsOverJobsItDoesNotRun(t *testing.T) {
	qs := replicas(t, 1, QueueOptions{Slots: 1, Lease: 600 * time.Millisecond})
	mustSubmit(t, qs[0], "lost", "u1", "")
	if j := mustNext(t, qs[0]); idOf(j) != "lost" {
		t.Fatalf("Next: got %q", idOf(j))
	}
	ran := make(chan QueuedJob, 1)
	workers(t, qs, func(q *Queue, ctx context.Context, j QueuedJob) { ran <- j })
	select {
	case j := <-ran:
		if j.ID != "lost" || !j.TakenOver {
			t.Errorf("ran %+v, want lost taken over", j)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the job held but not run never ran")
	}
}
