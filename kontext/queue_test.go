package kontext

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// guard bounds every wait in these tests; it is a failure guard only, never
// something a test relies on to pass.
const guard = 10 * time.Second

// harness drives a Queue with work functions the test controls: each job's
// Run reports that it started and then waits until the test releases it or
// its ctx ends.
type harness struct {
	t      *testing.T
	q      *Queue
	starts chan string // job ids, in the order their Run started

	mu      sync.Mutex
	gates   map[string]*gate
	tickets map[string]*Ticket
}

type gate struct {
	started chan struct{} // closed when Run starts
	release chan error    // Run returns what is sent here
	ctxDone chan struct{} // closed when Run returns because its ctx ended
	cause   error         // context.Cause of Run's ctx when it ended
}

// newHarness makes a queue with opts; at the end of the test it shuts the
// queue down (canceling whatever still runs) and checks that no goroutine
// leaked.
func newHarness(t *testing.T, opts QueueOptions) *harness {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	h := &harness{
		t:       t,
		q:       NewQueue(opts),
		starts:  make(chan string, 1000),
		gates:   make(map[string]*gate),
		tickets: make(map[string]*Ticket),
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // cancel whatever still runs
		if _, err := h.q.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("cleanup Shutdown: %v", err)
		}
	})
	return h
}

func (h *harness) gate(id string) *gate {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.gates[id]
	if g == nil {
		g = &gate{started: make(chan struct{}), release: make(chan error, 1), ctxDone: make(chan struct{})}
		h.gates[id] = g
	}
	return g
}

// job returns a controlled job.
func (h *harness) job(id, user, serial string) Job {
	g := h.gate(id)
	return Job{ID: id, User: user, Serial: serial, Run: func(ctx context.Context) error {
		close(g.started)
		h.starts <- id
		select {
		case err := <-g.release:
			return err
		case <-ctx.Done():
			g.cause = context.Cause(ctx)
			close(g.ctxDone)
			return ctx.Err()
		}
	}}
}

// submit submits a controlled job and fails the test if it is refused.
func (h *harness) submit(id, user, serial string) *Ticket {
	h.t.Helper()
	return h.submitJob(context.Background(), h.job(id, user, serial))
}

func (h *harness) submitJob(ctx context.Context, job Job) *Ticket {
	h.t.Helper()
	tk, err := h.q.Submit(ctx, job)
	if err != nil {
		h.t.Fatalf("Submit(%s): %v", job.ID, err)
	}
	h.mu.Lock()
	h.tickets[job.ID] = tk
	h.mu.Unlock()
	return tk
}

func (h *harness) ticket(id string) *Ticket {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tickets[id]
}

// waitStarted waits until the job's Run has started.
func (h *harness) waitStarted(id string) {
	h.t.Helper()
	select {
	case <-h.gate(id).started:
	case <-time.After(guard):
		h.t.Fatalf("job %s did not start", id)
	}
}

// started reports whether the job's Run has started.
func (h *harness) started(id string) bool {
	select {
	case <-h.gate(id).started:
		return true
	default:
		return false
	}
}

// nextStart returns the id of the next job whose Run started.
func (h *harness) nextStart() string {
	h.t.Helper()
	select {
	case id := <-h.starts:
		return id
	case <-time.After(guard):
		h.t.Fatalf("no job started")
		return ""
	}
}

// finish makes the job's Run return err and waits until its ticket is done.
func (h *harness) finish(id string, err error) {
	h.t.Helper()
	h.waitStarted(id)
	h.gate(id).release <- err
	waitDone(h.t, h.ticket(id))
}

func waitDone(t *testing.T, tk *Ticket) {
	t.Helper()
	select {
	case <-tk.Done():
	case <-time.After(guard):
		t.Fatalf("ticket not done")
	}
}

func (h *harness) wantStats(running, waiting int) {
	h.t.Helper()
	st := h.q.Stats()
	if st.Running != running || st.Waiting != waiting {
		h.t.Fatalf("Stats() = running %d, waiting %d; want running %d, waiting %d", st.Running, st.Waiting, running, waiting)
	}
}

// posRecorder records the values passed to one job's Position callback.
type posRecorder struct {
	mu     sync.Mutex
	values []int
	signal chan struct{}
}

func newPosRecorder() *posRecorder { return &posRecorder{signal: make(chan struct{}, 1)} }

func (r *posRecorder) record(pos int) {
	r.mu.Lock()
	r.values = append(r.values, pos)
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

func (r *posRecorder) snapshot() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.values)
}

// waitFor waits until the latest value recorded is want.
func (r *posRecorder) waitFor(t *testing.T, name string, want int) {
	t.Helper()
	deadline := time.After(guard)
	for {
		v := r.snapshot()
		if len(v) > 0 && v[len(v)-1] == want {
			return
		}
		select {
		case <-r.signal:
		case <-deadline:
			t.Fatalf("%s: positions %v, want the latest to be %d", name, v, want)
		}
	}
}

// checkDescending checks that the values never go up and that 0, if
// present, is the last one.
func checkDescending(t *testing.T, name string, values []int) {
	t.Helper()
	for i := 1; i < len(values); i++ {
		if values[i] > values[i-1] || values[i-1] == 0 {
			t.Errorf("%s: positions %v; want them to only go down, ending at 0", name, values)
			return
		}
	}
}

