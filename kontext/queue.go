package kontext

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// The slot queue.
//
// The provider allows a fixed number of active tasks per API key. A Queue
// owns that many slots: it never runs more than Slots jobs at once, it never
// leaves a slot free while a job that may run is waiting, and it shares the
// slots fairly between users.
//
// Scheduling. Every change (a submit, a job finishing, a cancel, a Submit
// context ending) dispatches synchronously under one mutex; there is no
// polling. A waiting job "may run" when its user has fewer than UserRunning
// jobs running, its Serial is free (no job of that Serial is running and
// no earlier job of that Serial is waiting) and its pool has a free slot.
// With RoundRobin the users that have waiting jobs form a ring ordered by
// when each was last given a slot, least recent first: the dispatcher
// gives the free slot to the first user in the ring with a job that may
// run (that user's oldest such job) and moves the user to the back. A user who enters the ring takes the place its last
// slot earns it, so someone who has never been served (or whose earlier jobs
// have all finished) is served at the next slot turnover, ahead of a heavy
// user's batch. With FIFO the oldest waiting job that may run is taken.
//
// Pools. Slots is the account's limit; Pools bounds, inside it, the slots
// of the jobs of one pool (a model's: flux-kontext-max may hold 6 of the
// account's 24). Neither is ever exceeded. A job whose pool is full is
// passed over, so it never keeps a job of another pool behind it from a
// free slot; the walk for a job that may run then skips it, which is the
// one cost pools add (at most the waiting jobs, and only while some pool
// is full). A pool whose create got a 429 (SlowPool) starts none of its
// jobs until the provider's wait has passed; the other pools go on.
// A pool smaller than the account keeps the account slots its jobs give
// back while its own jobs wait (see pick), so the account being full
// never leaves it below its limit.
//
// Costs. Submit, Cancel and a job finishing are O(1) plus the dispatch
// walk, which skips users at their running cap (at most Slots of them),
// users or jobs blocked by a busy Serial and jobs of a full pool; when no
// waiting job's pool has a free slot it does not walk at all. A user
// re-entering the ring walks back past the users served since its last
// turn. Waiting jobs cost about 650 bytes each
// (BenchmarkQueueWaiting10k).
//
// Positions. A waiting job's position is its place in the order the
// dispatcher would start the current waiting jobs if nothing else arrived:
// for RoundRobin, the users in ring order each take one job per round, each
// user's jobs in submission order; for FIFO, submission order. The
// simulation ignores UserRunning, Serial and pools: a user at their running
// cap, a job behind a busy Serial or in a full pool, keeps its place
// although it may be passed over when a slot frees. Positions are exact
// up to ExactPositions; a job placed further back is at PositionBeyond
// ("over 50 in line"): nobody can use the difference between 700th and
// 701st, and telling it would cost a callback
// to every waiting job at every start (O(waiting²) to drain a long line).
// So a position pass walks only the first ExactPositions jobs of the order
// (O(ExactPositions), whatever the number waiting or of users), and tells a
// change to the jobs in that head, to those that just left it, and to new
// jobs (PositionBeyond, once, if they land beyond it). Passes run on the
// notifier goroutine, at most one per round of callbacks, so any burst of
// changes that arrives while it is busy costs one more pass.

// ExactPositions is how far back a waiting job's position is exact.
const ExactPositions = 50

// PositionBeyond is the position of a waiting job placed after the first
// ExactPositions: "over ExactPositions in line". Ticket.Position returns it
// and a Job's Position callback is told it for such a job.
const PositionBeyond = ExactPositions + 1

// Policy selects how a Queue picks the next job.
type Policy int

const (
	// RoundRobin takes turns between users; it is the default.
	RoundRobin Policy = iota
	// FIFO starts jobs in global submission order (still honouring Serial
	// and UserRunning); it exists as a baseline for benchmarks.
	FIFO
)

