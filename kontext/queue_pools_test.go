package kontext

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// poolJob is a harness job counted against pool, recording how many jobs
// of its pool run at once.
func (h *harness) poolJob(id, user, serial, pool string, rec *inflight) Job {
	job := h.job(id, user, serial)
	job.Pool = pool
	run := job.Run
	job.Run = func(ctx context.Context) error {
		rec.add(pool, 1)
		defer rec.add(pool, -1)
		return run(ctx)
	}
	return job
}

// inflight counts running jobs per pool and keeps the highest counts.
type inflight struct {
	mu       sync.Mutex
	now, max map[string]int
	total    int
	maxTotal int
}

func newInflight() *inflight { return &inflight{now: map[string]int{}, max: map[string]int{}} }

func (r *inflight) add(pool string, d int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.now[pool] += d
	r.total += d
	r.max[pool] = max(r.max[pool], r.now[pool])
	r.maxTotal = max(r.maxTotal, r.total)
}

// TestQueuePoolsTwoModels: an account pool of 24 with flux-kontext-max
// limited to 6, and many users asking for both models: neither limit is
// ever exceeded, both pools are kept full while they have demand, users
// take turns, and each conversation's jobs start in order.
func TestQueuePoolsTwoModels(t *testing.T) {
	const users, perUser = 12, 10 // 120 jobs, half of them on each model
	h := newHarness(t, QueueOptions{Slots: 24, UserRunning: 4, UserWaiting: perUser, MaxWaiting: users * perUser,
		Pools: map[string]int{ModelMax: 6}})
	rec := newInflight()
	pools := map[string]string{}   // job id -> pool
	serials := map[string]string{} // job id -> serial
	for i := range perUser {
		for u := range users {
			id := fmt.Sprintf("u%d/%d", u, i)
			pool := ModelMax
			if (u+i)%2 == 1 {
				pool = ModelPro
			}
			serial := fmt.Sprintf("u%d/conv%d", u, i%5) // five conversations per user
			pools[id], serials[id] = pool, serial
			h.submitJob(context.Background(), h.poolJob(id, fmt.Sprint("u", u), serial, pool, rec))
		}
	}
	var order []string
	running := map[string]bool{}
	for len(order) < users*perUser {
		// Let every start this change allows happen, then look.
		for {
			select {
			case id := <-h.starts:
				order = append(order, id)
				running[id] = true
				continue
			case <-time.After(20 * time.Millisecond):
			}
			break
		}
		if err := checkInvariants(h.q); err != nil {
			t.Fatal(err)
		}
		st := h.q.Stats()
		maxWaiting, proWaiting := st.Pools[ModelMax].Waiting, st.Pools[ModelPro].Waiting
		// Both pools busy: max's full while its jobs wait; the account's
		// full while pro jobs wait (a pool is passed over, never a slot
		// left idle for it), unless users' caps or conversations hold
		// the waiting ones back.
		if maxWaiting > 0 && st.Pools[ModelMax].Running < 6 && mayStart(h.q, ModelMax) {
			t.Fatalf("max has %d running with %d waiting that may start", st.Pools[ModelMax].Running, maxWaiting)
		}
		if proWaiting > 0 && st.Running < 24 && mayStart(h.q, ModelPro) {
			t.Fatalf("%d slots held with %d pro jobs waiting that may start", st.Running, proWaiting)
		}
		// Finish the oldest running job of each pool.
		for _, pool := range []string{ModelMax, ModelPro} {
			for _, id := range order {
				if running[id] && pools[id] == pool {
					delete(running, id)
					h.finish(id, nil)
					break
				}
			}
		}
	}
	for id := range running {
		h.finish(id, nil)
	}
	if got := rec.max[ModelMax]; got != 6 {
		t.Errorf("max in flight for flux-kontext-max = %d, want its limit 6", got)
	}
	if got := rec.maxTotal; got > 24 {
		t.Errorf("max in flight = %d, over the account's 24", got)
	}
	if got := rec.max[ModelPro]; got < 18 {
		t.Errorf("max in flight for flux-kontext-pro = %d, want it to fill the account's other 18", got)
	}
	// Each conversation's jobs started in submission order.
	last := map[string]int{}
	for _, id := range order {
		var u, i int
		fmt.Sscanf(id, "u%d/%d", &u, &i)
		if prev, ok := last[serials[id]]; ok && prev > i {
			t.Errorf("%s started after job %d of its conversation", id, prev)
		}
		last[serials[id]] = i
	}
	// Fairness: over the first 60 starts, every user got a fair share.
	per := map[string]int{}
	for _, id := range order[:60] {
		var u, i int
		fmt.Sscanf(id, "u%d/%d", &u, &i)
		per[fmt.Sprint("u", u)]++
	}
	counts := slices.Collect(func(yield func(int) bool) {
		for _, n := range per {
			if !yield(n) {
				return
			}
		}
	})
	if len(counts) != users || slices.Max(counts)-slices.Min(counts) > 2 {
		t.Errorf("starts per user in the first 60: %v, want every user within 2 of the others", per)
	}
}

// mayStart reports whether a waiting job of pool may start now but for
// the slots: its user under the cap, its conversation free.
func mayStart(q *Queue, pool string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for t := q.whead; t != nil; t = t.gnext {
		if t.p.name == pool && t.ready && t.u.running < q.opts.UserRunning {
			return true
		}
	}
	return false
}