func TestQueueSlotCap(t *testing.T) {
	tests := []struct {
		name        string
		slots       int
		userRunning int
		users       int
		policy      Policy
	}{
		{"round robin", 4, 4, 10, RoundRobin},
		{"fifo", 4, 4, 10, FIFO},
		{"user cap 2", 6, 2, 10, RoundRobin},
		{"single slot", 1, 1, 3, RoundRobin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			defer goleak.VerifyNone(t, ignore)
			q := NewQueue(QueueOptions{Slots: tt.slots, UserRunning: tt.userRunning, UserWaiting: 10000,
				MaxWaiting: 10000, Policy: tt.policy})
			const submitters, perSubmitter = 40, 25

			var (
				active, maxActive atomic.Int32
				full              = make(chan struct{})
				fullOnce          sync.Once
				mu                sync.Mutex
				userActive        = map[string]int{}
				serialActive      = map[string]int{}
				serialStarts      = map[string][]int{}
				violations        []string
			)
			run := func(user, serial string, n int) func(context.Context) error {
				return func(ctx context.Context) error {
					a := active.Add(1)
					for m := maxActive.Load(); a > m && !maxActive.CompareAndSwap(m, a); m = maxActive.Load() {
					}
					mu.Lock()
					userActive[user]++
					if userActive[user] > tt.userRunning {
						violations = append(violations, fmt.Sprintf("user %s: %d running", user, userActive[user]))
					}
					if serial != "" {
						serialActive[serial]++
						if serialActive[serial] > 1 {
							violations = append(violations, fmt.Sprintf("serial %s: %d running", serial, serialActive[serial]))
						}
						serialStarts[serial] = append(serialStarts[serial], n)
					}
					mu.Unlock()
					if a == int32(tt.slots) {
						fullOnce.Do(func() { close(full) })
					}
					// The first jobs hold their slots until every slot is
					// busy, which only happens if the queue fills them.
					select {
					case <-full:
					case <-time.After(guard):
						return errors.New("the slots never all filled")
					}
					mu.Lock()
					userActive[user]--
					if serial != "" {
						serialActive[serial]--
					}
					mu.Unlock()
					active.Add(-1)
					return nil
				}
			}

			var wg sync.WaitGroup
			tickets := make(chan *Ticket, submitters*perSubmitter)
			errs := make(chan error, submitters*perSubmitter)
			for s := range submitters {
				wg.Go(func() {
					for n := range perSubmitter {
						user := fmt.Sprintf("u%d", (s+n)%tt.users)
						serial := ""
						if n%2 == 0 {
							serial = fmt.Sprintf("conv%d", s) // this submitter's conversation
						}
						tk, err := q.Submit(context.Background(), Job{ID: fmt.Sprint(s, "/", n), User: user,
							Serial: serial, Run: run(user, serial, n)})
						if err != nil {
							errs <- err
							continue
						}
						tickets <- tk
					}
				})
			}
			wg.Wait()
			close(tickets)
			close(errs)
			for err := range errs {
				t.Fatalf("Submit: %v", err)
			}
			for tk := range tickets {
				waitDone(t, tk)
				if err := tk.Err(); err != nil {
					t.Errorf("job Err() = %v, want nil", err)
				}
			}
			if got, want := int(maxActive.Load()), tt.slots; got != want {
				t.Errorf("max concurrent Run = %d, want %d", got, want)
			}
			for _, v := range violations {
				t.Error(v)
			}
			for serial, starts := range serialStarts {
				if !slices.IsSorted(starts) {
					t.Errorf("serial %s started in order %v, want submission order", serial, starts)
				}
			}
			if jobs, err := q.Shutdown(context.Background()); len(jobs) != 0 || err != nil {
				t.Errorf("Shutdown = %d jobs, %v; want 0, nil", len(jobs), err)
			}
		})
	}
}

func TestQueueWorkConservation(t *testing.T) {
	type sub struct{ id, user, serial string }
	tests := []struct {
		name        string
		slots       int
		userRunning int
		submit      []sub
		release     string
		wantStart   string // starts as soon as release's slot frees
		wantWaiting int
	}{
		{
			name:  "next waiting job takes the slot",
			slots: 2, userRunning: 2,
			submit:  []sub{{"a1", "a", ""}, {"b1", "b", ""}, {"c1", "c", ""}, {"d1", "d", ""}},
			release: "a1", wantStart: "c1", wantWaiting: 1,
		},
		{
			name:  "skips a user at the running cap",
			slots: 3, userRunning: 2,
			submit:  []sub{{"a1", "a", ""}, {"a2", "a", ""}, {"b1", "b", ""}, {"a3", "a", ""}, {"c1", "c", ""}},
			release: "b1", wantStart: "c1", wantWaiting: 1,
		},
		{
			name:  "skips a job behind a busy serial",
			slots: 2, userRunning: 2,
			submit:  []sub{{"a1", "a", "X"}, {"b1", "b", ""}, {"c1", "c", "X"}, {"d1", "d", ""}},
			release: "b1", wantStart: "d1", wantWaiting: 1,
		},
		{
			name:  "a freed serial lets its next job start",
			slots: 2, userRunning: 2,
			submit:  []sub{{"a1", "a", "X"}, {"b1", "b", ""}, {"c1", "c", "X"}, {"d1", "d", "X"}},
			release: "a1", wantStart: "c1", wantWaiting: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, QueueOptions{Slots: tt.slots, UserRunning: tt.userRunning})
			for _, s := range tt.submit {
				h.submit(s.id, s.user, s.serial)
			}
			h.finish(tt.release, nil)
			// Dispatch happens before the finished ticket is done.
			h.wantStats(tt.slots, tt.wantWaiting)
			if got := h.ticket(tt.wantStart).Position(); got != 0 {
				t.Errorf("%s Position() = %d after the slot freed, want 0 (started)", tt.wantStart, got)
			}
			h.waitStarted(tt.wantStart)
		})
	}
}