func (p Policy) String() string {
	switch p {
	case RoundRobin:
		return "round-robin"
	case FIFO:
		return "fifo"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// QueueOptions configures a Queue. Zero fields take their defaults.
type QueueOptions struct {
	// Slots is how many jobs run at once; default 6.
	Slots int
	// UserRunning is how many jobs of one user run at once; default 2.
	UserRunning int
	// UserWaiting is how many jobs of one user may wait; default 5.
	UserWaiting int
	// MaxWaiting is how many jobs may wait in total; default 200.
	MaxWaiting int
	// Pools bounds the slots the jobs of one pool (Job.Pool) hold at once,
	// inside Slots; a pool not in it, and "", has only Slots.
	Pools map[string]int
	// Policy picks the next job; default RoundRobin.
	Policy Policy
	// Logger receives the queue's logs; nil discards them.
	Logger *slog.Logger
}

// Job is one unit of work for a Queue.
type Job struct {
	// ID is the caller's id, for logs and for Shutdown's hand-back.
	ID string
	// User is the fairness key (a platform user id).
	User string
	// Serial, when not empty, serialises jobs: jobs with the same Serial (a
	// conversation) never run at the same time, and start in submission
	// order.
	Serial string
	// Pool is the provider's concurrency pool the job counts against (its
	// model's, kontext.Model.Pool); "" for the account's only.
	Pool string
	// Run is the work; it holds a slot while it runs. Its ctx derives from
	// Submit's ctx (values included) and ends when that ends, on
	// Ticket.Cancel (context.Cause(ctx) == ErrCanceled), or at Shutdown's
	// deadline (context.Cause(ctx) == ErrShutdown: the work may leave a
	// prediction to be resumed after a restart); Run must then return
	// promptly. Run should load anything large (an input image) itself,
	// when it starts: a waiting job holds only this struct.
	Run func(ctx context.Context) error
	// Position, when set, is told the job's 1-based place among the waiting
	// jobs whenever it changes, and 0 once the job starts. Places up to
	// ExactPositions are exact; a job further back is told PositionBeyond
	// (once, until it moves within ExactPositions). It is called from
	// a single notifier goroutine, never with the queue's lock held, in order
	// for one job; values may be coalesced (the latest wins). A slow callback
	// delays later notifications, never the scheduler. It is not called for
	// a job after it was canceled or handed back by Shutdown.
	Position func(pos int)
}

// QueueStats is a snapshot of a Queue.
type QueueStats struct {
	// Slots is the number of slots in all.
	Slots int
	// Running is the number of slots held by running jobs (a job whose
	// prediction is final and that is only downloading has given its
	// slot back).
	Running int
	// Waiting is the number of jobs waiting for a slot.
	Waiting int
	// Pools is the same per pool, for the pools in QueueOptions.Pools and
	// those of the jobs seen so far.
	Pools map[string]PoolStats
}

// PoolStats is one pool in QueueStats.
type PoolStats struct {
	// Slots is the pool's limit; Running the slots its jobs hold; Waiting
	// its waiting jobs.
	Slots, Running, Waiting int
}

// Queue errors.
var (
	// ErrCanceled: the job was canceled with Ticket.Cancel.
	ErrCanceled = errors.New("kontext: job canceled")
	// ErrShutdown: the queue is shutting down; the job was not run, or (for
	// a running job cut short by Shutdown's deadline) not finished.
	ErrShutdown = errors.New("kontext: queue shut down")
	// ErrUserWaitingLimit: the user already has UserWaiting jobs waiting.
	ErrUserWaitingLimit = errors.New("kontext: too many waiting jobs for this user")
	// ErrQueueFull: MaxWaiting jobs are waiting in total.
	ErrQueueFull = errors.New("kontext: the queue is full")
)

// LimitError is Submit's refusal when a waiting limit is reached. Kind is
// ErrUserWaitingLimit or ErrQueueFull, so errors.Is matches it, and Limit is
// the limit that was reached. Its message is meant for the person who
// submitted the job.
type LimitError struct {
	Kind  error
	Limit int
}

func (e *LimitError) Error() string {
	images := func(n int) string {
		if n == 1 {
			return "1 image"
		}
		return fmt.Sprintf("%d images", n)
	}
	switch e.Kind {
	case ErrUserWaitingLimit:
		return fmt.Sprintf("kontext: you already have %s waiting; wait for one to finish or cancel one", images(e.Limit))
	case ErrQueueFull:
		return fmt.Sprintf("kontext: the queue is full (%s waiting); try again in a few minutes", images(e.Limit))
	}
	return fmt.Sprintf("%v (limit %d)", e.Kind, e.Limit)
}

func (e *LimitError) Unwrap() error { return e.Kind }

// PanicError is a job's error when its Run panicked. Value is what was
// passed to panic and Stack the panicking goroutine's stack.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("kontext: job panicked: %v", e.Value) }

// Unwrap returns the panic value when it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// Ticket states.
const (
	stWaiting int32 = iota
	stRunning
	stDone
)

// Ticket follows one submitted job. A Ticket is also the queue's record of
// the job: while the job waits it is linked into the user's list, the global
// list and its Serial's list; while it runs, into the running list.
type Ticket struct {
	q     *Queue
	job   Job
	ctx   context.Context // Submit's ctx; nil once done
	stop  func() bool     // stops the AfterFunc watching ctx while waiting
	state atomic.Int32    // written under q.mu; read by the notifier without it

	cancel context.CancelCauseFunc // running: cancels Run's ctx
	slot   bool                    // running and still holding its slot

	u        *user
	s        *serial
	p        *pool
	seq      uint64    // submission order
	ready    bool      // waiting and not blocked by its Serial
	pos      int       // position at the last notifier pass (q.mu)
	told     int       // last position handed to the notifier (q.mu)
	mark     uint64    // the notifier pass that last placed it in the head (q.mu)
	enqueued time.Time // for logs

	unext, uprev *Ticket // user's waiting list
	gnext, gprev *Ticket // global waiting list, or the running list
	snext, sprev *Ticket // Serial's waiting list

	done chan struct{}
	err  error
}

// user is the per-user state, present while the user has jobs waiting or
// running.
type user struct {
	name         string
	running      int
	waiting      int
	ready        int    // waiting jobs not blocked by their Serial
	eligible     bool   // ready > 0 && running < UserRunning
	served       uint64 // turn at which the user last got a slot; 0 = never
	inRing       bool
	head, tail   *Ticket // waiting jobs in submission order
	rnext, rprev *user
	cur          *Ticket // scratch for the position walk
}

// pool is the per-pool state. Pools are few (one per model) and kept.
type pool struct {
	name    string
	limit   int
	busy    int       // slots held by its running jobs
	waiting int       // its waiting jobs
	ready   int       // its waiting jobs not blocked by their Serial
	until   time.Time // SlowPool: no start before then
	timer   *time.Timer
	kept    int // the account's free slots pick keeps back for it (scratch)
}

// serial is the per-Serial state, present while a job of it waits or runs.
type serial struct {
	running    bool
	head, tail *Ticket // waiting jobs in submission order
}

// notice is one pending Position call.
type notice struct {
	t   *Ticket
	fn  func(int)
	pos int
}

// Queue is a fair scheduler of jobs over a fixed number of slots. Create it
// with NewQueue and stop it with Shutdown, which every Queue needs.
type Queue struct {
	opts QueueOptions
	log  *slog.Logger

	mu       sync.Mutex
	closed   bool
	seq      uint64
	turn     uint64
	running  int // jobs whose Run has not returned
	busy     int // slots held: running jobs that have not released theirs
	waiting  int
	eligible int // users with eligible == true
	users    map[string]*user
	serials  map[string]*serial
	pools    map[string]*pool

	ringHead, ringTail *user   // RoundRobin turn order (users with waiting jobs)
	ringNew            *user   // last never-served user at the front of the ring
	whead, wtail       *Ticket // all waiting jobs, submission order
	rhead              *Ticket // running jobs

	idle     chan struct{} // closed once closed && running == 0
	shutDone chan struct{} // closed when the first Shutdown returns

	// Positions and the notifier.
	notifyDirty  bool // the notifier must look for changed positions
	posCallbacks int  // waiting jobs with a Position callback
	started      []notice
	notifying    bool          // a notifier goroutine is running
	notifierExit chan struct{} // closed by the notifier when it exits, if set
	passes       int           // position passes run by the notifier (tests)
	shown        []*Ticket     // the head of the line at the last pass, in order
	spareShown   []*Ticket     // the buffer for the next pass's head
	fresh        []*Ticket     // jobs with a Position callback queued since the last pass
	scratch      []*user       // for visitOrder
}

// NewQueue returns a Queue with opts, zero fields set to their defaults.
func NewQueue(opts QueueOptions) *Queue {
	if opts.Slots <= 0 {
		opts.Slots = 6
	}
	if opts.UserRunning <= 0 {
		opts.UserRunning = 2
	}
	if opts.UserWaiting <= 0 {
		opts.UserWaiting = 5
	}
	if opts.MaxWaiting <= 0 {
		opts.MaxWaiting = 200
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Queue{
		opts:     opts,
		log:      log,
		users:    make(map[string]*user),
		serials:  make(map[string]*serial),
		pools:    make(map[string]*pool),
		idle:     make(chan struct{}),
		shutDone: make(chan struct{}),
	}
}

// Submit queues job, or starts it at once if a slot is free for it. It
// refuses with a *LimitError when the user's waiting limit or the total
// waiting limit is reached (a job that can start at once is never refused
// for those), with ErrShutdown once Shutdown has begun, and with ctx.Err()
// when ctx is already done. If ctx ends while the job waits, the job is
// removed and its Err is ctx.Err(); if it ends while the job runs, Run's ctx
// is canceled. Submit never blocks on anything slow.
func (q *Queue) Submit(ctx context.Context, job Job) (*Ticket, error) {
	if job.Run == nil {
		return nil, errors.New("kontext: Submit: Job.Run is nil")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, ErrShutdown
	}
	u := q.users[job.User]
	var s *serial
	if job.Serial != "" {
		s = q.serials[job.Serial]
	}
	p := q.pool(job.Pool)
	// Every change dispatches at once, so no job that may run waits while a
	// slot is free: if this one may run now, it is the one to run.
	if q.busy < q.opts.Slots && (u == nil || u.running < q.opts.UserRunning) && s == nil && q.poolFree(p, time.Now()) {
		t := q.newTicket(ctx, job, u, s, p)
		q.start(t, false)
		return t, nil
	}
	if u != nil && u.waiting >= q.opts.UserWaiting {
		return nil, &LimitError{Kind: ErrUserWaitingLimit, Limit: q.opts.UserWaiting}
	}
	if q.waiting >= q.opts.MaxWaiting {
		return nil, &LimitError{Kind: ErrQueueFull, Limit: q.opts.MaxWaiting}
	}
	t := q.newTicket(ctx, job, u, s, p)
	q.enqueue(t)
	if ctx.Done() != nil {
		t.stop = context.AfterFunc(ctx, func() { q.expire(t) })
	}
	return t, nil
}

// pool returns the state of the pool called name, creating it.
func (q *Queue) pool(name string) *pool {
	p := q.pools[name]
	if p == nil {
		p = &pool{name: name, limit: q.opts.Slots}
		if n, ok := q.opts.Pools[name]; ok && n > 0 {
			p.limit = min(n, q.opts.Slots)
		}
		q.pools[name] = p
	}
	return p
}

// poolFree reports whether a job of p may take a slot now, the account
// aside: p has one free and is not slowed down.
func (q *Queue) poolFree(p *pool, now time.Time) bool {
	return p.busy < p.limit && !now.Before(p.until)
}

// runnable reports whether some pool with a free slot has a waiting job
// not blocked by its Serial: only then may the dispatcher find a job to
// start. It costs O(pools).
func (q *Queue) runnable() bool {
	now := time.Now()
	for _, p := range q.pools {
		if p.ready > 0 && q.poolFree(p, now) {
			return true
		}
	}
	return false
}

// newTicket makes the ticket for job, creating its user and serial state.
func (q *Queue) newTicket(ctx context.Context, job Job, u *user, s *serial, p *pool) *Ticket {
	if u == nil {
		u = &user{name: job.User}
		q.users[job.User] = u
	}
	if s == nil && job.Serial != "" {
		s = &serial{}
		q.serials[job.Serial] = s
	}
	q.seq++
	return &Ticket{q: q, job: job, ctx: ctx, u: u, s: s, p: p, seq: q.seq, done: make(chan struct{})}
}

// enqueue links a new ticket into the waiting structures.
func (q *Queue) enqueue(t *Ticket) {
	u, s := t.u, t.s
	t.enqueued = time.Now()
	t.uprev = u.tail
	if u.tail != nil {
		u.tail.unext = t
	} else {
		u.head = t
	}
	u.tail = t
	t.gprev = q.wtail
	if q.wtail != nil {
		q.wtail.gnext = t
	} else {
		q.whead = t
	}
	q.wtail = t
	u.waiting++
	t.p.waiting++
	q.waiting++
	if t.job.Position != nil {
		q.posCallbacks++
		q.fresh = append(q.fresh, t)
	}
	ready := true
	if s != nil {
		t.sprev = s.tail
		if s.tail != nil {
			s.tail.snext = t
		} else {
			s.head = t
		}
		s.tail = t
		ready = !s.running && s.head == t
	}
	q.setReady(t, ready)
	if !u.inRing {
		q.ringInsert(u)
	}
	q.changed()
}

// unlinkWaiting removes a waiting ticket from the waiting structures. The
// caller sets its new state. The next job of its Serial becomes ready if the
// Serial is not running (start marks it running first).
func (q *Queue) unlinkWaiting(t *Ticket) {
	u, s := t.u, t.s
	q.setReady(t, false)
	if t.uprev != nil {
		t.uprev.unext = t.unext
	} else {
		u.head = t.unext
	}
	if t.unext != nil {
		t.unext.uprev = t.uprev
	} else {
		u.tail = t.uprev
	}
	t.unext, t.uprev = nil, nil
	if t.gprev != nil {
		t.gprev.gnext = t.gnext
	} else {
		q.whead = t.gnext
	}
	if t.gnext != nil {
		t.gnext.gprev = t.gprev
	} else {
		q.wtail = t.gprev
	}
	t.gnext, t.gprev = nil, nil
	if s != nil {
		if t.sprev != nil {
			t.sprev.snext = t.snext
		} else {
			s.head = t.snext
			if s.head != nil && !s.running {
				q.setReady(s.head, true)
			}
		}
		if t.snext != nil {
			t.snext.sprev = t.sprev
		} else {
			s.tail = t.sprev
		}
		t.snext, t.sprev = nil, nil
	}
	u.waiting--
	t.p.waiting--
	q.waiting--
	if t.job.Position != nil {
		if q.posCallbacks--; q.posCallbacks == 0 {
			// No pass runs until a job with a callback waits again, and
			// none of these would be told anything: let them go.
			clear(q.fresh)
			q.fresh = q.fresh[:0]
			clear(q.shown)
			q.shown = q.shown[:0]
		}
	}
	if u.waiting == 0 {
		q.ringRemove(u)
	}
	q.changed()
}

func (q *Queue) setReady(t *Ticket, ready bool) {
	if t.ready == ready {
		return
	}
	t.ready = ready
	if ready {
		t.u.ready++
		t.p.ready++
	} else {
		t.u.ready--
		t.p.ready--
	}
	q.updateEligible(t.u)
}

func (q *Queue) updateEligible(u *user) {
	e := u.ready > 0 && u.running < q.opts.UserRunning
	if e == u.eligible {
		return
	}
	u.eligible = e
	if e {
		q.eligible++
	} else {
		q.eligible--
	}
}

// forget drops the user's and serial's state once nothing refers to it.
func (q *Queue) forget(t *Ticket) {
	if u := t.u; u.running == 0 && u.waiting == 0 && q.users[u.name] == u {
		delete(q.users, u.name)
	}
	if s := t.s; s != nil && !s.running && s.head == nil && q.serials[t.job.Serial] == s {
		delete(q.serials, t.job.Serial)
	}
}

// ringInsert puts u into the ring by the time it was last served: the ring
// stays ordered least recently served first, users never served (served ==
// 0) in arrival order at the front.
func (q *Queue) ringInsert(u *user) {
	var after *user // insert after this one; nil = at the front
	if u.served == 0 {
		after = q.ringNew
		q.ringNew = u
	} else {
		after = q.ringTail
		for after != nil && after.served > u.served {
			after = after.rprev
		}
	}
	u.inRing = true
	u.rprev = after
	if after != nil {
		u.rnext = after.rnext
		after.rnext = u
	} else {
		u.rnext = q.ringHead
		q.ringHead = u
	}
	if u.rnext != nil {
		u.rnext.rprev = u
	} else {
		q.ringTail = u
	}
}

func (q *Queue) ringRemove(u *user) {
	if !u.inRing {
		return
	}
	if q.ringNew == u {
		q.ringNew = u.rprev // never-served users are a prefix of the ring
	}
	if u.rprev != nil {
		u.rprev.rnext = u.rnext
	} else {
		q.ringHead = u.rnext
	}
	if u.rnext != nil {
		u.rnext.rprev = u.rprev
	} else {
		q.ringTail = u.rprev
	}
	u.rnext, u.rprev, u.inRing = nil, nil, false
}

// dispatch starts jobs while a slot is free and a waiting job may run.
func (q *Queue) dispatch() {
	for q.busy < q.opts.Slots && q.eligible > 0 && q.runnable() {
		t := q.pick()
		if t == nil {
			return // every waiting job whose pool is free is blocked by its user's cap
		}
		if err := t.ctx.Err(); err != nil {
			// Its Submit ctx ended; the AfterFunc has not removed it yet.
			q.unlinkWaiting(t)
			q.finishTicket(t, err)
			q.forget(t)
			continue
		}
		q.start(t, true)
	}
}

// pick returns the waiting job to start next, or nil when none may run:
// the first eligible user in the ring, their oldest job that is ready and
// whose pool is free (FIFO: the oldest such job of a user under the cap).
//
// A pool smaller than the account (flux-kontext-max's 6 of 24) would lose
// its slots to the others' jobs whenever the account is the tighter limit:
// a slot one of its jobs gives back would go to a job of another pool
// first in line, and its next job would wait for the account. So the
// first walk keeps back, for each such pool, as many of the account's free
// slots as it has free room and ready jobs: a job of another pool is
// passed over when it would take one of those. If that walk finds nothing
// (the kept-back jobs' users are at their cap), a second walk without
// keeping anything back does: no slot stays idle while a job may run.
func (q *Queue) pick() *Ticket {
	now := time.Now()
	kept := q.keepBack(now)
	if t := q.walk(now, kept); t != nil || kept == 0 {
		return t
	}
	return q.walk(now, 0)
}

// keepBack sets each pool's share of the account's free slots the first
// walk keeps back for pools smaller than the account (see pick), and
// returns their sum.
func (q *Queue) keepBack(now time.Time) int {
	kept := 0
	for _, p := range q.pools {
		p.kept = 0
		if p.limit < q.opts.Slots && p.ready > 0 && q.poolFree(p, now) {
			p.kept = min(p.limit-p.busy, p.ready)
			kept += p.kept
		}
	}
	return kept
}

// walk is one walk of pick: a job that would leave fewer free account
// slots than kept (less its own pool's share) is passed over.
func (q *Queue) walk(now time.Time, kept int) *Ticket {
	ok := func(t *Ticket) bool {
		return t.ready && q.poolFree(t.p, now) && (kept == 0 || q.opts.Slots-q.busy-1 >= kept-t.p.kept)
	}
	if q.opts.Policy == FIFO {
		for t := q.whead; t != nil; t = t.gnext {
			if t.u.running < q.opts.UserRunning && ok(t) {
				return t
			}
		}
		return nil
	}
	for u := q.ringHead; u != nil; u = u.rnext {
		if !u.eligible {
			continue
		}
		for t := u.head; t != nil; t = t.unext {
			if ok(t) {
				return t
			}
		}
	}
	return nil
}

// start runs t in a slot: a waiting ticket, or a new one that never waited.
func (q *Queue) start(t *Ticket, waited bool) {
	u := t.u
	if t.s != nil {
		t.s.running = true // before unlinking, so the next of its Serial stays blocked
	}
	if waited {
		q.unlinkWaiting(t)
	}
	if t.stop != nil {
		t.stop()
		t.stop = nil
	}
	t.state.Store(stRunning)
	u.running++
	q.running++
	q.busy++
	t.p.busy++
	t.slot = true
	q.updateEligible(u)
	q.turn++
	u.served = q.turn
	if u.inRing {
		q.ringRemove(u)
		q.ringInsert(u) // to the back: it has the latest turn
		q.changed()     // the turn order, and so positions, moved
	}
	t.gprev, t.gnext = nil, q.rhead
	if q.rhead != nil {
		q.rhead.gprev = t
	}
	q.rhead = t
	if t.job.Position != nil {
		q.started = append(q.started, notice{t: t, fn: t.job.Position})
		q.kickNotifier()
	}
	ctx, cancel := context.WithCancelCause(t.ctx)
	t.cancel = cancel
	ctx = context.WithValue(ctx, slotKey{}, func() { q.release(t) })
	ctx = context.WithValue(ctx, limitKey{}, func(wait time.Duration) { q.SlowPool(t.job.Pool, wait) })
	go q.run(t, ctx, cancel)
}

// slotKey is the context key under which a running job finds the function
// that gives its slot back early.
type slotKey struct{}

// releaseSlot gives the slot of the job running under ctx back to the
// queue before Run returns, once the job no longer occupies a provider
// task (its prediction is final; only the download remains). The job still
// counts against its user's running cap and holds its Serial until Run
// returns, and Shutdown still waits for it. Without a queue in ctx, or
// called twice, it does nothing.
func releaseSlot(ctx context.Context) {
	if f, ok := ctx.Value(slotKey{}).(func()); ok {
		f()
	}
}

// release frees t's slot, once, and dispatches.
func (q *Queue) release(t *Ticket) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !t.slot {
		return
	}
	t.slot = false
	q.busy--
	t.p.busy--
	q.dispatch()
}

// errGoexit is a job's error when its Run called runtime.Goexit.
var errGoexit = errors.New("kontext: Run called runtime.Goexit")

// run is the goroutine of one running job.
func (q *Queue) run(t *Ticket, ctx context.Context, cancel context.CancelCauseFunc) {
	job := t.job
	if !t.enqueued.IsZero() {
		q.log.LogAttrs(ctx, slog.LevelDebug, "kontext: job started", slog.String("job", job.ID),
			slog.String("user", job.User), slog.Duration("waited", time.Since(t.enqueued)))
	} else {
		q.log.LogAttrs(ctx, slog.LevelDebug, "kontext: job started", slog.String("job", job.ID),
			slog.String("user", job.User))
	}
	err := errGoexit
	defer func() {
		if cause := context.Cause(ctx); err != nil && (cause == ErrCanceled || cause == ErrShutdown) {
			err = &cutError{cause: cause, err: err}
		}
		cancel(nil)
		q.finish(t, err)
	}()
	err = q.call(ctx, job)
	q.log.LogAttrs(ctx, slog.LevelDebug, "kontext: job finished", slog.String("job", job.ID),
		slog.String("user", job.User), slog.Any("err", err))
}

// call runs the job's work, turning a panic into a *PanicError.
func (q *Queue) call(ctx context.Context, job Job) (err error) {
	defer func() {
		if v := recover(); v != nil {
			pe := &PanicError{Value: v, Stack: debug.Stack()}
			q.log.LogAttrs(ctx, slog.LevelError, "kontext: job panicked", slog.String("job", job.ID),
				slog.String("user", job.User), slog.Any("panic", v), slog.String("stack", string(pe.Stack)))
			err = pe
		}
	}()
	return job.Run(ctx)
}

// cutError is the error of a running job whose Run failed after it was
// canceled by Ticket.Cancel or cut short by Shutdown: errors.Is matches both
// the cause (ErrCanceled or ErrShutdown) and Run's error.
type cutError struct {
	cause error
	err   error
}

func (e *cutError) Error() string   { return e.cause.Error() + ": " + e.err.Error() }
func (e *cutError) Unwrap() []error { return []error{e.cause, e.err} }

// finish frees t's slot and dispatches.
func (q *Queue) finish(t *Ticket, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	u := t.u
	if t.gprev != nil {
		t.gprev.gnext = t.gnext
	} else {
		q.rhead = t.gnext
	}
	if t.gnext != nil {
		t.gnext.gprev = t.gprev
	}
	t.gnext, t.gprev = nil, nil
	u.running--
	q.running--
	if t.slot {
		t.slot = false
		q.busy--
		t.p.busy--
	}
	q.updateEligible(u)
	if s := t.s; s != nil {
		s.running = false
		if s.head != nil {
			q.setReady(s.head, true)
		}
	}
	q.forget(t)
	q.dispatch()
	q.finishTicket(t, err)
	if q.closed && q.running == 0 {
		close(q.idle)
	}
}

// finishTicket records the outcome and closes Done.
func (q *Queue) finishTicket(t *Ticket, err error) {
	if t.stop != nil {
		t.stop()
		t.stop = nil
	}
	t.state.Store(stDone)
	t.err = err
	t.ctx = nil
	t.cancel = nil
	t.job.Run = nil // let the closures go; the ticket may be kept
	t.job.Position = nil
	close(t.done)
}

// expire removes a waiting job whose Submit ctx ended.
func (q *Queue) expire(t *Ticket) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.state.Load() != stWaiting {
		return
	}
	err := t.ctx.Err()
	t.stop = nil
	q.unlinkWaiting(t)
	q.finishTicket(t, err)
	q.forget(t)
	q.dispatch()
}

// Stats returns a snapshot of the queue.
func (q *Queue) Stats() QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := QueueStats{Slots: q.opts.Slots, Running: q.busy, Waiting: q.waiting, Pools: map[string]PoolStats{}}
	for name, n := range q.opts.Pools {
		st.Pools[name] = PoolStats{Slots: min(max(n, 1), q.opts.Slots)}
	}
	for name, p := range q.pools {
		st.Pools[name] = PoolStats{Slots: p.limit, Running: p.busy, Waiting: p.waiting}
	}
	return st
}

