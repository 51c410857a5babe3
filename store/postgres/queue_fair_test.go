package postgres

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
)

// TestQueueKeepsSlot: the fair share rule of FreeSlotNext, on the slots
// each replica holds after its free.
func TestQueueKeepsSlot(t *testing.T) {
	tests := []struct {
		name  string
		slots int
		live  []string
		held  map[string]int // slots held per owner
		freed map[string]int // running jobs whose slot is free, per owner
		me    string
		want  bool
	}{
		{"below an even share", 6, []string{"r0", "r1", "r2"}, map[string]int{"r0": 1, "r1": 2, "r2": 2}, nil, "r0", true},
		{"none held, below the share", 6, []string{"r0", "r1", "r2"}, map[string]int{"r1": 3, "r2": 2}, nil, "r0", true},
		{"at an even share", 6, []string{"r0", "r1", "r2"}, map[string]int{"r0": 2, "r1": 3}, nil, "r0", false},
		{"above the share, a replica holding none", 6, []string{"r0", "r1", "r2"}, map[string]int{"r0": 3, "r1": 2}, nil, "r0", false},
		{"freed slots do not count", 6, []string{"r0", "r1", "r2"}, map[string]int{"r0": 1, "r1": 2, "r2": 2}, map[string]int{"r0": 4}, "r0", true},
		{"a dead replica's jobs do not make a share", 6, []string{"r0", "r1", "r2"}, map[string]int{"gone": 4, "r0": 1}, nil, "r0", true},
		{"this replica counts when not recorded", 6, []string{"r1"}, map[string]int{"r0": 2, "r1": 3}, nil, "r0", true},
		{"alone", 6, nil, map[string]int{"r0": 5}, nil, "r0", true},
		{"alone, every slot held", 6, nil, map[string]int{"r0": 6}, nil, "r0", false},
		{"leftover slot, every replica at its share", 6, []string{"r0", "r1", "r2", "r3"}, map[string]int{"r0": 2, "r1": 1, "r2": 1, "r3": 1}, nil, "r1", true},
		{"leftover slot, a replica below its share", 6, []string{"r0", "r1", "r2", "r3"}, map[string]int{"r0": 2, "r1": 1, "r2": 2}, nil, "r1", false},
		{"leftover slot, above the share", 6, []string{"r0", "r1", "r2", "r3"}, map[string]int{"r0": 2, "r1": 2, "r2": 1, "r3": 0}, nil, "r0", false},
		{"more replicas than slots", 2, []string{"r0", "r1", "r2"}, map[string]int{"r1": 1}, nil, "r0", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &qstate{}
			add := func(m map[string]int, slotFree bool) {
				for owner, n := range m {
					for i := range n {
						st.jobs = append(st.jobs, qjob{id: fmt.Sprintf("%s-%v-%d", owner, slotFree, i), user: owner,
							running: true, slotFree: slotFree, owner: owner})
					}
				}
			}
			add(tt.held, false)
			add(tt.freed, true)
			st.jobs = append(st.jobs, qjob{id: "waiting", user: "w"})
			if got := st.keepsSlot(tt.me, tt.live, tt.slots); got != tt.want {
				t.Errorf("keepsSlot(%s, live %v, %d slots) with %v held: got %v, want %v", tt.me, tt.live, tt.slots, tt.held, got, tt.want)
			}
		})
	}
}

// TestQueueFreeSlotNext: below its fair share, the replica giving a slot
// back once a prediction is final starts the next job with it in the same
// transaction, for itself (no Next, and no other replica can claim the
// slot in between); only the owner frees, and once; the freed job still
// holds its user's cap.
func TestQueueFreeSlotNext(t *testing.T) {
	ctx := context.Background()
	qs := replicas(t, 2, QueueOptions{Slots: 1, UserRunning: 1, UserWaiting: 10})
	mustSubmit(t, qs[0], "a1", "a", "")
	mustSubmit(t, qs[0], "a2", "a", "")
	mustSubmit(t, qs[1], "b1", "b", "")
	mustNext(t, qs[0]) // a1
	if freed, next, err := qs[1].FreeSlotNext(ctx, "a1"); err != nil || freed || next != nil {
		t.Errorf("FreeSlotNext by a replica that does not own a1: %v, %+v, %v; want nothing", freed, next, err)
	}
	freed, next, err := qs[0].FreeSlotNext(ctx, "a1")
	if err != nil || !freed || idOf(next) != "b1" {
		t.Fatalf("FreeSlotNext by the owner: %v, %+v, %v; want freed and b1 (a is at its cap)", freed, next, err)
	}
	if err := qs[0].Hold(ctx, "b1"); err != nil {
		t.Errorf("Hold of the job FreeSlotNext started: %v", err)
	}
	if j := mustNext(t, qs[1]); j != nil {
		t.Errorf("Next on r1 after the hand-off: got %s, want none (the slot went to b1)", j.ID)
	}
	if st, err := qs[1].Stats(ctx); err != nil || st.Running != 1 || st.Waiting != 1 {
		t.Errorf("Stats after the hand-off: %+v, %v; want 1 running (b1), 1 waiting (a2)", st, err)
	}
	if freed, next, err := qs[0].FreeSlotNext(ctx, "a1"); err != nil || freed || next != nil {
		t.Errorf("FreeSlotNext of a1 again: %v, %+v, %v; want nothing", freed, next, err)
	}
	mustRelease(t, qs[0], "a1")
	if freed, next, err := qs[0].FreeSlotNext(ctx, "b1"); err != nil || !freed || idOf(next) != "a2" {
		t.Errorf("FreeSlotNext of b1: %v, %+v, %v; want freed and a2", freed, next, err)
	}
}