// startOrder submits the jobs (ids are "<user><n>") to a one-slot queue,
// then releases each started job in turn, returning the order they started.
func startOrder(t *testing.T, policy Policy, ids []string) []string {
	t.Helper()
	h := newHarness(t, QueueOptions{Slots: 1, UserRunning: 1, UserWaiting: 100, Policy: policy})
	for _, id := range ids {
		h.submit(id, id[:1], "")
	}
	var got []string
	for range ids {
		id := h.nextStart()
		got = append(got, id)
		h.finish(id, nil)
	}
	return got
}

func TestQueueRoundRobinOrder(t *testing.T) {
	tests := []struct {
		name   string
		submit []string
		want   []string
	}{
		{
			name:   "heavy batch then light users",
			submit: []string{"z1", "h1", "h2", "h3", "h4", "a1", "b1"},
			want:   []string{"z1", "h1", "a1", "b1", "h2", "h3", "h4"},
		},
		{
			name:   "light user is served at the next turnover",
			submit: []string{"h1", "h2", "h3", "h4", "a1"},
			want:   []string{"h1", "a1", "h2", "h3", "h4"},
		},
		{
			name:   "users take turns",
			submit: []string{"a1", "a2", "a3", "b1", "b2", "c1", "c2"},
			want:   []string{"a1", "b1", "c1", "a2", "b2", "c2", "a3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := startOrder(t, RoundRobin, tt.submit); !slices.Equal(got, tt.want) {
				t.Errorf("start order = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestQueueFIFOOrder(t *testing.T) {
	tests := []struct {
		name   string
		submit []string
	}{
		{"heavy batch then light users", []string{"z1", "h1", "h2", "h3", "h4", "a1", "b1"}},
		{"interleaved users", []string{"a1", "b1", "a2", "c1", "b2", "a3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, want := startOrder(t, FIFO, tt.submit), tt.submit; !slices.Equal(got, want) {
				t.Errorf("start order = %v, want %v", got, want)
			}
		})
	}
}

func TestQueueUserRunningCap(t *testing.T) {
	h := newHarness(t, QueueOptions{Slots: 4, UserRunning: 2})
	for _, id := range []string{"a1", "a2", "a3", "a4"} {
		h.submit(id, "a", "")
	}
	h.waitStarted("a1")
	h.waitStarted("a2")
	h.wantStats(2, 2) // two slots free, but user a is at the cap
	if h.started("a3") || h.started("a4") {
		t.Fatalf("a3 or a4 started past the user's running cap")
	}
	h.submit("b1", "b", "")
	h.waitStarted("b1")
	h.wantStats(3, 2)
	h.finish("a1", nil)
	h.waitStarted("a3")
	h.wantStats(3, 1)
	if h.started("a4") {
		t.Errorf("a4 started past the user's running cap")
	}
}

func TestQueueSerial(t *testing.T) {
	h := newHarness(t, QueueOptions{Slots: 4, UserRunning: 4})
	h.submit("x1", "a", "X")
	h.submit("x2", "b", "X") // same conversation, another user
	h.submit("y1", "a", "Y") // another conversation runs beside X
	h.submit("x3", "a", "X")
	h.submit("p1", "a", "") // a's job after its blocked x3 starts
	for _, id := range []string{"x1", "y1", "p1"} {
		h.waitStarted(id)
	}
	h.wantStats(3, 2) // a slot is free, but x2 and x3 wait for x1
	h.finish("x1", nil)
	h.waitStarted("x2")
	h.wantStats(3, 1)
	if h.started("x3") {
		t.Fatalf("x3 started while x2 of the same serial runs")
	}
	h.finish("x2", nil)
	h.waitStarted("x3")
	h.wantStats(3, 0)
}

func TestQueueLimits(t *testing.T) {
	type sub struct{ id, user, serial string }
	tests := []struct {
		name      string
		opts      QueueOptions
		submit    []sub // all accepted
		refused   sub
		wantKind  error
		wantLimit int
		wantMsg   string
	}{
		{
			name:      "user waiting limit",
			opts:      QueueOptions{Slots: 1, UserWaiting: 2, MaxWaiting: 10},
			submit:    []sub{{"a0", "a", ""}, {"a1", "a", ""}, {"a2", "a", ""}, {"b1", "b", ""}},
			refused:   sub{"a3", "a", ""},
			wantKind:  ErrUserWaitingLimit,
			wantLimit: 2,
			wantMsg:   "you already have 2 images waiting",
		},
		{
			name:      "queue full",
			opts:      QueueOptions{Slots: 1, UserWaiting: 5, MaxWaiting: 3},
			submit:    []sub{{"z0", "z", ""}, {"a1", "a", ""}, {"b1", "b", ""}, {"c1", "c", ""}},
			refused:   sub{"d1", "d", ""},
			wantKind:  ErrQueueFull,
			wantLimit: 3,
			wantMsg:   "queue is full (3 images waiting)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.opts)
			for _, s := range tt.submit {
				h.submit(s.id, s.user, s.serial)
			}
			tk, err := h.q.Submit(context.Background(), h.job(tt.refused.id, tt.refused.user, tt.refused.serial))
			if tk != nil {
				t.Errorf("Submit returned a ticket with its error")
			}
			if !errors.Is(err, tt.wantKind) {
				t.Fatalf("Submit error = %v, want errors.Is %v", err, tt.wantKind)
			}
			var le *LimitError
			if !errors.As(err, &le) {
				t.Fatalf("Submit error = %T, want *LimitError", err)
			}
			if got, want := le.Limit, tt.wantLimit; got != want {
				t.Errorf("Limit = %d, want %d", got, want)
			}
			if got := err.Error(); !strings.Contains(got, tt.wantMsg) {
				t.Errorf("Error() = %q, want it to contain %q", got, tt.wantMsg)
			}
			// Cancelling a waiting job frees a place.
			h.ticket(tt.submit[1].id).Cancel()
			h.submit(tt.refused.id, tt.refused.user, tt.refused.serial)
		})
	}
	t.Run("a job that can start at once is not refused", func(t *testing.T) {
		h := newHarness(t, QueueOptions{Slots: 2, UserRunning: 2, UserWaiting: 1, MaxWaiting: 1})
		h.submit("a1", "a", "X")
		h.submit("a2", "a", "X") // waits behind a1: a's waiting place and the queue are full
		h.submit("a3", "a", "")  // but this one starts
		h.waitStarted("a3")
		h.wantStats(2, 1)
	})
}

func TestQueuePositions(t *testing.T) {
	t.Run("order", func(t *testing.T) {
		tests := []struct {
			policy Policy
			want   map[string]int
		}{
			{RoundRobin, map[string]int{"h1": 1, "a1": 2, "b1": 3, "h2": 4, "h3": 5}},
			{FIFO, map[string]int{"h1": 1, "h2": 2, "h3": 3, "a1": 4, "b1": 5}},
		}
		for _, tt := range tests {
			t.Run(tt.policy.String(), func(t *testing.T) {
				h := newHarness(t, QueueOptions{Slots: 1, Policy: tt.policy})
				for _, id := range []string{"z0", "h1", "h2", "h3", "a1", "b1"} {
					h.submit(id, id[:1], "")
				}
				h.waitStarted("z0")
				for id, want := range tt.want {
					if got := h.ticket(id).Position(); got != want {
						t.Errorf("%s Position() = %d, want %d", id, got, want)
					}
				}
				if got := h.ticket("z0").Position(); got != 0 {
					t.Errorf("running z0 Position() = %d, want 0", got)
				}
			})
		}
	})

	t.Run("callbacks", func(t *testing.T) {
		h := newHarness(t, QueueOptions{Slots: 1})
		h.submit("z0", "z", "")
		ids := []string{"j1", "j2", "j3"}
		rec := map[string]*posRecorder{}
		for _, id := range ids {
			r := newPosRecorder()
			rec[id] = r
			job := h.job(id, "u"+id, "")
			job.Position = func(pos int) {
				h.q.Stats() // would deadlock if called with the queue's lock held
				r.record(pos)
			}
			h.submitJob(context.Background(), job)
		}
		for i, id := range ids {
			rec[id].waitFor(t, id, i+1)
			if got, want := h.ticket(id).Position(), i+1; got != want {
				t.Errorf("%s Position() = %d, want %d", id, got, want)
			}
		}
		h.finish("z0", nil)
		rec["j1"].waitFor(t, "j1", 0)
		rec["j2"].waitFor(t, "j2", 1)
		rec["j3"].waitFor(t, "j3", 2)
		h.finish("j1", nil)
		rec["j2"].waitFor(t, "j2", 0)
		rec["j3"].waitFor(t, "j3", 1)
		h.finish("j2", nil)
		h.finish("j3", nil)
		if _, err := h.q.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		for _, id := range ids {
			v := rec[id].snapshot()
			checkDescending(t, id, v)
			if len(v) == 0 || v[len(v)-1] != 0 {
				t.Errorf("%s: positions %v, want the last to be 0", id, v)
			}
		}
	})

	t.Run("a user served at once moves back", func(t *testing.T) {
		h := newHarness(t, QueueOptions{Slots: 3, UserRunning: 3})
		h.submit("a1", "a", "X")
		h.submit("c0", "c", "")  // c is served after a
		h.submit("a2", "a", "X") // waits behind a1
		h.submit("c1", "c", "X") // waits behind a2
		if got, want := h.ticket("a2").Position(), 1; got != want {
			t.Fatalf("a2 Position() = %d, want %d", got, want)
		}
		h.submit("a3", "a", "") // starts at once: a has had the latest turn
		h.waitStarted("a3")
		for id, want := range map[string]int{"c1": 1, "a2": 2} {
			if got := h.ticket(id).Position(); got != want {
				t.Errorf("%s Position() = %d, want %d", id, got, want)
			}
		}
	})

	t.Run("started at once is told 0", func(t *testing.T) {
		h := newHarness(t, QueueOptions{Slots: 1})
		r := newPosRecorder()
		job := h.job("j1", "a", "")
		job.Position = r.record
		h.submitJob(context.Background(), job)
		r.waitFor(t, "j1", 0)
		h.finish("j1", nil)
	})
}

func TestQueuePositionsCoalesce(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	defer goleak.VerifyNone(t, ignore)
	const n = 10000
	q := NewQueue(QueueOptions{Slots: 1, UserWaiting: n, MaxWaiting: n})
	if _, err := q.Submit(context.Background(), Job{ID: "blocker", Run: func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}}); err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	var holdOnce sync.Once
	var remaining atomic.Int64
	remaining.Store(n)
	allTold := make(chan struct{})
	told := make([]atomic.Bool, n)
	for i := range n {
		job := Job{ID: fmt.Sprint(i), User: "heavy", Run: func(ctx context.Context) error { return nil },
			Position: func(pos int) {
				// The first call blocks the notifier until the burst is
				// over: the burst must not wait for it, and must then cost
				// one more pass, not one per change.
				holdOnce.Do(func() { <-hold })
				if pos == min(i+1, PositionBeyond) && !told[i].Swap(true) && remaining.Add(-1) == 0 {
					close(allTold)
				}
			}}
		if _, err := q.Submit(context.Background(), job); err != nil {
			t.Fatalf("Submit %d: %v", i, err)
		}
	}
	close(hold)
	select {
	case <-allTold:
	case <-time.After(guard):
		t.Fatalf("%d jobs were never told their position", remaining.Load())
	}
	q.mu.Lock()
	passes := q.passes
	q.mu.Unlock()
	if passes > 2 {
		t.Errorf("position passes for a burst of %d submits = %d, want at most 2", n, passes)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	jobs, _ := q.Shutdown(ctx)
	if got := len(jobs); got != n {
		t.Errorf("Shutdown handed back %d jobs, want %d", got, n)
	}
}

func TestQueueCancelWaiting(t *testing.T) {
	h := newHarness(t, QueueOptions{Slots: 1})
	h.submit("z0", "z", "")
	ids := []string{"j1", "j2", "j3"}
	rec := map[string]*posRecorder{}
	for _, id := range ids {
		r := newPosRecorder()
		rec[id] = r
		job := h.job(id, "u"+id, "")
		job.Position = r.record
		h.submitJob(context.Background(), job)
	}
	for i, id := range ids {
		rec[id].waitFor(t, id, i+1)
	}
	j2 := h.ticket("j2")
	j2.Cancel()
	waitDone(t, j2)
	if err := j2.Err(); !errors.Is(err, ErrCanceled) {
		t.Errorf("canceled j2 Err() = %v, want ErrCanceled", err)
	}
	if got := j2.Position(); got != 0 {
		t.Errorf("canceled j2 Position() = %d, want 0", got)
	}
	h.wantStats(1, 2)
	rec["j3"].waitFor(t, "j3", 2) // moved up
	j2.Cancel()                   // no effect once done
	h.finish("z0", nil)
	if got, want := h.nextStart(), "z0"; got != want {
		t.Fatalf("first start = %s, want %s", got, want)
	}
	if got, want := h.nextStart(), "j1"; got != want {
		t.Fatalf("second start = %s, want %s", got, want)
	}
	h.finish("j1", nil)
	if got, want := h.nextStart(), "j3"; got != want {
		t.Fatalf("third start = %s, want %s", got, want)
	}
	h.finish("j3", nil)
	if _, err := h.q.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if h.started("j2") {
		t.Errorf("canceled j2 ran")
	}
	if got, want := rec["j2"].snapshot(), []int{2}; !slices.Equal(got, want) {
		t.Errorf("canceled j2 positions = %v, want %v (nothing after the cancel)", got, want)
	}
}

func TestQueueCancelRunning(t *testing.T) {
	h := newHarness(t, QueueOptions{Slots: 1})
	j1 := h.submit("j1", "a", "")
	h.submit("j2", "b", "")
	h.waitStarted("j1")
	j1.Cancel()
	select {
	case <-h.gate("j1").ctxDone:
	case <-time.After(guard):
		t.Fatalf("j1's ctx was not canceled")
	}
	waitDone(t, j1)
	if err := j1.Err(); !errors.Is(err, ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Errorf("j1 Err() = %v, want it to match ErrCanceled and context.Canceled", err)
	}
	if got := h.gate("j1").cause; got != ErrCanceled {
		t.Errorf("context.Cause of j1's ctx = %v, want ErrCanceled", got)
	}
	h.waitStarted("j2")
	h.wantStats(1, 0)
}

func TestQueueSubmitContext(t *testing.T) {
	t.Run("already done", func(t *testing.T) {
		canceled, cancel := context.WithCancel(context.Background())
		cancel()
		expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel2()
		tests := []struct {
			name string
			ctx  context.Context
			want error
		}{
			{"canceled", canceled, context.Canceled},
			{"deadline exceeded", expired, context.DeadlineExceeded},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				h := newHarness(t, QueueOptions{})
				tk, err := h.q.Submit(tt.ctx, h.job("j1", "a", ""))
				if tk != nil || !errors.Is(err, tt.want) {
					t.Errorf("Submit = %v, %v; want nil, %v", tk, err, tt.want)
				}
				h.wantStats(0, 0)
			})
		}
	})

	t.Run("ends while waiting", func(t *testing.T) {
		h := newHarness(t, QueueOptions{Slots: 1})
		h.submit("z0", "z", "")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		j1 := h.submitJob(ctx, h.job("j1", "a", ""))
		h.submit("j2", "b", "")
		h.wantStats(1, 2)
		cancel()
		waitDone(t, j1)
		if err := j1.Err(); err != context.Canceled {
			t.Errorf("j1 Err() = %v, want context.Canceled", err)
		}
		h.wantStats(1, 1)
		h.finish("z0", nil)
		h.waitStarted("j2")
		if h.started("j1") {
			t.Errorf("j1 ran after its Submit ctx ended")
		}
	})

	t.Run("ends while running", func(t *testing.T) {
		h := newHarness(t, QueueOptions{Slots: 1})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		j1 := h.submitJob(ctx, h.job("j1", "a", ""))
		h.submit("j2", "b", "")
		h.waitStarted("j1")
		cancel()
		waitDone(t, j1)
		if err := j1.Err(); err != context.Canceled {
			t.Errorf("j1 Err() = %v, want Run's error context.Canceled", err)
		}
		h.waitStarted("j2")
	})
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestQueuePanic(t *testing.T) {
	tests := []struct {
		name  string
		value any
	}{
		{"string", "boom"},
		{"error", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			h := newHarness(t, QueueOptions{Slots: 1,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelError}))})
			j1 := h.submitJob(context.Background(), Job{ID: "j1", User: "a", Run: func(ctx context.Context) error {
				panic(tt.value)
			}})
			h.submit("j2", "b", "")
			waitDone(t, j1)
			var pe *PanicError
			if err := j1.Err(); !errors.As(err, &pe) {
				t.Fatalf("Err() = %v, want *PanicError", err)
			}
			if pe.Value != tt.value {
				t.Errorf("PanicError.Value = %v, want %v", pe.Value, tt.value)
			}
			if !bytes.Contains(pe.Stack, []byte("queue_test.go")) {
				t.Errorf("PanicError.Stack does not show the panicking frame:\n%s", pe.Stack)
			}
			if err, ok := tt.value.(error); ok && !errors.Is(j1.Err(), err) {
				t.Errorf("Err() = %v, want errors.Is %v", j1.Err(), err)
			}
			h.waitStarted("j2") // the slot was freed
			if got := logs.String(); !strings.Contains(got, "level=ERROR") || !strings.Contains(got, "job=j1") {
				t.Errorf("log = %q, want an error record for j1", got)
			}
		})
	}
}

