package kontext

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// bruteOrder recomputes the order the waiting jobs would start in from the
// queue's lists alone, the slow way (the package notes' definition): for
// FIFO the waiting list; for RoundRobin the ring's users, each giving one
// job per round in submission order, until every list is empty.
func bruteOrder(q *Queue) []*Ticket {
	var order []*Ticket
	if q.opts.Policy == FIFO {
		for t := q.whead; t != nil; t = t.gnext {
			order = append(order, t)
		}
		return order
	}
	var lists [][]*Ticket
	for u := q.ringHead; u != nil; u = u.rnext {
		var l []*Ticket
		for t := u.head; t != nil; t = t.unext {
			l = append(l, t)
		}
		lists = append(lists, l)
	}
	for round := 0; ; round++ {
		any := false
		for _, l := range lists {
			if round < len(l) {
				order = append(order, l[round])
				any = true
			}
		}
		if !any {
			return order
		}
	}
}

// lastTold records the latest value each job's Position callback got.
type lastTold struct {
	mu   sync.Mutex
	last map[string]int
}

func (l *lastTold) callback(id string) func(int) {
	return func(pos int) {
		l.mu.Lock()
		l.last[id] = pos
		l.mu.Unlock()
	}
}

func (l *lastTold) get(id string) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pos, ok := l.last[id]
	return pos, ok
}

// settle waits until the notifier has told every change.
func settle(t *testing.T, q *Queue) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for {
		q.mu.Lock()
		busy := q.notifying
		q.mu.Unlock()
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the notifier did not settle")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// TestQueuePositionsExact runs random submits, starts, finishes and
// cancels with more jobs waiting than ExactPositions, and after each
// checks every waiting job against a brute-force recomputation of the
// order: the last value its Position callback got and Ticket.Position are
// its exact place when that is within ExactPositions, PositionBeyond
// otherwise; a job that started was last told 0.
func TestQueuePositionsExact(t *testing.T) {
	for _, policy := range []Policy{RoundRobin, FIFO} {
		for _, users := range []int{3, 40, 200} {
			t.Run(fmt.Sprintf("%s/%d users", policy, users), func(t *testing.T) {
				const maxWaiting = 3 * ExactPositions
				h := newHarness(t, QueueOptions{Slots: 3, UserRunning: 2, UserWaiting: maxWaiting, MaxWaiting: maxWaiting, Policy: policy})
				told := &lastTold{last: map[string]int{}}
				rng := rand.New(rand.NewPCG(uint64(users), uint64(policy)))
				var live []string
				for i := range 1500 {
					switch op := rng.IntN(20); {
					case op < 11 || len(live) < ExactPositions: // submit
						id := fmt.Sprint("j", i)
						serial := ""
						if rng.IntN(4) == 0 {
							serial = fmt.Sprint("s", rng.IntN(5))
						}
						job := h.job(id, fmt.Sprint("u", rng.IntN(users)), serial)
						if rng.IntN(8) != 0 { // some jobs show no position
							job.Position = told.callback(id)
						}
						tk, err := h.q.Submit(context.Background(), job)
						if err != nil {
							if !errors.Is(err, ErrQueueFull) {
								t.Fatalf("Submit: %v", err)
							}
							continue
						}
						h.mu.Lock()
						h.tickets[id] = tk
						h.mu.Unlock()
						live = append(live, id)
					case op < 16: // a running job finishes
						select {
						case id := <-h.starts:
							h.finish(id, nil)
						default:
						}
					default: // cancel a job, waiting or running
						id := live[rng.IntN(len(live))]
						h.ticket(id).Cancel()
						if h.started(id) {
							waitDone(t, h.ticket(id))
						}
					}
					live = slices.DeleteFunc(live, func(id string) bool {
						select {
						case <-h.ticket(id).Done():
							return true
						default:
							return false
						}
					})
					settle(t, h.q)
					checkPositions(t, h, told, i)
					if err := checkInvariants(h.q); err != nil {
						t.Fatalf("after op %d: %v", i, err)
					}
				}
			})
		}
	}
}

// checkPositions compares every waiting job's told and asked positions
// with the brute-force order.
func checkPositions(t *testing.T, h *harness, told *lastTold, op int) {
	t.Helper()
	h.q.mu.Lock()
	order := bruteOrder(h.q)
	ids := make([]string, len(order))
	shows := make([]bool, len(order))
	for i, tk := range order {
		ids[i] = tk.job.ID
		shows[i] = tk.job.Position != nil
	}
	var running []string
	for tk := h.q.rhead; tk != nil; tk = tk.gnext {
		if tk.job.Position != nil {
			running = append(running, tk.job.ID)
		}
	}
	h.q.mu.Unlock()
	for i, id := range ids {
		want := min(i+1, PositionBeyond)
		if got := h.ticket(id).Position(); got != want {
			t.Fatalf("after op %d: %s Position() = %d, want %d (brute force: %d of %d)", op, id, got, want, i+1, len(ids))
		}
		if !shows[i] {
			continue
		}
		if got, ok := told.get(id); !ok || got != want {
			t.Fatalf("after op %d: %s was last told %d (told: %v), want %d (brute force: %d of %d)", op, id, got, ok, want, i+1, len(ids))
		}
	}
	for _, id := range running {
		if got, ok := told.get(id); !ok || got != 0 {
			t.Fatalf("after op %d: running %s was last told %d (told: %v), want 0", op, id, got, ok)
		}
	}
}
