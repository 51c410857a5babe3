package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
)

// TestQueuePoolsTwoModels: three replicas over one database, an account
// pool of 24 with flux-kontext-max limited to 6, and twelve users asking
// for both models: neither limit is ever exceeded, both pools are kept
// full while jobs that may start wait, users take turns, and each
// conversation's jobs start in order.
func TestQueuePoolsTwoModels(t *testing.T) {
	ctx := context.Background()
	const users, perUser, userRunning = 12, 10, 4
	qs := replicas(t, 3, QueueOptions{Slots: 24, Pools: map[string]int{kontext.ModelMax: 6}, UserRunning: userRunning,
		UserWaiting: perUser, MaxWaiting: 1000})
	pools, serials := map[string]string{}, map[string]string{}
	for i := range perUser {
		for u := range users {
			id := fmt.Sprintf("u%d/%d", u, i)
			pool := kontext.ModelMax
			if (u+i)%2 == 1 {
				pool = kontext.ModelPro
			}
			serial := fmt.Sprintf("u%d/conv%d", u, i%5)
			pools[id], serials[id] = pool, serial
			if _, err := qs[(u+i)%3].SubmitPool(ctx, id, fmt.Sprint("u", u), serial, pool); err != nil {
				t.Fatal(err)
			}
		}
	}
	rng := rand.New(rand.NewPCG(13, 6))
	owner := map[string]*Queue{}
	var order, running []string
	maxRun := map[string]int{}
	for len(order) < users*perUser {
		for {
			q := qs[rng.IntN(3)]
			j := mustNext(t, q)
			if j == nil {
				break
			}
			if j.Pool != pools[j.ID] {
				t.Fatalf("%s came back in pool %q, submitted in %q", j.ID, j.Pool, pools[j.ID])
			}
			owner[j.ID] = q
			order = append(order, j.ID)
			running = append(running, j.ID)
		}
		// The independent check, from the table.
		st, err := qs[0].Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for p, ps := range st.Pools {
			maxRun[p] = max(maxRun[p], ps.Running)
		}
		if st.Running > 24 || st.Pools[kontext.ModelMax].Running > 6 {
			t.Fatalf("%d running, %d of them max: over 24 or 6", st.Running, st.Pools[kontext.ModelMax].Running)
		}
		if st.Running != len(running) {
			t.Fatalf("%d running in the table, %d handed out", st.Running, len(running))
		}
		canStart := waitingMayStart(t, qs[0], userRunning)
		if canStart[kontext.ModelMax] && st.Pools[kontext.ModelMax].Running < 6 {
			t.Fatalf("max has %d running while one of its jobs may start", st.Pools[kontext.ModelMax].Running)
		}
		if canStart[kontext.ModelPro] && st.Running < 24 {
			t.Fatalf("%d slots held while a pro job may start", st.Running)
		}
		// The oldest running job of each pool ends.
		for _, p := range []string{kontext.ModelMax, kontext.ModelPro} {
			for i, id := range running {
				if pools[id] == p {
					mustRelease(t, owner[id], id)
					running = slices.Delete(running, i, i+1)
					break
				}
			}
		}
	}
	if maxRun[kontext.ModelMax] != 6 || maxRun[kontext.ModelPro] < 18 {
		t.Errorf("most running: max %d, pro %d; want 6 and at least 18", maxRun[kontext.ModelMax], maxRun[kontext.ModelPro])
	}
	last := map[string]int{}
	per := map[int]int{}
	for n, id := range order {
		var u, i int
		fmt.Sscanf(id, "u%d/%d", &u, &i)
		if prev, ok := last[serials[id]]; ok && prev > i {
			t.Errorf("%s started after job %d of its conversation", id, prev)
		}
		last[serials[id]] = i
		if n < 60 {
			per[u]++
		}
	}
	var counts []int
	for _, c := range per {
		counts = append(counts, c)
	}
	if len(counts) != users || slices.Max(counts)-slices.Min(counts) > 2 {
		t.Errorf("starts per user in the first 60: %v, want every user within 2 of the others", per)
	}
}