func TestQueueShutdown(t *testing.T) {
	h := newHarness(t, QueueOptions{Slots: 2, UserRunning: 1})
	for _, s := range [][2]string{{"a1", "a"}, {"b1", "b"}, {"a2", "a"}, {"b2", "b"}, {"c1", "c"}, {"a3", "a"}} {
		h.submit(s[0], s[1], "")
	}
	h.waitStarted("a1")
	h.waitStarted("b1")
	// a and b have been served; c never: c first, then a and b in the
	// order they were served, round after round.
	wantOrder := []string{"c1", "a2", "b2", "a3"}
	for i, id := range wantOrder {
		if got, want := h.ticket(id).Position(), i+1; got != want {
			t.Errorf("%s Position() = %d, want %d", id, got, want)
		}
	}

	type result struct {
		jobs []Job
		err  error
	}
	done := make(chan result, 1)
	go func() {
		jobs, err := h.q.Shutdown(context.Background())
		done <- result{jobs, err}
	}()
	for _, id := range wantOrder {
		tk := h.ticket(id)
		waitDone(t, tk)
		if err := tk.Err(); err != ErrShutdown {
			t.Errorf("handed back %s Err() = %v, want ErrShutdown", id, err)
		}
	}
	if _, err := h.q.Submit(context.Background(), h.job("d1", "d", "")); err != ErrShutdown {
		t.Errorf("Submit during Shutdown = %v, want ErrShutdown", err)
	}
	select {
	case r := <-done:
		t.Fatalf("Shutdown returned (%d jobs, %v) while jobs were running", len(r.jobs), r.err)
	default:
	}
	h.finish("a1", nil)
	h.finish("b1", errors.New("b1 failed"))
	var r result
	select {
	case r = <-done:
	case <-time.After(guard):
		t.Fatalf("Shutdown did not return after the running jobs finished")
	}
	if r.err != nil {
		t.Errorf("Shutdown error = %v, want nil", r.err)
	}
	var got []string
	for _, j := range r.jobs {
		got = append(got, j.ID)
		if j.Run == nil {
			t.Errorf("handed back job %s has no Run", j.ID)
		}
	}
	if !slices.Equal(got, wantOrder) {
		t.Errorf("handed back %v, want %v", got, wantOrder)
	}
	if err := h.ticket("a1").Err(); err != nil {
		t.Errorf("a1 Err() = %v, want nil", err)
	}
	if err := h.ticket("b1").Err(); err == nil || err.Error() != "b1 failed" {
		t.Errorf("b1 Err() = %v, want Run's error", err)
	}
	h.wantStats(0, 0)
	if jobs, err := h.q.Shutdown(context.Background()); jobs != nil || err != nil {
		t.Errorf("second Shutdown = %v, %v; want nil, nil", jobs, err)
	}
}