// SlowPool starts no job of pool for wait: the provider answered a create
// of it 429 (its model's limit of active tasks, when the account has
// others). The jobs of the other pools go on starting. The running job
// that got the 429 retries in its slot.
func (q *Queue) SlowPool(pool string, wait time.Duration) {
	if wait <= 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	p := q.pool(pool)
	until := time.Now().Add(wait)
	if !until.After(p.until) {
		return
	}
	p.until = until
	if p.timer != nil {
		p.timer.Stop()
	}
	p.timer = time.AfterFunc(wait, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		q.dispatch()
	})
	q.log.Info("kontext: the provider is rate limiting a pool; starting none of its jobs for a while", slog.String("pool", pool), slog.Duration("wait", wait))
}

// Shutdown stops the queue. It refuses new jobs, removes the waiting jobs
// and returns them in the order they would have run (their tickets finish
// with ErrShutdown, and their Position is not called again), then waits for
// the running jobs. If ctx ends first, it cancels the running jobs' ctx and
// still waits for them to return, and returns ctx.Err(). Finally it waits for
// pending Position notifications (of jobs that started) to be delivered; no
// goroutine of the queue outlives it. A second call returns no jobs and
// waits like the first.
func (q *Queue) Shutdown(ctx context.Context) ([]Job, error) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		select {
		case <-q.shutDone:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	q.closed = true
	for _, p := range q.pools {
		if p.timer != nil {
			p.timer.Stop()
		}
	}
	order := q.dispatchOrder()
	jobs := make([]Job, len(order))
	for i, t := range order {
		jobs[i] = t.job
		q.unlinkWaiting(t)
		q.finishTicket(t, ErrShutdown)
		q.forget(t)
		order[i] = nil
	}
	if q.running == 0 {
		close(q.idle)
	}
	running := q.running
	q.mu.Unlock()
	if len(jobs) > 0 || running > 0 {
		q.log.Info("kontext: queue shutting down", slog.Int("handed_back", len(jobs)), slog.Int("running", running))
	}

	var err error
	select {
	case <-q.idle:
	default:
		select {
		case <-q.idle:
		case <-ctx.Done():
			q.mu.Lock()
			var cancels []context.CancelCauseFunc
			for t := q.rhead; t != nil; t = t.gnext {
				cancels = append(cancels, t.cancel)
			}
			q.mu.Unlock()
			if len(cancels) > 0 {
				err = ctx.Err()
				q.log.Warn("kontext: shutdown deadline: canceling running jobs", slog.Int("running", len(cancels)))
			}
			for _, cancel := range cancels {
				cancel(ErrShutdown)
			}
			<-q.idle
		}
	}

	q.mu.Lock()
	var exited chan struct{}
	if q.notifying {
		exited = make(chan struct{})
		q.notifierExit = exited
	}
	q.mu.Unlock()
	if exited != nil {
		<-exited
	}
	close(q.shutDone)
	return jobs, err
}