// held counts the slots held by each replica's running jobs.
func held(t *testing.T, q *Queue) map[string]int {
	t.Helper()
	rows, err := q.db.pool.Query(context.Background(), `SELECT owner, count(*) FROM queue_jobs
		WHERE state = 'running' AND NOT slot_free GROUP BY owner`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var owner string
		var n int
		if err := rows.Scan(&owner, &n); err != nil {
			t.Fatal(err)
		}
		out[owner] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestQueueFreeSlotNextFairShare: two live replicas hold every slot and a
// third live one holds none. While the two keep freeing slots, a replica
// above its fair share (slots / live replicas) does not keep the slot it
// frees: the replica holding none claims it at its next Next (as the
// notification makes it do), so it holds a slot after the first free. The
// slots then settle at the share each, and from there every free is a
// hand-off to the freeing replica. Before the third replica is live, the
// other two keep theirs.
func TestQueueFreeSlotNextFairShare(t *testing.T) {
	ctx := context.Background()
	const slots = 6
	qs := replicas(t, 3, QueueOptions{Slots: slots, UserRunning: 100, UserWaiting: 100, MaxWaiting: 1000})
	for i := range 60 {
		mustSubmit(t, qs[i%3], fmt.Sprintf("j%02d", i), fmt.Sprintf("u%d", i%5), "")
	}
	mine := map[string][]string{} // running jobs holding a slot, per replica, oldest first
	for i := range slots {
		q := qs[i%2]
		j := mustNext(t, q)
		if j == nil {
			t.Fatalf("Next %d on %s: none", i, q.replica)
		}
		mine[q.replica] = append(mine[q.replica], j.ID)
	}
	// free has q give back the slot of its oldest job and end that job.
	free := func(q *Queue) *QueuedJob {
		t.Helper()
		id := mine[q.replica][0]
		mine[q.replica] = mine[q.replica][1:]
		freed, next, err := q.FreeSlotNext(ctx, id)
		if err != nil || !freed {
			t.Fatalf("FreeSlotNext(%s) on %s: %v, %v", id, q.replica, freed, err)
		}
		mustRelease(t, q, id)
		if next != nil {
			mine[q.replica] = append(mine[q.replica], next.ID)
		}
		return next
	}
	// r0 and r1 alone are live: 3 each is their share, r0 keeps its slot.
	for _, q := range qs[:2] {
		if err := q.present(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if next := free(qs[0]); next == nil {
		t.Fatal("r0 at its share of 3 with 2 live replicas did not keep its slot")
	}
	// r2 joins: the share is 2.
	if err := qs[2].present(ctx); err != nil {
		t.Fatal(err)
	}
	frees := 0
	for len(mine["r2"]) == 0 {
		if frees == 2 {
			t.Fatalf("r2 holds no slot after %d frees by r0 and r1 (held: %v)", frees, held(t, qs[2]))
		}
		q := qs[frees%2]
		frees++
		if next := free(q); next != nil {
			t.Errorf("free %d: %s above its share kept its slot for %s (held: %v)", frees, q.replica, next.ID, held(t, q))
			continue
		}
		if j := mustNext(t, qs[2]); j != nil {
			mine["r2"] = append(mine["r2"], j.ID)
		}
	}
	// The others go on freeing; r2 claims what they do not keep, until
	// every replica holds its share; then each free is a hand-off.
	for i := range 12 {
		q := qs[i%3]
		if next := free(q); next == nil {
			if j := mustNext(t, qs[2]); j != nil {
				mine["r2"] = append(mine["r2"], j.ID)
			}
		}
	}
	want := map[string]int{"r0": 2, "r1": 2, "r2": 2}
	if got := held(t, qs[0]); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("slots held after the frees: got %v, want %v", got, want)
	}
	for i := range 9 {
		q := qs[i%3]
		if next := free(q); next == nil {
			t.Errorf("free %d by %s at its share minus one: no hand-off (held: %v)", i, q.replica, held(t, q))
		}
	}
}

// TestQueueWorkFairShareJoiningReplica: two replicas run Work under load
// and hold every slot, giving freed slots to themselves while below their
// share (FreeSlotNext); a third replica that joins then runs jobs too, long
// before the queue drains (the hand-off that kept every slot on the
// freeing replica starved it for good).
func TestQueueWorkFairShareJoiningReplica(t *testing.T) {
	ctx := context.Background()
	const slots, jobs = 6, 240
	srv := kontexttest.NewServer(kontexttest.Options{APIKey: "k", Slots: slots, Latency: 20 * time.Millisecond,
		Jitter: 10 * time.Millisecond, Pixels: 32 * 32})
	t.Cleanup(srv.Close)
	qs := replicas(t, 3, QueueOptions{Slots: slots, UserRunning: 100, UserWaiting: jobs, MaxWaiting: 1000, Lease: 3 * time.Second})
	for i := range jobs {
		mustSubmit(t, qs[i%2], fmt.Sprintf("j%03d", i), fmt.Sprintf("u%d", i%8), "")
	}
	clients := map[string]*kontext.Client{}
	for _, q := range qs {
		c, err := kontext.NewClient(kontext.Config{BaseURL: srv.URL, APIKey: "k", Model: kontext.ModelMax})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		clients[q.replica] = c
	}
	var mu sync.Mutex
	started := map[string]int{} // jobs started, per replica
	joined := 0                 // jobs started by r0 and r1 when r2 joined
	settled, drained := make(chan struct{}), make(chan struct{})
	r2First := make(chan int, 1)
	run := func(q *Queue, ctx context.Context, j QueuedJob) {
		mu.Lock()
		started[q.replica]++
		others := started["r0"] + started["r1"]
		if q.replica != "r2" {
			switch others {
			case 3 * slots:
				close(settled)
			case jobs:
				close(drained)
			}
		}
		if q.replica == "r2" && started["r2"] == 1 {
			r2First <- others - joined
		}
		mu.Unlock()
		if _, err := clients[q.replica].Run(context.WithoutCancel(ctx), kontext.Request{Prompt: "a lighthouse, " + j.ID}); err != nil {
			t.Errorf("run %s on %s: %v", j.ID, q.replica, err)
		}
	}
	workers(t, qs[:2], run)
	// Let r0 and r1 settle at every slot between them.
	select {
	case <-settled:
	case <-time.After(60 * time.Second):
		t.Fatal("r0 and r1 never started their first jobs")
	}
	mu.Lock()
	joined = started["r0"] + started["r1"]
	mu.Unlock()
	workers(t, qs[2:], run)
	const bound = 60 // frees by r0 and r1; each is offered to r2 while they hold more than 2
	select {
	case n := <-r2First:
		t.Logf("r2 ran its first job after r0 and r1 started %d more", n)
		if n > bound {
			t.Errorf("r2 ran its first job after r0 and r1 started %d more, want at most %d", n, bound)
		}
	case <-drained:
		t.Fatal("r0 and r1 started every job, r2 none")
	case <-time.After(60 * time.Second):
		t.Fatal("r2 never ran a job")
	}
	if st, err := qs[0].Stats(ctx); err != nil || st.Waiting == 0 {
		t.Errorf("Stats when r2 ran its first job: %+v, %v; want jobs still waiting", st, err)
	}
}

// TestQueueReleaseNextForgetsAndAnnounces: ReleaseNext forgets a user
// whose last job it removed (so they are served first when they come back)
// and announces the removal to the other replicas (Work loops ignore only
// announcements of starts).
func TestQueueReleaseNextForgetsAndAnnounces(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	qs := replicas(t, 2, QueueOptions{Slots: 1, UserRunning: 1, UserWaiting: 10})
	mustSubmit(t, qs[0], "a1", "a", "")
	mustSubmit(t, qs[0], "b1", "b", "")
	mustNext(t, qs[0]) // a1
	wake := qs[1].Listen(ctx)
	recv := func(what string) {
		t.Helper()
		select {
		case <-wake:
		case <-time.After(10 * time.Second):
			t.Fatalf("no notification %s", what)
		}
	}
	recv("after listening")
	removed, next, err := qs[0].ReleaseNext(ctx, "a1")
	if err != nil || !removed || idOf(next) != "b1" {
		t.Fatalf("ReleaseNext(a1): %v, %+v, %v; want removed and b1", removed, next, err)
	}
	recv("after ReleaseNext")
	users := func() []string {
		t.Helper()
		rows, err := qs[1].db.pool.Query(ctx, `SELECT user_id FROM queue_users ORDER BY user_id`)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := users(); fmt.Sprint(got) != "[b]" {
		t.Errorf("users with a turn after a1 ended: got %v, want [b] (a has no job left)", got)
	}
	mustSubmit(t, qs[1], "a2", "a", "")
	if removed, next, err := qs[1].ReleaseNext(ctx, "b1"); err != nil || removed || next != nil {
		t.Errorf("ReleaseNext(b1) by a replica that does not own it: %v, %+v, %v; want nothing", removed, next, err)
	}
	if removed, next, err := qs[0].ReleaseNext(ctx, "b1"); err != nil || !removed || idOf(next) != "a2" {
		t.Errorf("ReleaseNext(b1): %v, %+v, %v; want removed and a2", removed, next, err)
	}
	if got := users(); fmt.Sprint(got) != "[a]" {
		t.Errorf("users with a turn after b1 ended: got %v, want [a]", got)
	}
}