func TestQueueShutdownDeadline(t *testing.T) {
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	tests := []struct {
		name    string
		ctx     func() (context.Context, context.CancelFunc) // cancel is called once Shutdown has begun
		wantErr error
	}{
		{"canceled", func() (context.Context, context.CancelFunc) {
			return context.WithCancel(context.Background())
		}, context.Canceled},
		{"deadline passed", func() (context.Context, context.CancelFunc) {
			return expired, func() {}
		}, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, QueueOptions{Slots: 1})
			j1 := h.submit("j1", "a", "") // never released: only its ctx ends it
			w1 := h.submit("w1", "b", "")
			h.waitStarted("j1")
			ctx, cancel := tt.ctx()
			done := make(chan error, 1)
			go func() {
				_, err := h.q.Shutdown(ctx)
				done <- err
			}()
			waitDone(t, w1) // Shutdown has begun
			cancel()
			select {
			case <-h.gate("j1").ctxDone:
			case <-time.After(guard):
				t.Fatalf("running j1's ctx was not canceled at the deadline")
			}
			select {
			case err := <-done:
				if err != tt.wantErr {
					t.Errorf("Shutdown error = %v, want %v", err, tt.wantErr)
				}
			case <-time.After(guard):
				t.Fatalf("Shutdown did not return")
			}
			// Shutdown waited for Run to return.
			select {
			case <-j1.Done():
			default:
				t.Fatalf("Shutdown returned before j1's Run did")
			}
			if err := j1.Err(); !errors.Is(err, ErrShutdown) || !errors.Is(err, context.Canceled) {
				t.Errorf("j1 Err() = %v, want it to match ErrShutdown and context.Canceled", err)
			}
		})
	}
}