// Cancel cancels the job. A waiting job is removed at once, freeing its
// place, and its Err is ErrCanceled. A running job's ctx is canceled; its
// slot is freed when Run returns, and its Err is then Run's error (wrapped
// so that errors.Is also matches ErrCanceled), or nil if Run succeeded
// anyway. Cancel on a finished job does nothing.
func (t *Ticket) Cancel() {
	q := t.q
	q.mu.Lock()
	var cancel context.CancelCauseFunc
	switch t.state.Load() {
	case stWaiting:
		q.unlinkWaiting(t)
		q.finishTicket(t, ErrCanceled)
		q.forget(t)
		q.dispatch()
	case stRunning:
		cancel = t.cancel
	}
	q.mu.Unlock()
	if cancel != nil {
		cancel(ErrCanceled)
	}
}

// Done is closed when the job has finished, was canceled or refused while
// waiting, or was handed back by Shutdown.
func (t *Ticket) Done() <-chan struct{} { return t.done }

// Err is the job's outcome once Done is closed, and nil before: nil when Run
// succeeded, Run's error, ErrCanceled, ErrShutdown (handed back by Shutdown),
// the Submit ctx's error (it ended while the job waited), or a *PanicError.
func (t *Ticket) Err() error {
	select {
	case <-t.done:
		return t.err
	default:
		return nil
	}
}

