package postgres

import (
	"context"
	"fmt"
	"sync"

	"kontextbot/bot"
	"kontextbot/kontext"
)

var _ bot.Scheduler = (*Scheduler)(nil)

// Scheduler is the bot's scheduler over the shared queue: one replica's
// bot.Scheduler. Jobs submitted on any replica run on whichever replica a
// free slot goes to (Queue.Work), by id; a running job's lease is this
// replica's until its run returns; Close hands the unfinished jobs over at
// once; positions are read from the database, so they count the jobs of
// every replica.
type Scheduler struct {
	q *Queue

	mu      sync.Mutex
	closed  bool
	stop    context.CancelFunc // ends Work and the position watcher
	done    chan struct{}      // closed when both have returned
	watched map[string]*watch  // waiting jobs submitted here, by id
	gen     uint64             // counts watches added
	kick    chan struct{}      // asks the position watcher for a pass
}

// watch is a waiting job whose place in line this replica reports.
type watch struct {
	tell func(int)
	pos  int    // last told
	gen  uint64 // when it was added: positions read before then do not apply
}

// Scheduler returns replica's bot.Scheduler over the shared queue with
// opts (see Queue). Every replica on the database must use the same opts.
func (db *DB) Scheduler(replica string, opts QueueOptions) *Scheduler {
	return &Scheduler{q: db.Queue(replica, opts), watched: map[string]*watch{}, kick: make(chan struct{}, 1)}
}

// Queue is the shared queue the scheduler runs, for its statistics.
func (s *Scheduler) Queue() *Queue { return s.q }

// Start begins this replica's share of the queue: Work calls run with the
// id of each job a slot goes to here, and the ids of running jobs taken
// over from a replica whose lease lapsed.
func (s *Scheduler) Start(run bot.RunFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.done != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop, s.done = cancel, make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		s.q.Work(ctx, func(ctx context.Context, j QueuedJob) error { return run(ctx, j.ID) })
	})
	wg.Go(func() { s.positions(ctx) })
	go func() {
		wg.Wait()
		close(s.done)
	}()
}

// positions tells the jobs submitted here their place in line whenever
// the queue changes, on any replica. It alone calls the Position
// callbacks, so one job's places arrive in order and never from inside
// Submit.
func (s *Scheduler) positions(ctx context.Context) {
	wake := s.q.Listen(ctx)
	for {
		select {
		case _, ok := <-wake:
			if !ok {
				return
			}
		case <-s.kick:
		}
		s.tellPositions(ctx)
	}
}

// tellPositions reads the positions and tells those that changed.
func (s *Scheduler) tellPositions(ctx context.Context) {
	s.mu.Lock()
	n, gen := len(s.watched), s.gen
	s.mu.Unlock()
	if n == 0 {
		return
	}
	pos, err := s.q.Positions(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.q.db.log.Warn("postgres: queue positions", "err", err)
		}
		return
	}
	type call struct {
		tell func(int)
		pos  int
	}
	var calls []call
	s.mu.Lock()
	for id, w := range s.watched {
		if w.gen > gen {
			continue // added after the read began: the next pass
		}
		p := pos[id]
		if p != w.pos {
			w.pos = p
			calls = append(calls, call{w.tell, p})
		}
		if p == 0 {
			delete(s.watched, id) // started, on any replica, or gone
		}
	}
	s.mu.Unlock()
	for _, c := range calls {
		c.tell(c.pos)
	}
}

// Submit adds the job to the shared queue.
func (s *Scheduler) Submit(ctx context.Context, sl bot.Slot) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return kontext.ErrShutdown
	}
	s.mu.Unlock()
	pos, err := s.q.SubmitPool(ctx, sl.ID, sl.User, sl.Serial, sl.Pool)
	if err != nil || sl.Position == nil || pos == 0 {
		return err
	}
	// The watcher tells the place: positions read from now on include
	// the job.
	s.mu.Lock()
	if _, ok := s.watched[sl.ID]; !ok {
		s.gen++
		s.watched[sl.ID] = &watch{tell: sl.Position, gen: s.gen}
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return nil
}

// Cancel removes a waiting job, whichever replica submitted it.
func (s *Scheduler) Cancel(ctx context.Context, jobID string) error {
	removed, err := s.q.CancelWaiting(ctx, jobID)
	if err != nil {
		return fmt.Errorf("postgres: cancel: %w", err)
	}
	s.mu.Lock()
	delete(s.watched, jobID)
	s.mu.Unlock()
	if !removed {
		return bot.ErrJobGone
	}
	return nil
}

// Hold checks that this replica still holds job id's lease and extends it
// (Queue.Hold): an error wrapping ErrLeaseLost means another replica took
// the job over.
func (s *Scheduler) Hold(ctx context.Context, jobID string) error {
	return s.q.Hold(ctx, jobID)
}

// Close stops taking jobs and stops this replica's share of the queue:
// running jobs are cut short with ErrHandedOver and handed over at once
// as their runs return (a job already storing or posting its image
// finishes here first); waiting jobs stay in the shared queue for the
// other replicas. It returns when every run has returned, or with
// ctx.Err() when ctx ends first.
func (s *Scheduler) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	stop, done := s.stop, s.done
	s.mu.Unlock()
	if stop == nil {
		return nil
	}
	stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