// TestQueuePoolFullDoesNotBlock: a job waiting for its full pool keeps no
// job of another pool behind it from a free slot, the same user's
// included, and starts as soon as its pool has room.
func TestQueuePoolFullDoesNotBlock(t *testing.T) {
	for _, policy := range []Policy{RoundRobin, FIFO} {
		t.Run(policy.String(), func(t *testing.T) {
			h := newHarness(t, QueueOptions{Slots: 3, UserRunning: 3, Policy: policy, Pools: map[string]int{ModelMax: 1}})
			rec := newInflight()
			h.submitJob(context.Background(), h.poolJob("max1", "a", "", ModelMax, rec))
			h.waitStarted("max1")
			h.submitJob(context.Background(), h.poolJob("max2", "a", "", ModelMax, rec))
			h.submitJob(context.Background(), h.poolJob("pro1", "a", "", ModelPro, rec))
			h.submitJob(context.Background(), h.poolJob("flux2", "b", "", ModelFlux2Pro, rec))
			h.waitStarted("pro1")
			h.waitStarted("flux2")
			if h.started("max2") {
				t.Fatal("max2 started while max's one slot is held")
			}
			h.wantStats(3, 1)
			h.finish("pro1", nil) // an account slot frees, max's pool is still full
			if err := checkInvariants(h.q); err != nil {
				t.Fatal(err)
			}
			if h.started("max2") {
				t.Fatal("max2 started in a slot of another pool")
			}
			h.finish("max1", nil)
			h.waitStarted("max2")
			if got := rec.max[ModelMax]; got != 1 {
				t.Errorf("max in flight for max = %d, want 1", got)
			}
			if st := h.q.Stats().Pools[ModelMax]; st.Slots != 1 || st.Running != 1 {
				t.Errorf("max's pool stats %+v, want 1 slot, 1 running", st)
			}
		})
	}
}

// TestQueueSlowPool: a 429 on one model holds back that model's pool only,
// for the provider's wait; then its jobs start again.
func TestQueueSlowPool(t *testing.T) {
	h := newHarness(t, QueueOptions{Slots: 4, Pools: map[string]int{ModelMax: 2}})
	rec := newInflight()
	h.q.SlowPool(ModelMax, time.Hour)
	h.submitJob(context.Background(), h.poolJob("max1", "a", "", ModelMax, rec))
	h.submitJob(context.Background(), h.poolJob("pro1", "b", "", ModelPro, rec))
	h.waitStarted("pro1")
	if h.started("max1") {
		t.Fatal("max1 started while its pool is slowed down")
	}
	if err := checkInvariants(h.q); err != nil {
		t.Fatal(err)
	}
	// The wait passes: the pool's timer fires (at once, here).
	h.q.mu.Lock()
	p := h.q.pools[ModelMax]
	p.until = time.Time{}
	p.timer.Reset(0)
	h.q.mu.Unlock()
	h.waitStarted("max1") // once the wait has passed, without any other change
	h.finish("max1", nil)
	h.finish("pro1", nil)
}

// TestQueueSlowPoolFromClient: the client's 429 on a create reaches the
// queue through the job's context and slows its pool.
func TestQueueSlowPoolFromClient(t *testing.T) {
	q := NewQueue(QueueOptions{Slots: 2})
	defer q.Shutdown(context.Background())
	got := make(chan time.Duration, 1)
	tk, err := q.Submit(context.Background(), Job{ID: "j", User: "u", Pool: ModelMax, Run: func(ctx context.Context) error {
		slotLimited(ctx, 50*time.Millisecond)
		q.mu.Lock()
		got <- time.Until(q.pools[ModelMax].until)
		q.mu.Unlock()
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	<-tk.Done()
	if d := <-got; d <= 0 {
		t.Errorf("the pool is not slowed after a 429 (until %v from now)", d)
	}
}

// TestQueuePoolKeepsItsSlot: when a job of a small pool ends with the
// account full, its slot goes to the next job of that pool, not to
// another pool's job first in line, which would leave the small pool
// below its limit while its jobs wait; with no job of the pool that may
// run, the other pool's job takes it.
func TestQueuePoolKeepsItsSlot(t *testing.T) {
	for _, policy := range []Policy{RoundRobin, FIFO} {
		t.Run(policy.String(), func(t *testing.T) {
			h := newHarness(t, QueueOptions{Slots: 3, UserRunning: 3, Policy: policy, Pools: map[string]int{ModelMax: 1}})
			rec := newInflight()
			for _, j := range []struct{ id, user, pool string }{
				{"max1", "c", ModelMax}, {"pro1", "c", ModelPro}, {"pro2", "c", ModelPro},
				{"pro3", "a", ModelPro}, {"max2", "b", ModelMax}, {"max3", "b", ModelMax},
			} {
				h.submitJob(context.Background(), h.poolJob(j.id, j.user, "", j.pool, rec))
			}
			for _, id := range []string{"max1", "pro1", "pro2"} {
				h.waitStarted(id)
			}
			h.finish("max1", nil)
			h.waitStarted("max2")
			if h.started("pro3") {
				t.Fatal("pro3 took the slot max1 gave back while max2 waited")
			}
			h.finish("pro1", nil) // an account slot, max's pool full: pro3
			h.waitStarted("pro3")
			if err := checkInvariants(h.q); err != nil {
				t.Fatal(err)
			}
		})
	}
}