func TestQueueSubmitAfterShutdown(t *testing.T) {
	h := newHarness(t, QueueOptions{})
	if jobs, err := h.q.Shutdown(context.Background()); len(jobs) != 0 || err != nil {
		t.Fatalf("Shutdown = %v, %v; want no jobs, nil", jobs, err)
	}
	if tk, err := h.q.Submit(context.Background(), h.job("j1", "a", "")); tk != nil || err != ErrShutdown {
		t.Errorf("Submit after Shutdown = %v, %v; want nil, ErrShutdown", tk, err)
	}
	if jobs, err := h.q.Shutdown(context.Background()); jobs != nil || err != nil {
		t.Errorf("second Shutdown = %v, %v; want nil, nil", jobs, err)
	}
}

func TestQueueSubmitInvalid(t *testing.T) {
	q := NewQueue(QueueOptions{})
	if _, err := q.Submit(context.Background(), Job{ID: "j1"}); err == nil {
		t.Errorf("Submit without Run succeeded, want an error")
	}
	if _, err := q.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// checkInvariants checks the queue's internal bookkeeping; it must hold
// whenever the lock is free.
func checkInvariants(q *Queue) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	running, held := 0, 0
	poolHeld := map[*pool]int{}
	for t := q.rhead; t != nil; t = t.gnext {
		running++
		if t.slot {
			held++
			poolHeld[t.p]++
		}
		if t.state.Load() != stRunning {
			return fmt.Errorf("%s in the running list is not running", t.job.ID)
		}
	}
	if running != q.running {
		return fmt.Errorf("running list has %d, q.running = %d", running, q.running)
	}
	if held != q.busy {
		return fmt.Errorf("%d running jobs hold a slot, q.busy = %d", held, q.busy)
	}
	if q.busy > q.opts.Slots || q.busy > q.running {
		return fmt.Errorf("%d slots held with %d running and %d slots", q.busy, q.running, q.opts.Slots)
	}
	for name, p := range q.pools {
		if p.busy != poolHeld[p] || p.busy > p.limit || p.limit > q.opts.Slots || q.pools[p.name] != p || name != p.name {
			return fmt.Errorf("pool %q: %d slots held, counted %d, limit %d", name, p.busy, poolHeld[p], p.limit)
		}
	}
	waiting, prevSeq := 0, uint64(0)
	userWaiting := map[*user]int{}
	userReady := map[*user]int{}
	poolWaiting, poolReady := map[*pool]int{}, map[*pool]int{}
	mayRun := "" // a waiting job that may run now
	now := time.Now()
	for t := q.whead; t != nil; t = t.gnext {
		waiting++
		if t.seq <= prevSeq {
			return fmt.Errorf("waiting list out of submission order at %s", t.job.ID)
		}
		prevSeq = t.seq
		userWaiting[t.u]++
		wantReady := t.s == nil || (!t.s.running && t.s.head == t)
		if t.ready != wantReady {
			return fmt.Errorf("%s ready = %v, want %v", t.job.ID, t.ready, wantReady)
		}
		poolWaiting[t.p]++
		if t.ready {
			userReady[t.u]++
			poolReady[t.p]++
			if t.u.running < q.opts.UserRunning && q.poolFree(t.p, now) {
				mayRun = t.job.ID
			}
		}
		if q.users[t.job.User] != t.u {
			return fmt.Errorf("%s's user is not in the map", t.job.ID)
		}
	}
	if waiting != q.waiting {
		return fmt.Errorf("waiting list has %d, q.waiting = %d", waiting, q.waiting)
	}
	eligible := 0
	for name, u := range q.users {
		if u.running == 0 && u.waiting == 0 {
			return fmt.Errorf("user %q kept with nothing waiting or running", name)
		}
		if u.waiting != userWaiting[u] || u.ready != userReady[u] {
			return fmt.Errorf("user %q: waiting %d ready %d, counted %d and %d", name, u.waiting, u.ready, userWaiting[u], userReady[u])
		}
		n := 0
		for t := u.head; t != nil; t = t.unext {
			n++
		}
		if n != u.waiting {
			return fmt.Errorf("user %q: list has %d, waiting = %d", name, n, u.waiting)
		}
		if want := u.ready > 0 && u.running < q.opts.UserRunning; u.eligible != want {
			return fmt.Errorf("user %q: eligible = %v, want %v", name, u.eligible, want)
		}
		if u.eligible {
			eligible++
		}
		if u.inRing != (u.waiting > 0) {
			return fmt.Errorf("user %q: inRing = %v with %d waiting", name, u.inRing, u.waiting)
		}
	}
	if eligible != q.eligible {
		return fmt.Errorf("eligible users %d, q.eligible = %d", eligible, q.eligible)
	}
	for name, p := range q.pools {
		if p.waiting != poolWaiting[p] || p.ready != poolReady[p] {
			return fmt.Errorf("pool %q: waiting %d ready %d, counted %d and %d", name, p.waiting, p.ready, poolWaiting[p], poolReady[p])
		}
	}
	if q.busy < q.opts.Slots && mayRun != "" {
		return fmt.Errorf("a slot is free (%d held) while %s may run", q.busy, mayRun)
	}
	var prev *user
	for u := q.ringHead; u != nil; u = u.rnext {
		if u.rprev != prev {
			return fmt.Errorf("ring: broken back link at %q", u.name)
		}
		if prev != nil && prev.served > u.served {
			return fmt.Errorf("ring: %q (turn %d) before %q (turn %d)", prev.name, prev.served, u.name, u.served)
		}
		if (u.served == 0) != (q.ringNew != nil && (u == q.ringNew || u.rnext != nil && isBefore(u, q.ringNew))) {
			return fmt.Errorf("ring: ringNew does not end the never-served prefix at %q", u.name)
		}
		prev = u
	}
	if prev != q.ringTail {
		return fmt.Errorf("ring: tail is wrong")
	}
	for name, s := range q.serials {
		if !s.running && s.head == nil {
			return fmt.Errorf("serial %q kept with nothing waiting or running", name)
		}
	}
	if !q.notifyDirty { // positions claim to be current: they must match a fresh pass
		for i, t := range q.dispatchOrder() {
			if want := min(i+1, PositionBeyond); t.job.Position != nil && t.told != want {
				return fmt.Errorf("%s: position %d is stale, want %d", t.job.ID, t.told, want)
			}
		}
	}
	return nil
}