// waitingMayStart reports, per pool, whether a waiting job may start but
// for the slots: its user under the cap, no job of its conversation
// running or waiting before it.
func waitingMayStart(t *testing.T, q *Queue, userRunning int) map[string]bool {
	t.Helper()
	rows, err := q.db.pool.Query(context.Background(), `SELECT user_id, serial, pool, state FROM queue_jobs ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	type row struct{ user, serial, pool, state string }
	var all []row
	userRun := map[string]int{}
	busy := map[string]bool{}
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.user, &r.serial, &r.pool, &r.state); err != nil {
			t.Fatal(err)
		}
		all = append(all, r)
		if r.state == "running" {
			userRun[r.user]++
			busy[r.serial] = true
		}
	}
	out := map[string]bool{}
	for _, r := range all {
		if r.state != "waiting" {
			continue
		}
		if !busy[r.serial] && userRun[r.user] < userRunning {
			out[r.pool] = true
		}
		busy[r.serial] = true // later jobs of it wait for this one
	}
	return out
}

// TestQueueSlowPool: after a 429 on one model, no replica starts a job of
// its pool until the wait has passed; the other pools go on.
func TestQueueSlowPool(t *testing.T) {
	ctx := context.Background()
	qs := replicas(t, 2, QueueOptions{Slots: 4, Pools: map[string]int{kontext.ModelMax: 2}})
	if err := qs[0].SlowPool(ctx, kontext.ModelMax, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := qs[0].SubmitPool(ctx, "max1", "a", "", kontext.ModelMax); err != nil {
		t.Fatal(err)
	}
	if _, err := qs[1].SubmitPool(ctx, "pro1", "b", "", kontext.ModelPro); err != nil {
		t.Fatal(err)
	}
	if got := idOf(mustNext(t, qs[1])); got != "pro1" {
		t.Fatalf("next: %q, want pro1 (max is slowed down)", got)
	}
	if got := idOf(mustNext(t, qs[0])); got != "" {
		t.Fatalf("next: %q, want nothing while max is slowed down", got)
	}
	// The wait passes.
	if _, err := qs[0].db.pool.Exec(ctx, `UPDATE queue_pools SET slow_until = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	if got := idOf(mustNext(t, qs[0])); got != "max1" {
		t.Fatalf("next once the wait passed: %q, want max1", got)
	}
}

// TestQueueWorkPools: three replicas running Work with both models in
// demand: never more than a pool's slots in flight, every job once.
func TestQueueWorkPools(t *testing.T) {
	ctx := context.Background()
	const users, perUser = 6, 8
	qs := replicas(t, 3, QueueOptions{Slots: 5, Pools: map[string]int{kontext.ModelMax: 2}, UserRunning: 3,
		UserWaiting: perUser, MaxWaiting: 1000, Lease: 3 * time.Second})
	var mu sync.Mutex
	inflight, most := map[string]int{}, map[string]int{}
	var total, maxTotal atomic.Int32
	runs := map[string]int{}
	allDone := make(chan struct{})
	workers(t, qs, func(q *Queue, ctx context.Context, j QueuedJob) {
		mu.Lock()
		inflight[j.Pool]++
		most[j.Pool] = max(most[j.Pool], inflight[j.Pool])
		mu.Unlock()
		n := total.Add(1)
		for m := maxTotal.Load(); n > m && !maxTotal.CompareAndSwap(m, n); m = maxTotal.Load() {
		}
		time.Sleep(time.Duration(2+len(j.ID)%4) * time.Millisecond)
		total.Add(-1)
		mu.Lock()
		inflight[j.Pool]--
		runs[j.ID]++
		if len(runs) == users*perUser {
			close(allDone)
		}
		mu.Unlock()
	})
	for u := range users {
		for i := range perUser {
			pool := []string{kontext.ModelMax, kontext.ModelPro}[(u+i)%2]
			if _, err := qs[(u+i)%3].SubmitPool(ctx, fmt.Sprintf("u%d-%d", u, i), fmt.Sprint("u", u), "", pool); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case <-allDone:
	case <-time.After(60 * time.Second):
		mu.Lock()
		t.Fatalf("only %d of %d jobs ran", len(runs), users*perUser)
	}
	mu.Lock()
	defer mu.Unlock()
	if most[kontext.ModelMax] > 2 || maxTotal.Load() > 5 {
		t.Errorf("most in flight: max %d, all %d; want at most 2 and 5", most[kontext.ModelMax], maxTotal.Load())
	}
	for id, n := range runs {
		if n != 1 {
			t.Errorf("job %s ran %d times", id, n)
		}
	}
}

// TestQueuePoolKeepsItsSlot: as kontext.Queue, a slot a job of a small
// pool gives back with the account full goes to that pool's next job.
func TestQueuePoolKeepsItsSlot(t *testing.T) {
	ctx := context.Background()
	qs := replicas(t, 2, QueueOptions{Slots: 3, UserRunning: 3, Pools: map[string]int{kontext.ModelMax: 1}})
	submit := func(id, user, pool string) {
		t.Helper()
		if _, err := qs[0].SubmitPool(ctx, id, user, "", pool); err != nil {
			t.Fatal(err)
		}
	}
	submit("max1", "c", kontext.ModelMax)
	submit("pro1", "c", kontext.ModelPro)
	submit("pro2", "c", kontext.ModelPro)
	for _, want := range []string{"max1", "pro1", "pro2"} {
		if got := idOf(mustNext(t, qs[1])); got != want {
			t.Fatalf("next: %q, want %q", got, want)
		}
	}
	submit("pro3", "a", kontext.ModelPro) // a is first in line, never served
	submit("max2", "b", kontext.ModelMax)
	mustRelease(t, qs[1], "max1")
	if got := idOf(mustNext(t, qs[0])); got != "max2" {
		t.Fatalf("next after max1 ended: %q, want max2", got)
	}
	mustRelease(t, qs[1], "pro1")
	if got := idOf(mustNext(t, qs[0])); got != "pro3" {
		t.Fatalf("next after pro1 ended: %q, want pro3", got)
	}
}

// TestQueueWorkSlowsPoolOn429: the client's 429 on a create, inside Work,
// slows the job's pool down in the database for every replica. The fake
// allows one active max prediction while the queue lets two run.
func TestQueueWorkSlowsPoolOn429(t *testing.T) {
	ctx := context.Background()
	fake := kontexttest.NewServer(kontexttest.Options{APIKey: "k", Slots: 4, ModelSlots: map[string]int{kontext.ModelMax: 1},
		Latency: 300 * time.Millisecond, Pixels: 64 * 64})
	defer fake.Close()
	client, err := kontext.NewClient(kontext.Config{BaseURL: fake.URL, APIKey: "k", Wait: -1, PollInterval: 20 * time.Millisecond,
		RetryBase: 100 * time.Millisecond, MaxRetries: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	qs := replicas(t, 1, QueueOptions{Slots: 4, Pools: map[string]int{kontext.ModelMax: 2}, Lease: 3 * time.Second})
	var wg sync.WaitGroup
	wg.Add(2)
	errs := make(chan error, 2)
	workers(t, qs, func(q *Queue, ctx context.Context, j QueuedJob) {
		defer wg.Done()
		_, err := client.Run(ctx, kontext.Request{Prompt: "a cat", Model: kontext.ModelMax})
		errs <- err
	})
	for i := range 2 {
		if _, err := qs[0].SubmitPool(ctx, fmt.Sprint("max", i), fmt.Sprint("u", i), "", kontext.ModelMax); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("a job failed: %v", err)
		}
	}
	if st := fake.Stats(); st.SlotLimit429 == 0 {
		t.Fatal("the fake never answered 429: the test proves nothing")
	}
	var n int
	if err := qs[0].db.pool.QueryRow(ctx, `SELECT count(*) FROM queue_pools WHERE pool = $1`, kontext.ModelMax).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("queue_pools has %d rows for max after a 429, want 1", n)
	}
}
