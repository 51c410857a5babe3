package bot

import (
	"context"
	"errors"
	"sync"

	"kontextbot/kontext"
)

// Scheduler runs jobs in the provider's slots, fairly, BY ID: the job
// itself (prompt, base image, prediction id) is the Job in the Store, which
// any process on the same store can load. That is what lets a scheduler
// shared by several processes (store/postgres.Scheduler) start a job on a
// process other than the one that accepted it, and give a dead process's
// jobs to a live one. LocalScheduler wraps the in-process kontext.Queue.
//
// The core calls Start once, before its first Submit; from then on the
// scheduler calls run, each time in a goroutine of its own, with the id of
// a job this process was given a slot for. run returns nil or the job's
// error once the job has ended; an error that wraps kontext.ErrShutdown
// means the job was left unfinished on purpose (this process stops or no
// longer owns it), to be continued from its stored state by whoever runs
// it next.
type Scheduler interface {
	// Start begins running jobs through run. It is called once.
	Start(run RunFunc)
	// Submit queues the job s describes. It fails with a
	// *kontext.LimitError past the queue's limits and with
	// kontext.ErrShutdown once Close has begun, and with an error wrapping
	// ErrQueued when the id is already queued or running (Recover skips
	// those).
	Submit(ctx context.Context, s Slot) error
	// Cancel removes a waiting job, from whichever process; it returns
	// ErrJobGone when the job is not waiting (running, ended, unknown).
	Cancel(ctx context.Context, jobID string) error
	// Hold confirms, right before anything that must happen once (the
	// paid create, storing the result with its charge), that this process
	// still runs job id. An error means: stop and leave the job as stored.
	Hold(ctx context.Context, jobID string) error
	// Close stops taking jobs. Waiting jobs stay queued (on disk, or in
	// the shared queue for the other processes); running ones finish until
	// ctx ends (in-process) or are handed to another process at once
	// (shared). It returns once every run has returned.
	Close(ctx context.Context) error
}

// ErrQueued is returned (wrapped) by Scheduler.Submit for a job that is
// already queued or running.
var ErrQueued = errors.New("bot: job already queued")

// RunFunc runs the stored job with id in a slot (see Scheduler).
type RunFunc func(ctx context.Context, jobID string) error

// Slot is what a Scheduler needs to know of a job to queue it.
type Slot struct {
	// ID is the Job's id in the store.
	ID string
	// User is the fairness key: platform/workspace/user.
	User string
	// Serial, when set, makes the jobs with the same Serial (a
	// conversation) run one at a time, in submission order.
	Serial string
	// Pool is the provider's concurrency pool the job counts against, its
	// model's (kontext.PoolOf): a full pool holds its jobs back, never
	// those of another pool.
	Pool string
	// Position, when set, is told the job's 1-based place in line while it
	// waits, counting the jobs ahead of it from every process, and 0 once
	// it starts. It must not block.
	Position func(pos int)
}

var _ Scheduler = (*LocalScheduler)(nil)

// LocalScheduler is the in-process Scheduler: one process owns the
// provider's slots through a kontext.Queue. Waiting jobs left at Close
// stay on disk and are queued again by the next process's Recover.
type LocalScheduler struct {
	q *kontext.Queue

	mu      sync.Mutex
	run     RunFunc
	tickets map[string]*localTicket
}

type localTicket struct {
	t       *kontext.Ticket
	started bool
}

// NewLocalScheduler wraps q, which the scheduler then owns (Close shuts
// it down).
func NewLocalScheduler(q *kontext.Queue) *LocalScheduler {
	return &LocalScheduler{q: q, tickets: map[string]*localTicket{}}
}

// Queue is the wrapped queue, for its statistics.
func (s *LocalScheduler) Queue() *kontext.Queue { return s.q }

// Start records run.
func (s *LocalScheduler) Start(run RunFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.run = run
}

// Submit queues the job in the in-process queue.
func (s *LocalScheduler) Submit(ctx context.Context, sl Slot) error {
	s.mu.Lock()
	run := s.run
	if run == nil {
		s.mu.Unlock()
		return errors.New("bot: scheduler: Submit before Start")
	}
	if _, dup := s.tickets[sl.ID]; dup {
		s.mu.Unlock()
		return ErrQueued
	}
	lt := &localTicket{}
	s.tickets[sl.ID] = lt
	s.mu.Unlock()
	t, err := s.q.Submit(context.WithoutCancel(ctx), kontext.Job{
		ID: sl.ID, User: sl.User, Serial: sl.Serial, Pool: sl.Pool, Position: sl.Position,
		Run: func(ctx context.Context) error {
			s.mu.Lock()
			lt.started = true
			s.mu.Unlock()
			defer s.forget(sl.ID, lt)
			if context.Cause(ctx) == kontext.ErrCanceled {
				return kontext.ErrCanceled // cancelled as it started: never ran
			}
			return run(ctx, sl.ID)
		},
	})
	s.mu.Lock()
	if err != nil {
		delete(s.tickets, sl.ID)
	} else {
		lt.t = t
	}
	s.mu.Unlock()
	return err
}

// forget drops the ticket of a job that ran or was cancelled.
func (s *LocalScheduler) forget(id string, lt *localTicket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tickets[id] == lt {
		delete(s.tickets, id)
	}
}

// Cancel removes a waiting job from the queue.
func (s *LocalScheduler) Cancel(ctx context.Context, jobID string) error {
	s.mu.Lock()
	lt := s.tickets[jobID]
	if lt == nil || lt.started || lt.t == nil {
		s.mu.Unlock()
		return ErrJobGone
	}
	// Under s.mu, so a job starting now sees the cancel before it runs.
	lt.t.Cancel()
	s.mu.Unlock()
	select {
	case <-lt.t.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	s.forget(jobID, lt)
	if !errors.Is(lt.t.Err(), kontext.ErrCanceled) {
		return ErrJobGone
	}
	return nil
}

// Hold always succeeds: one process owns every job it runs.
func (s *LocalScheduler) Hold(ctx context.Context, jobID string) error { return nil }

// Close shuts the queue down: waiting jobs are handed back (they stay
// waiting on disk), running ones finish until ctx ends and are then cut
// short with kontext.ErrShutdown.
func (s *LocalScheduler) Close(ctx context.Context) error {
	_, err := s.q.Shutdown(ctx)
	return err
}