// isBefore reports whether a comes before b in the ring.
func isBefore(a, b *user) bool {
	for u := a.rnext; u != nil; u = u.rnext {
		if u == b {
			return true
		}
	}
	return false
}

func TestQueueInvariants(t *testing.T) {
	for _, policy := range []Policy{RoundRobin, FIFO} {
		t.Run(policy.String(), func(t *testing.T) {
			h := newHarness(t, QueueOptions{Slots: 3, UserRunning: 2, UserWaiting: 4, MaxWaiting: 12, Policy: policy,
				Pools: map[string]int{"a": 1, "b": 2}})
			rng := rand.New(rand.NewPCG(1, uint64(policy)))
			var live []string // submitted, not known to be done
			for i := range 3000 {
				switch op := rng.IntN(10); {
				case op < 5: // submit
					id := fmt.Sprint("j", i)
					user := fmt.Sprint("u", rng.IntN(6))
					serial := ""
					if rng.IntN(2) == 0 {
						serial = fmt.Sprint("s", rng.IntN(3))
					}
					job := h.job(id, user, serial)
					job.Pool = []string{"", "a", "b"}[rng.IntN(3)]
					tk, err := h.q.Submit(context.Background(), job)
					if err != nil {
						if !errors.Is(err, ErrUserWaitingLimit) && !errors.Is(err, ErrQueueFull) {
							t.Fatalf("Submit: %v", err)
						}
						continue
					}
					h.mu.Lock()
					h.tickets[id] = tk
					h.mu.Unlock()
					live = append(live, id)
				case op < 7: // someone looks at their place in line
					if len(live) > 0 {
						h.ticket(live[rng.IntN(len(live))]).Position()
					}
				case op < 8: // a running job finishes
					select {
					case id := <-h.starts:
						h.finish(id, nil)
					default:
					}
				default: // cancel a waiting or running job
					if len(live) == 0 {
						continue
					}
					h.ticket(live[rng.IntN(len(live))]).Cancel()
				}
				// Wait for canceled running jobs to return, then check.
				for _, id := range live {
					g := h.gate(id)
					select {
					case <-g.ctxDone:
						waitDone(t, h.ticket(id))
					default:
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
				if err := checkInvariants(h.q); err != nil {
					t.Fatalf("after op %d: %v", i, err)
				}
			}
		})
	}
}

// TestQueueReleaseSlot: a job whose prediction is final gives its slot to
// the next job while it finishes (downloads), but keeps its Serial and
// still counts for Shutdown.
func TestQueueReleaseSlot(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	q := NewQueue(QueueOptions{Slots: 1, UserRunning: 2})
	released, finishA := make(chan struct{}), make(chan struct{})
	startedB, startedC := make(chan struct{}), make(chan struct{})
	a, err := q.Submit(context.Background(), Job{ID: "a", User: "u", Serial: "conv", Run: func(ctx context.Context) error {
		releaseSlot(ctx)
		releaseSlot(ctx) // twice is harmless
		close(released)
		<-finishA
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	<-released
	b, _ := q.Submit(context.Background(), Job{ID: "b", User: "v", Run: func(ctx context.Context) error { close(startedB); return nil }})
	c, _ := q.Submit(context.Background(), Job{ID: "c", User: "w", Serial: "conv", Run: func(ctx context.Context) error { close(startedC); return nil }})
	select {
	case <-startedB:
	case <-time.After(5 * time.Second):
		t.Fatal("the released slot was not given to the next job")
	}
	<-b.Done()
	select {
	case <-startedC:
		t.Fatal("a job of the same Serial started before the first one returned")
	default:
	}
	if st := q.Stats(); st.Running != 0 || st.Waiting != 1 {
		t.Errorf("stats %+v, want no slot held and c waiting for its Serial", st)
	}
	close(finishA)
	<-a.Done()
	<-c.Done()
	if _, err := q.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	releaseSlot(context.Background()) // no queue in ctx: nothing happens
}