// Position is the job's current 1-based place among the waiting jobs (see
// the package notes on how it is computed): exact up to ExactPositions,
// PositionBeyond further back, and 0 once the job has started or is no
// longer waiting. It costs O(ExactPositions).
func (t *Ticket) Position() int {
	q := t.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.state.Load() != stWaiting {
		return 0
	}
	pos, n := PositionBeyond, 0
	q.visitOrder(ExactPositions, func(o *Ticket) bool {
		n++
		if o == t {
			pos = n
			return false
		}
		return true
	})
	return pos
}

// changed records that the waiting set or the turn order changed.
func (q *Queue) changed() {
	q.notifyDirty = true
	q.kickNotifier()
}

// kickNotifier starts the notifier goroutine if there is something to tell
// and it is not running; a running notifier picks the change up when its
// current round of callbacks ends.
func (q *Queue) kickNotifier() {
	if q.notifying {
		return
	}
	if len(q.started) == 0 && !(q.notifyDirty && q.posCallbacks > 0) {
		return
	}
	q.notifying = true
	go q.notifier()
}

// notifier delivers Position calls, one round at a time, until there is
// nothing left to tell.
func (q *Queue) notifier() {
	var batch, spare []notice
	for {
		q.mu.Lock()
		batch, q.started = q.started, spare[:0]
		if q.notifyDirty && q.posCallbacks > 0 {
			q.notifyDirty = false
			batch = q.positionPass(batch)
		}
		if len(batch) == 0 {
			q.notifying = false
			if q.notifierExit != nil {
				close(q.notifierExit)
				q.notifierExit = nil
			}
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		for i, n := range batch {
			// A job that started, was canceled or handed back since the
			// round was computed is not told a stale place.
			if n.pos == 0 || n.t.state.Load() == stWaiting {
				q.tell(n)
			}
			batch[i] = notice{}
		}
		spare = batch
	}
}

// positionPass places the head of the line afresh and appends to batch a
// notice for every job with a Position callback whose position changed:
// the jobs now in the head, those that were in it at the last pass and
// are now beyond it, and the jobs queued since (beyond it, unless they
// landed in the head). Every other waiting job was beyond the head at the
// last pass and still is, so its position (PositionBeyond) did not
// change. It costs O(ExactPositions + jobs queued since the last pass).
func (q *Queue) positionPass(batch []notice) []notice {
	q.passes++
	pass := uint64(q.passes)
	old := q.shown
	head := q.spareShown[:0] // old is still read below
	q.visitOrder(ExactPositions, func(t *Ticket) bool {
		head = append(head, t)
		t.mark = pass
		t.pos = len(head)
		return true
	})
	tell := func(t *Ticket) {
		if t.state.Load() != stWaiting || t.job.Position == nil {
			return
		}
		if t.mark != pass {
			t.pos = PositionBeyond
		}
		if t.pos != t.told {
			t.told = t.pos
			batch = append(batch, notice{t: t, fn: t.job.Position, pos: t.pos})
		}
	}
	for _, t := range head {
		tell(t)
	}
	for _, t := range old {
		if t.mark != pass {
			tell(t)
		}
	}
	for _, t := range q.fresh {
		if t.mark != pass {
			tell(t)
		}
	}
	clear(q.fresh)
	q.fresh = q.fresh[:0]
	clear(old)
	q.shown, q.spareShown = head, old[:0]
	return batch
}

// tell makes one Position call; a panic in it is logged, not fatal.
func (q *Queue) tell(n notice) {
	defer func() {
		if v := recover(); v != nil {
			q.log.Error("kontext: Position callback panicked", slog.String("job", n.t.job.ID), slog.Any("panic", v))
		}
	}()
	n.fn(n.pos)
}

// dispatchOrder returns the waiting tickets in the order they would start.
func (q *Queue) dispatchOrder() []*Ticket {
	order := make([]*Ticket, 0, q.waiting)
	q.visitOrder(q.waiting, func(t *Ticket) bool {
		order = append(order, t)
		return true
	})
	return order
}

// visitOrder calls fn for the first limit waiting tickets, in the order
// the dispatcher would start them if nothing else arrived (ignoring
// UserRunning and Serial), until fn returns false. It costs O(limit):
// round-robin rounds are walked lazily, the first round over the ring
// only as far as it goes before limit tickets are visited.
func (q *Queue) visitOrder(limit int, fn func(*Ticket) bool) {
	if limit <= 0 {
		return
	}
	n := 0
	if q.opts.Policy == FIFO {
		for t := q.whead; t != nil && n < limit; t = t.gnext {
			n++
			if !fn(t) {
				return
			}
		}
		return
	}
	// Round one: each user in ring order gives its oldest job; users with
	// more are kept, in ring order, for the next rounds.
	active := q.scratch[:0]
	defer func() {
		clear(active)
		q.scratch = active[:0]
	}()
	for u := q.ringHead; u != nil; u = u.rnext {
		n++
		if !fn(u.head) || n == limit {
			return
		}
		if u.cur = u.head.unext; u.cur != nil {
			active = append(active, u)
		}
	}
	for len(active) > 0 {
		k := 0
		for _, u := range active {
			n++
			if !fn(u.cur) || n == limit {
				return
			}
			if u.cur = u.cur.unext; u.cur != nil {
				active[k] = u
				k++
			}
		}
		clear(active[k:])
		active = active[:k]
	}
}
