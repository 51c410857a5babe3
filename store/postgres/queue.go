package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"kontextbot/bot"
	"kontextbot/kontext"
)

// The shared queue's database side.
//
// A Queue is one replica's handle on the slots of one API key, shared by
// every replica on the database. It keeps kontext.Queue's rules, decided
// from the queue_jobs table instead of memory:
//
//   - at most Slots jobs are running across all replicas, and at most
//     Pools[p] of the jobs of pool p (a model's: migration 005); a job
//     whose pool is full is passed over, never keeping a job of another
//     pool from a free slot; a pool slowed down after a 429 (SlowPool)
//     starts none of its jobs until its wait has passed;
//   - a waiting job may start when its user has fewer than UserRunning jobs
//     running and its Serial is free (no job of that Serial running, none
//     earlier waiting);
//   - the next slot goes to the user least recently served (a user with no
//     job left forgets their turn, so a newcomer is served next), their
//     oldest job that may start;
//   - a user may have UserWaiting jobs waiting, everyone together
//     MaxWaiting;
//   - positions simulate that order over the waiting jobs, each user taking
//     one job per round.
//
// Every decision runs in a transaction holding a transaction-scoped
// advisory lock (one per schema), so replicas decide one after another and
// the slot count is never exceeded. A running job belongs to the replica
// that started it through a lease measured by the database's clock (no
// skew between hosts): the owner renews it; when it lapses (the replica
// died or lost the network) Takeover gives the job, still holding its slot,
// to another replica, which follows its prediction instead of creating a
// new one. Handover ends a replica's leases at once (SIGTERM). Every change
// sends a notification on the channel QueueChannel, so replicas waiting for
// work wake without polling.
//
// Which replica runs the job a slot goes to does not change the order
// above, only where it runs: whoever asks first (Next, when a notification
// wakes it), except that a replica giving back the slot of a job whose
// prediction is final starts the next job itself, in the same transaction,
// while it holds fewer slots than its fair share (FreeSlotNext); the
// replicas running Work record themselves in queue_replicas, so the share
// counts a live replica that holds no slot.
//
// What the queue stores is the job's id, user and Serial; the job itself
// (prompt, base image, prediction id) is the bot.Job in the jobs table,
// which any replica can load.

// QueueChannel is the LISTEN/NOTIFY channel on which every queue change is
// announced.
const QueueChannel = "kontext_queue"

// notifyStarted is the payload of a notification that announces only
// that jobs started (Next, or a hand-off in FreeSlotNext): positions
// change, but no slot frees and no job becomes able to start, so the
// replicas' Work loops need not look at the queue for it.
const notifyStarted = "started"

// lockSQL takes the queue's lock for the transaction.
const lockSQL = `SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))`

// queueLockClass is the first half of the queue's advisory lock key; the
// second is a hash of the schema.
const queueLockClass int32 = 0x6b717565 // "kque"

// QueueOptions configures a Queue. Zero fields take kontext.Queue's
// defaults; every replica must use the same values.
type QueueOptions struct {
	// Slots is how many jobs run at once across all replicas; default 6.
	Slots int
	// Pools bounds, inside Slots, how many jobs of one pool (a model's)
	// run at once; a pool not in it, and "", has only Slots.
	Pools map[string]int
	// UserRunning is how many jobs of one user run at once; default 2.
	UserRunning int
	// UserWaiting is how many jobs of one user may wait; default 5.
	UserWaiting int
	// MaxWaiting is how many jobs may wait in total; default 200.
	MaxWaiting int
	// Lease is how long a replica holds a running job without renewing;
	// default 10s. Renew at a third of it.
	Lease time.Duration
}

// Queue is one replica's handle on the shared queue. It is safe for
// concurrent use.
type Queue struct {
	db      *DB
	replica string
	opts    QueueOptions
}

// QueuedJob is a job a replica was given to run.
type QueuedJob struct {
	ID     string
	User   string
	Serial string
	Pool   string
	// TakenOver is set when the job was running on a replica whose lease
	// lapsed: its prediction may exist (see the bot.Job), so it must be
	// followed, not created again.
	TakenOver bool
}

// QueueStats is the shared queue as the database sees it.
type QueueStats struct {
	Slots   int
	Running int
	Waiting int
	// Pools is the same per pool, for the pools in QueueOptions.Pools and
	// those of the jobs in the queue.
	Pools map[string]kontext.PoolStats
}

// Queue returns replica's handle on the shared queue. replica names this
// process (unique among the replicas, e.g. host name and pid).
func (db *DB) Queue(replica string, opts QueueOptions) *Queue {
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
	if opts.Lease <= 0 {
		opts.Lease = 10 * time.Second
	}
	return &Queue{db: db, replica: replica, opts: opts}
}

// qjob is a row of queue_jobs as the scheduler sees it.
type qjob struct {
	id, user, serial string
	pool             string
	seq              int64
	running          bool
	slotFree         bool   // running, but its slot given back (FreeSlot)
	owner            string // the replica running it; "" while waiting
}

// qstate is the whole queue, read under the lock.
type qstate struct {
	jobs       []qjob           // by seq
	lastServed map[string]int64 // users with a turn recorded
	slowed     map[string]bool  // pools slowed down after a 429, now
}

// locked runs fn in a transaction that holds the queue's lock, then
// notifies the other replicas if fn changed something.
// Only one transaction of the process waits for the lock at a time
// (DB.queueTurn), holding a connection; the others wait without one.
func (q *Queue) locked(ctx context.Context, fn func(tx pgx.Tx) (changed bool, err error)) error {
	release, err := q.turn(ctx)
	if err != nil {
		return err
	}
	defer release()
	return q.db.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockSQL, queueLockClass); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		changed, err := fn(tx)
		if err != nil || !changed {
			return err
		}
		return notifyIn(ctx, tx)
	})
}

// turn waits for this process's turn to wait for the queue's lock
// (DB.queueTurn); release ends it.
func (q *Queue) turn(ctx context.Context) (release func(), err error) {
	select {
	case q.db.queueTurn <- struct{}{}:
		return func() { <-q.db.queueTurn }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("lock: %w", ctx.Err())
	}
}

// notifyIn announces a queue change when tx commits.
func notifyIn(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, QueueChannel); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

// jobsSQL reads every job of the queue with its user's turn, by seq.
const jobsSQL = `SELECT j.id, j.user_id, j.serial, j.pool, j.seq, j.state = 'running', j.slot_free,
		coalesce(j.owner, ''), u.last_served
	FROM queue_jobs j LEFT JOIN queue_users u ON u.user_id = j.user_id ORDER BY j.seq`

// scanJobs adds the rows of jobsSQL to st.
func (st *qstate) scanJobs(rows pgx.Rows) error {
	defer rows.Close()
	for rows.Next() {
		var j qjob
		var served *int64
		if err := rows.Scan(&j.id, &j.user, &j.serial, &j.pool, &j.seq, &j.running, &j.slotFree, &j.owner, &served); err != nil {
			return fmt.Errorf("read queue: %w", err)
		}
		if served != nil {
			st.lastServed[j.user] = *served
		}
		st.jobs = append(st.jobs, j)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read queue: %w", err)
	}
	return nil
}

// newState is an empty qstate.
func newState() *qstate {
	return &qstate{lastServed: map[string]int64{}, slowed: map[string]bool{}}
}

// load reads the queue's state in tx, in two queries.
func load(ctx context.Context, tx pgx.Tx) (*qstate, error) {
	st := newState()
	rows, err := tx.Query(ctx, jobsSQL)
	if err != nil {
		return nil, fmt.Errorf("read queue: %w", err)
	}
	if err := st.scanJobs(rows); err != nil {
		return nil, err
	}
	slowed, err := tx.Query(ctx, `SELECT pool FROM queue_pools WHERE slow_until > now()`)
	if err != nil {
		return nil, fmt.Errorf("read queue pools: %w", err)
	}
	pools, err := pgx.CollectRows(slowed, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read queue pools: %w", err)
	}
	for _, p := range pools {
		st.slowed[p] = true
	}
	return st, nil
}

// ring is the users with waiting jobs, in turn order: least recently
// served first, never served (0) first of all, ties by their oldest
// waiting job. Each user's waiting jobs are in submission order.
func (st *qstate) ring() (users []string, waiting map[string][]qjob) {
	waiting = map[string][]qjob{}
	for _, j := range st.jobs {
		if !j.running {
			if len(waiting[j.user]) == 0 {
				users = append(users, j.user) // in order of their oldest waiting job
			}
			waiting[j.user] = append(waiting[j.user], j)
		}
	}
	slices.SortStableFunc(users, func(a, b string) int {
		return cmp.Compare(st.lastServed[a], st.lastServed[b])
	})
	return users, waiting
}

// pick is the job the next free slot goes to, or nil when none may start
// or no slot is free.
func (st *qstate) pick(o QueueOptions) *qjob {
	running := 0
	poolRunning := map[string]int{}
	userRunning := map[string]int{}
	busy := map[string]bool{} // serials running or with an earlier job waiting
	for _, j := range st.jobs {
		if j.running {
			if !j.slotFree {
				running++
				poolRunning[j.pool]++
			}
			userRunning[j.user]++
			if j.serial != "" {
				busy[j.serial] = true
			}
		}
	}
	if running >= o.Slots {
		return nil
	}
	// A waiting job is ready when it is the oldest waiting job of its
	// Serial and none of that Serial runs.
	ready := map[string]bool{}
	first := map[string]bool{}
	for _, j := range st.jobs {
		if j.running {
			continue
		}
		if j.serial == "" {
			ready[j.id] = true
			continue
		}
		if !first[j.serial] {
			first[j.serial] = true
			ready[j.id] = !busy[j.serial]
		}
	}
	limit := func(p string) int {
		if n, ok := o.Pools[p]; ok && n > 0 {
			return min(n, o.Slots)
		}
		return o.Slots
	}
	poolFree := func(p string) bool { return poolRunning[p] < limit(p) && !st.slowed[p] }
	// As kontext.Queue: a pool smaller than the account keeps back as many
	// of the account's free slots as it has free room and ready jobs, so a
	// slot one of its jobs gives back is not lost to another pool's job
	// first in line; a second walk without it leaves no slot idle.
	poolReady := map[string]int{}
	for _, j := range st.jobs {
		if !j.running && ready[j.id] {
			poolReady[j.pool]++
		}
	}
	kept, perPool := 0, map[string]int{}
	for p, n := range poolReady {
		if limit(p) < o.Slots && poolFree(p) {
			perPool[p] = min(limit(p)-poolRunning[p], n)
			kept += perPool[p]
		}
	}
	users, waiting := st.ring()
	walk := func(kept int) *qjob {
		for _, u := range users {
			if userRunning[u] >= o.UserRunning {
				continue
			}
			for i := range waiting[u] {
				if j := &waiting[u][i]; ready[j.id] && poolFree(j.pool) && o.Slots-running-1 >= kept-perPool[j.pool] {
					return j
				}
			}
		}
		return nil
	}
	if j := walk(kept); j != nil || kept == 0 {
		return j
	}
	return walk(0)
}

// positions is each waiting job's 1-based place in the order the slots
// would go if nothing else arrived: users in ring order take one job per
// round, each user's jobs in submission order (caps and Serials ignored,
// as in kontext.Queue).
func (st *qstate) positions() map[string]int {
	users, waiting := st.ring()
	pos := map[string]int{}
	n := 0
	for round := 0; ; round++ {
		more := false
		for _, u := range users {
			if round < len(waiting[u]) {
				n++
				pos[waiting[u][round].id] = n
				more = true
			}
		}
		if !more {
			return pos
		}
	}
}

// Submit adds a waiting job of no pool but the account's (SubmitPool).
func (q *Queue) Submit(ctx context.Context, id, user, serial string) (int, error) {
	return q.SubmitPool(ctx, id, user, serial, "")
}

// SubmitPool adds a waiting job counted against pool. It fails with a
// *kontext.LimitError when the user already has UserWaiting jobs waiting
// or MaxWaiting jobs wait in all, and with an error wrapping bot.ErrQueued
// when id is already in the queue. It returns the job's position.
func (q *Queue) SubmitPool(ctx context.Context, id, user, serial, pool string) (int, error) {
	wrap := func(err error) error { return fmt.Errorf("postgres: queue submit %s: %w", id, err) }
	if id == "" || user == "" {
		return 0, wrap(errors.New("a job needs an id and a user"))
	}
	// A job already queued (a Recover or Adopt of a job that is queued
	// or running, the usual case) is known without the queue's lock.
	var queued bool
	if err := q.db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM queue_jobs WHERE id = $1)`, id).Scan(&queued); err != nil {
		return 0, wrap(err)
	}
	if queued {
		return 0, wrap(bot.ErrQueued)
	}
	pos := 0
	err := q.locked(ctx, func(tx pgx.Tx) (bool, error) {
		var total, mine int
		var dup bool
		err := tx.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'waiting'),
				count(*) FILTER (WHERE state = 'waiting' AND user_id = $1), coalesce(bool_or(id = $2), false)
			FROM queue_jobs`, user, id).Scan(&total, &mine, &dup)
		if err != nil {
			return false, err
		}
		if dup {
			return false, bot.ErrQueued
		}
		if mine >= q.opts.UserWaiting {
			return false, &kontext.LimitError{Kind: kontext.ErrUserWaitingLimit, Limit: q.opts.UserWaiting}
		}
		if total >= q.opts.MaxWaiting {
			return false, &kontext.LimitError{Kind: kontext.ErrQueueFull, Limit: q.opts.MaxWaiting}
		}
		tag, err := tx.Exec(ctx, `INSERT INTO queue_jobs (id, user_id, serial, pool, state) VALUES ($1, $2, $3, $4, 'waiting')
			ON CONFLICT (id) DO NOTHING`, id, user, serial, pool)
		if err != nil {
			return false, err
		}
		if tag.RowsAffected() == 0 {
			return false, bot.ErrQueued
		}
		st, err := load(ctx, tx)
		if err != nil {
			return false, err
		}
		pos = st.positions()[id]
		return true, nil
	})
	if err != nil {
		return 0, wrap(err)
	}
	return pos, nil
}

// Next gives this replica the job the next free slot goes to, marking it
// running under this replica's lease, or returns nil when no slot is free
// or no waiting job may start.
func (q *Queue) Next(ctx context.Context) (*QueuedJob, error) {
	// Most wake-ups find every slot busy or nothing waiting: say so
	// without taking the lock. A change committed after this read is
	// announced after its commit, so the caller looks again then.
	var worth bool
	err := q.db.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'running' AND NOT slot_free) < $1
		AND count(*) FILTER (WHERE state = 'waiting') > 0 FROM queue_jobs`, q.opts.Slots).Scan(&worth)
	if err != nil {
		return nil, fmt.Errorf("postgres: queue next: %w", err)
	}
	if !worth {
		return nil, nil
	}
	var out *QueuedJob
	err = q.locked(ctx, func(tx pgx.Tx) (bool, error) {
		var err error
		out, err = q.startNext(ctx, tx, true)
		return false, err // announced by the start itself
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: queue next: %w", err)
	}
	return out, nil
}

// startNext marks the job the next free slot goes to running under this
// replica's lease, in tx (which holds the queue's lock), and returns it;
// nil when no slot is free or no waiting job may start. With announce, the
// same statement sends the notification (notifyStarted) of the start.
func (q *Queue) startNext(ctx context.Context, tx pgx.Tx, announce bool) (*QueuedJob, error) {
	st, err := load(ctx, tx)
	if err != nil {
		return nil, err
	}
	return q.startPicked(ctx, tx, st, announce)
}

// startPicked is startNext on st, the queue as read in tx.
func (q *Queue) startPicked(ctx context.Context, tx pgx.Tx, st *qstate, announce bool) (*QueuedJob, error) {
	j := st.pick(q.opts)
	if j == nil {
		return nil, nil
	}
	start := `WITH started AS (
			UPDATE queue_jobs SET state = 'running', owner = $2,
			lease_until = now() + $3 * interval '1 microsecond', started = now() WHERE id = $1)
		INSERT INTO queue_users (user_id, last_served) VALUES ($4, nextval('queue_turns'))
		ON CONFLICT (user_id) DO UPDATE SET last_served = EXCLUDED.last_served`
	args := []any{j.id, q.replica, q.opts.Lease.Microseconds(), j.user}
	if announce {
		start = `WITH started AS (
				UPDATE queue_jobs SET state = 'running', owner = $2,
				lease_until = now() + $3 * interval '1 microsecond', started = now() WHERE id = $1),
			served AS (INSERT INTO queue_users (user_id, last_served) VALUES ($4, nextval('queue_turns'))
				ON CONFLICT (user_id) DO UPDATE SET last_served = EXCLUDED.last_served)
			SELECT pg_notify($5, $6)`
		args = append(args, QueueChannel, notifyStarted)
	}
	if _, err := tx.Exec(ctx, start, args...); err != nil {
		return nil, err
	}
	return &QueuedJob{ID: j.id, User: j.user, Serial: j.serial, Pool: j.pool}, nil
}

// Release gives the job's slot back (its prediction is final, or it ended
// without one) and removes it from the queue. Only the job's owner
// releases a running job; releasing a job that is not in the queue is not
// an error, so a release after a takeover by another replica is harmless.
// It reports whether this call removed the job.
func (q *Queue) Release(ctx context.Context, id string) (bool, error) {
	removed, err := q.remove(ctx, `DELETE FROM queue_jobs WHERE id = $1 AND state = 'running' AND owner = $2 RETURNING user_id`,
		id, q.replica)
	if err != nil {
		return false, fmt.Errorf("postgres: queue release %s: %w", id, err)
	}
	return removed, nil
}

// remove runs del, a DELETE of at most one job RETURNING its user_id,
// under the queue's lock, forgets the user when it has no job left, and
// reports whether a job was removed.
func (q *Queue) remove(ctx context.Context, del string, args ...any) (bool, error) {
	removed := false
	err := q.locked(ctx, func(tx pgx.Tx) (bool, error) {
		var user string
		err := tx.QueryRow(ctx, del, args...).Scan(&user)
		if errors.Is(err, pgx.ErrNoRows) {
			removed = false
			return false, nil
		}
		if err != nil {
			return false, err
		}
		removed = true
		return true, forgetUser(ctx, tx, user)
	})
	return removed, err
}

// ReleaseNext is Release followed by Next in one transaction: the slot a
// job gives back goes to the next job at once, on this replica, with one
// commit instead of two (the hand-off the dispatch benchmark measures).
// next is nil when no job may start.
func (q *Queue) ReleaseNext(ctx context.Context, id string) (removed bool, next *QueuedJob, err error) {
	err = q.locked(ctx, func(tx pgx.Tx) (bool, error) {
		removed, next = false, nil
		var user string
		err := tx.QueryRow(ctx, `DELETE FROM queue_jobs WHERE id = $1 AND state = 'running' AND owner = $2 RETURNING user_id`,
			id, q.replica).Scan(&user)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return false, err
		default:
			removed = true
			if err := forgetUser(ctx, tx, user); err != nil {
				return false, err
			}
		}
		if next, err = q.startNext(ctx, tx, false); err != nil {
			return false, err
		}
		return removed || next != nil, nil
	})
	if err != nil {
		return false, nil, fmt.Errorf("postgres: queue release %s: %w", id, err)
	}
	return removed, next, nil
}

// FreeSlot gives the slot of this replica's running job id back before the
// job ends (its prediction is final, only its download and delivery
// remain), so the next job can start on any replica. The job stays this
// replica's, counts against its user's running cap and holds its Serial
// until Release. It reports whether it freed a slot.
func (q *Queue) FreeSlot(ctx context.Context, id string) (bool, error) {
	freed := false
	err := q.locked(ctx, func(tx pgx.Tx) (bool, error) {
		tag, err := tx.Exec(ctx, `UPDATE queue_jobs SET slot_free = true
			WHERE id = $1 AND state = 'running' AND owner = $2 AND NOT slot_free`, id, q.replica)
		if err != nil {
			return false, err
		}
		freed = tag.RowsAffected() == 1
		return freed, nil
	})
	if err != nil {
		return false, fmt.Errorf("postgres: queue free slot %s: %w", id, err)
	}
	return freed, nil
}

// FreeSlotNext is FreeSlot that, while this replica runs fewer jobs
// holding a slot than its fair share (see keepsSlot), also gives the slot
// it frees to the next job, on this replica, in the same transaction: one
// commit instead of two and no notification round trip before the next
// create (the hand-off the dispatch benchmark measures). At or above its
// share it only frees the slot, and the notification lets a replica
// holding fewer slots claim it (Next), so that a replica holding none is
// not starved by those that keep giving their slots to themselves. The
// share is counted over the live replicas (queue_replicas, renewed by
// Work). next is nil when the slot was not handed over; a call that frees
// nothing (not this replica's job, or its slot already free) starts
// nothing.
func (q *Queue) FreeSlotNext(ctx context.Context, id string) (freed bool, next *QueuedJob, err error) {
	release, err := q.turn(ctx)
	if err != nil {
		return false, nil, fmt.Errorf("postgres: queue free slot %s: %w", id, err)
	}
	defer release()
	err = retryTx(ctx, func() error {
		var err error
		freed, next, err = q.freeSlotNext(ctx, id)
		return err
	})
	if err != nil {
		return false, nil, fmt.Errorf("postgres: queue free slot %s: %w", id, err)
	}
	return freed, next, nil
}

// freeSlotNext is one attempt of FreeSlotNext, in three round trips: the
// transaction's start, the lock, the free and the reads in one batch; the
// start of the next job with its notification; the commit.
//
// The commit does not wait for the write-ahead log to reach the disk
// (synchronous_commit off, for this transaction only): that flush was half
// of a hand-off's time, with the queue's lock held through it. Nothing
// outside the database depends on the hand-off being durable: the job it
// starts creates its prediction (the paid step) only after Hold, whose
// commit is synchronous and so flushes the log through this transaction
// too, and whose update finds no running job of this replica if a server
// crash lost the hand-off (the job waits again, for any replica; the freed
// slot counts as held again until its job is released). What a crash can
// lose is only that window's "running" notice or places in line, told
// again when the job starts once more.
func (q *Queue) freeSlotNext(ctx context.Context, id string) (freed bool, next *QueuedJob, err error) {
	conn, err := q.db.pool.Acquire(ctx)
	if err != nil {
		return false, nil, err
	}
	defer conn.Release()
	st := newState()
	var live, slowed []string
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{})
	b.Queue(lockSQL, queueLockClass)
	b.Queue(`SET LOCAL synchronous_commit = off`)
	b.Queue(`WITH f AS (UPDATE queue_jobs SET slot_free = true
			WHERE id = $1 AND state = 'running' AND owner = $2 AND NOT slot_free RETURNING id)
		SELECT EXISTS (SELECT 1 FROM f), ARRAY(SELECT replica FROM queue_replicas WHERE seen_until > now()),
			ARRAY(SELECT pool FROM queue_pools WHERE slow_until > now())`, id, q.replica).
		QueryRow(func(row pgx.Row) error { return row.Scan(&freed, &live, &slowed) })
	b.Queue(jobsSQL).Query(st.scanJobs) // after the free: it sees it
	br := conn.SendBatch(ctx, b)
	tx := br.Tx()
	defer func() { _ = tx.Rollback(ctx) }() // after a commit, nothing
	if err := br.Close(); err != nil {
		return false, nil, err
	}
	if !freed {
		return false, nil, tx.Commit(ctx)
	}
	for _, p := range slowed {
		st.slowed[p] = true
	}
	if st.keepsSlot(q.replica, live, q.opts.Slots) {
		if next, err = q.startPicked(ctx, tx, st, true); err != nil {
			return false, nil, err
		}
	}
	if next == nil {
		// The slot is free for any replica: tell them.
		if err := notifyIn(ctx, tx); err != nil {
			return false, nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return false, nil, err
	}
	return true, next, nil
}

// keepsSlot reports whether replica me may give a slot it just freed to
// the next job itself: while it holds fewer slots than its fair share,
// slots / (live replicas, me included), rounded down. When the slots do
// not divide evenly, a replica at its share may take one of the leftover
// slots too, but only while every live replica holds its share and that
// share is at least one; otherwise leftover slots go through the
// notification to whichever replica claims them first. So the replicas
// that hand slots to themselves never hold, between them, so many that a
// live replica is left below its share for good: a replica below it is
// offered the slot of every replica above it.
func (st *qstate) keepsSlot(me string, live []string, slots int) bool {
	held := map[string]int{}
	for _, j := range st.jobs {
		if j.running && !j.slotFree {
			held[j.owner]++
		}
	}
	if !slices.Contains(live, me) {
		live = append(slices.Clone(live), me)
	}
	share, mine := slots/len(live), held[me]
	switch {
	case mine < share:
		return true
	case mine > share || share == 0 || slots%len(live) == 0:
		return false
	}
	for _, r := range live {
		if held[r] < share {
			return false
		}
	}
	return true
}

// present records this replica as live (running Work) until a Lease from
// now, by the database's clock, and forgets replicas whose record lapsed.
func (q *Queue) present(ctx context.Context) error {
	_, err := q.db.pool.Exec(ctx, `WITH gone AS (DELETE FROM queue_replicas WHERE seen_until < now() AND replica <> $1)
		INSERT INTO queue_replicas (replica, seen_until) VALUES ($1, now() + $2 * interval '1 microsecond')
		ON CONFLICT (replica) DO UPDATE SET seen_until = EXCLUDED.seen_until`, q.replica, q.opts.Lease.Microseconds())
	if err != nil {
		return fmt.Errorf("postgres: queue presence: %w", err)
	}
	return nil
}

// absent removes this replica's record: it no longer runs Work.
func (q *Queue) absent(ctx context.Context) error {
	if _, err := q.db.pool.Exec(ctx, `DELETE FROM queue_replicas WHERE replica = $1`, q.replica); err != nil {
		return fmt.Errorf("postgres: queue presence: %w", err)
	}
	return nil
}

// SlowPool starts no job of pool for wait, on any replica: the provider
// answered a create of it 429. The other pools go on. Every replica looks
// again when the wait has passed (this one wakes them: it announces a
// change then, see Work).
func (q *Queue) SlowPool(ctx context.Context, pool string, wait time.Duration) error {
	if wait <= 0 {
		return nil
	}
	err := q.locked(ctx, func(tx pgx.Tx) (bool, error) {
		_, err := tx.Exec(ctx, `INSERT INTO queue_pools (pool, slow_until) VALUES ($1, now() + $2 * interval '1 microsecond')
			ON CONFLICT (pool) DO UPDATE SET slow_until = greatest(queue_pools.slow_until, EXCLUDED.slow_until)`,
			pool, wait.Microseconds())
		return true, err
	})
	if err != nil {
		return fmt.Errorf("postgres: queue slow pool %s: %w", pool, err)
	}
	return nil
}

// notify announces a change to every replica, outside any decision.
func (q *Queue) notify(ctx context.Context) error {
	_, err := q.db.pool.Exec(ctx, `SELECT pg_notify($1, '')`, QueueChannel)
	return err
}

// forgetUser drops a user's turn once they have no job in the queue.
func forgetUser(ctx context.Context, tx pgx.Tx, user string) error {
	_, err := tx.Exec(ctx, `DELETE FROM queue_users WHERE user_id = $1
		AND NOT EXISTS (SELECT 1 FROM queue_jobs WHERE user_id = $1)`, user)
	return err
}

// Cancel cancels a job from any replica. A waiting job is removed at once
// (waiting is true); a running one is marked, and its owner learns it from
// Renew and cancels its work, then releases it. It wraps bot.ErrNotFound
// when the job is not in the queue.
func (q *Queue) Cancel(ctx context.Context, id string) (waiting bool, err error) {
	err = q.locked(ctx, func(tx pgx.Tx) (bool, error) {
		var user, state string
		err := tx.QueryRow(ctx, `SELECT user_id, state FROM queue_jobs WHERE id = $1`, id).Scan(&user, &state)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, bot.ErrNotFound
		}
		if err != nil {
			return false, err
		}
		if waiting = state == "waiting"; waiting {
			if _, err := tx.Exec(ctx, `DELETE FROM queue_jobs WHERE id = $1`, id); err != nil {
				return false, err
			}
			return true, forgetUser(ctx, tx, user)
		}
		_, err = tx.Exec(ctx, `UPDATE queue_jobs SET cancel = true WHERE id = $1`, id)
		return true, err
	})
	if err != nil {
		return false, fmt.Errorf("postgres: queue cancel %s: %w", id, err)
	}
	return waiting, nil
}

// CancelWaiting removes job id if it is waiting, from any replica, and
// reports whether it did; a running job is left alone.
func (q *Queue) CancelWaiting(ctx context.Context, id string) (bool, error) {
	removed, err := q.remove(ctx, `DELETE FROM queue_jobs WHERE id = $1 AND state = 'waiting' RETURNING user_id`, id)
	if err != nil {
		return false, fmt.Errorf("postgres: queue cancel %s: %w", id, err)
	}
	return removed, nil
}

// Positions returns the place of every waiting job, by id; running jobs
// are not in it.
func (q *Queue) Positions(ctx context.Context) (map[string]int, error) {
	var pos map[string]int
	err := pgx.BeginTxFunc(ctx, q.db.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		st, err := load(ctx, tx)
		if err != nil {
			return err
		}
		pos = st.positions()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: queue positions: %w", err)
	}
	return pos, nil
}

// Renew extends the leases of this replica's running jobs. It returns the
// ids of the jobs this replica still owns (a job missing from it was taken
// over after this replica's lease lapsed: its work must stop) and, among
// them, those whose cancel was asked from any replica.
func (q *Queue) Renew(ctx context.Context) (owned, canceled []string, err error) {
	rows, err := q.db.pool.Query(ctx, `UPDATE queue_jobs SET lease_until = now() + $2 * interval '1 microsecond'
		WHERE state = 'running' AND owner = $1 RETURNING id, cancel`, q.replica, q.opts.Lease.Microseconds())
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: queue renew: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var c bool
		if err := rows.Scan(&id, &c); err != nil {
			return nil, nil, fmt.Errorf("postgres: queue renew: %w", err)
		}
		owned = append(owned, id)
		if c {
			canceled = append(canceled, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("postgres: queue renew: %w", err)
	}
	slices.Sort(owned)
	slices.Sort(canceled)
	return owned, canceled, nil
}

// Hold checks that this replica still owns the running job id and extends
// its lease. (A lease that lapsed but that no replica took over yet is
// this replica's again: the row lock orders Hold and Takeover, so only one
// of them wins.) Call it
// right before anything that must happen once (creating the prediction,
// which is paid): a replica that was cut off long enough for another to
// take the job over gets an error wrapping ErrLeaseLost and must stop,
// leaving the job to its new owner. A cancel asked for the job gives an
// error wrapping kontext.ErrCanceled.
func (q *Queue) Hold(ctx context.Context, id string) error {
	var cancel bool
	err := q.db.pool.QueryRow(ctx, `UPDATE queue_jobs SET lease_until = now() + $3 * interval '1 microsecond'
		WHERE id = $1 AND state = 'running' AND owner = $2 RETURNING cancel`,
		id, q.replica, q.opts.Lease.Microseconds()).Scan(&cancel)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("postgres: queue hold %s: %w", id, ErrLeaseLost)
	case err != nil:
		return fmt.Errorf("postgres: queue hold %s: %w", id, err)
	case cancel:
		return fmt.Errorf("postgres: queue hold %s: %w", id, kontext.ErrCanceled)
	}
	return nil
}

// cancelAsked returns the ids of this replica's running jobs whose cancel
// was asked.
func (q *Queue) cancelAsked(ctx context.Context) ([]string, error) {
	rows, err := q.db.pool.Query(ctx, `SELECT id FROM queue_jobs WHERE state = 'running' AND owner = $1 AND cancel`, q.replica)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Takeover gives this replica the running jobs whose owner's lease lapsed,
// each keeping its slot, oldest first.
func (q *Queue) Takeover(ctx context.Context) ([]QueuedJob, error) {
	var lapsed bool
	err := q.db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM queue_jobs
		WHERE state = 'running' AND lease_until < now())`).Scan(&lapsed)
	if err != nil {
		return nil, fmt.Errorf("postgres: queue takeover: %w", err)
	}
	if !lapsed {
		return nil, nil
	}
	var out []QueuedJob
	err = q.locked(ctx, func(tx pgx.Tx) (bool, error) {
		out = nil
		rows, err := tx.Query(ctx, `WITH t AS (
				UPDATE queue_jobs SET owner = $1, lease_until = now() + $2 * interval '1 microsecond'
				WHERE state = 'running' AND lease_until < now() RETURNING id, user_id, serial, pool, seq)
			SELECT id, user_id, serial, pool FROM t ORDER BY seq`,
			q.replica, q.opts.Lease.Microseconds())
		if err != nil {
			return false, err
		}
		for rows.Next() {
			j := QueuedJob{TakenOver: true}
			if err := rows.Scan(&j.ID, &j.User, &j.Serial, &j.Pool); err != nil {
				rows.Close()
				return false, err
			}
			out = append(out, j)
		}
		if err := rows.Err(); err != nil {
			return false, err
		}
		return len(out) > 0, nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: queue takeover: %w", err)
	}
	return out, nil
}

// Handover ends this replica's leases at once, so another replica takes
// its running jobs over without waiting (a replica stopping on SIGTERM);
// with ids, only those jobs' leases. This replica must not touch those
// jobs afterwards.
func (q *Queue) Handover(ctx context.Context, ids ...string) (int, error) {
	n := 0
	err := q.locked(ctx, func(tx pgx.Tx) (bool, error) {
		tag, err := tx.Exec(ctx, `UPDATE queue_jobs SET lease_until = now() - interval '1 microsecond'
			WHERE state = 'running' AND owner = $1 AND (coalesce(cardinality($2::text[]), 0) = 0 OR id = ANY($2))`, q.replica, ids)
		if err != nil {
			return false, err
		}
		n = int(tag.RowsAffected())
		return n > 0, nil
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: queue handover: %w", err)
	}
	return n, nil
}

// Stats reads the number of slots, the slots held by running jobs and the
// waiting jobs, across every replica.
func (q *Queue) Stats(ctx context.Context) (QueueStats, error) {
	st := QueueStats{Slots: q.opts.Slots, Pools: map[string]kontext.PoolStats{}}
	limit := func(p string) int {
		if n, ok := q.opts.Pools[p]; ok && n > 0 {
			return min(n, q.opts.Slots)
		}
		return q.opts.Slots
	}
	for p := range q.opts.Pools {
		st.Pools[p] = kontext.PoolStats{Slots: limit(p)}
	}
	rows, err := q.db.pool.Query(ctx, `SELECT pool, count(*) FILTER (WHERE state = 'running' AND NOT slot_free), count(*) FILTER (WHERE state = 'waiting')
		FROM queue_jobs GROUP BY pool`)
	if err != nil {
		return QueueStats{}, fmt.Errorf("postgres: queue stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p string
		var ps kontext.PoolStats
		if err := rows.Scan(&p, &ps.Running, &ps.Waiting); err != nil {
			return QueueStats{}, fmt.Errorf("postgres: queue stats: %w", err)
		}
		ps.Slots = limit(p)
		st.Pools[p] = ps
		st.Running += ps.Running
		st.Waiting += ps.Waiting
	}
	if err := rows.Err(); err != nil {
		return QueueStats{}, fmt.Errorf("postgres: queue stats: %w", err)
	}
	return st, nil
}

// Listen sends on the returned channel after every queue change on any
// replica (several changes may come as one value) and after every
// (re)connection, since a notification sent while this replica was not
// listening is lost: on each value, look at the queue again. It holds one
// connection of the pool while ctx lives; the channel is closed when ctx
// ends.
func (q *Queue) Listen(ctx context.Context) <-chan struct{} {
	return q.listenFor(ctx, nil)
}

// listenFor is Listen, but a notification whose payload wanted rejects
// sends nothing (nil wants every one).
func (q *Queue) listenFor(ctx context.Context, wanted func(payload string) bool) <-chan struct{} {
	ch := make(chan struct{}, 1)
	signal := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	go func() {
		defer close(ch)
		backoff := 50 * time.Millisecond
		for ctx.Err() == nil {
			err := q.listen(ctx, wanted, signal)
			if ctx.Err() != nil {
				return
			}
			q.db.log.Warn("postgres: queue listener lost its connection", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
		}
	}()
	return ch
}

// listen holds one LISTEN session until it fails or ctx ends.
func (q *Queue) listen(ctx context.Context, wanted func(string) bool, signal func()) error {
	pc, err := q.db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The session is ours alone from now on: it is closed, not returned.
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+QueueChannel); err != nil {
		return err
	}
	signal()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if wanted == nil || wanted(n.Payload) {
			signal()
		}
	}
}

// errGoexit is a run's error when it called runtime.Goexit.
var errGoexit = errors.New("postgres: queue: run called runtime.Goexit")

// ErrHandedOver is the cause of a job's context ending because its replica
// is stopping and hands the job over to another replica: the work must
// stop without ending the job (its prediction, if any, is followed by the
// replica that takes it over). It wraps kontext.ErrShutdown, so the
// client does not cancel the prediction and the bot keeps the job live.
var ErrHandedOver = fmt.Errorf("postgres: job handed over to another replica: %w", kontext.ErrShutdown)

// ErrLeaseLost is the cause of a job's context ending because this replica
// could not renew its lease in time and another replica took the job over:
// the work must stop without ending the job. It wraps kontext.ErrShutdown.
var ErrLeaseLost = fmt.Errorf("postgres: job taken over by another replica after this one's lease lapsed: %w", kontext.ErrShutdown)

// Work runs this replica's share of the queue until ctx ends: whenever the
// queue changes (on any replica) and at every lease renewal it takes the
// jobs the free slots go to, and the jobs of replicas whose lease lapsed,
// and calls run for each in a goroutine of its own. When run returns nil
// or an error, the job is over and its slot is given back (Release); when
// its error wraps kontext.ErrShutdown, the job was left unfinished and is
// handed over at once (its lease ends, another replica or this one takes
// it over). Leases are renewed at a third of Lease; a cancel asked from
// any replica ends that job's context with cause kontext.ErrCanceled.
// While it runs, the replica counts as live (queue_replicas, renewed with
// the leases) in the fair share of FreeSlotNext.
// When ctx ends, Work ends every running job's context with cause
// ErrHandedOver, hands over or releases each as its run returns (a run
// that finishes its job anyway is released), and returns when every run
// has returned.
//
// run receives the job's context, which does not end with ctx but only on
// a cancel, a stop or a lost lease. It carries kontext.WithSlotRelease:
// once the job's prediction is final, the client gives its slot back
// while the job downloads, stores and posts its image (FreeSlotNext: below
// its fair share this replica starts the next job with it at once, in the
// same transaction; otherwise any replica may claim it). Errors of the
// database are logged and retried at the next change or renewal.
func (q *Queue) Work(ctx context.Context, run func(ctx context.Context, j QueuedJob) error) {
	lctx, stopListen := context.WithCancel(ctx)
	defer stopListen()
	if err := q.present(ctx); err != nil && ctx.Err() == nil {
		q.db.log.Warn("postgres: queue presence", "replica", q.replica, "err", err)
	}
	// Starts announced as such (notifyStarted) free no slot and let no
	// other job start: nothing to look at.
	wake := q.listenFor(lctx, func(payload string) bool { return payload != notifyStarted })
	tick := time.NewTicker(q.opts.Lease / 3)
	defer tick.Stop()

	base := context.WithoutCancel(ctx)
	running := map[string]context.CancelCauseFunc{}
	type result struct {
		id  string
		err error
	}
	done := make(chan result)
	// handed are jobs a job's goroutine started for this replica when it
	// gave its slot back (FreeSlotNext); the loop runs them. One the loop
	// no longer takes (it is stopping) is handed over with the rest.
	// handing counts the hand-offs under way, from before their
	// transaction until the loop takes their job: a renewal that finds a
	// job of this replica not running here is not an orphan while one is.
	handed := make(chan QueuedJob, q.opts.Slots)
	var handing atomic.Int64
	// A 429 on a job's create slows its pool down (SlowPool, by the job's
	// goroutine); when the wait has passed, this replica looks again and
	// wakes the others.
	limited := make(chan time.Duration, 1)
	var retry *time.Timer
	var retryC <-chan time.Time
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	start := func(j QueuedJob) {
		if _, dup := running[j.ID]; dup {
			return
		}
		jctx, cancel := context.WithCancelCause(base)
		running[j.ID] = cancel
		// The client frees the slot once the prediction is final.
		// Below its fair share, this replica gives the slot straight to
		// the next job (FreeSlotNext); stopping, it starts nothing more.
		jctx = kontext.WithSlotRelease(jctx, func() {
			fctx, fcancel := context.WithTimeout(base, 10*time.Second)
			defer fcancel()
			if ctx.Err() != nil {
				if _, err := q.FreeSlot(fctx, j.ID); err != nil {
					q.db.log.Warn("postgres: queue free slot", "replica", q.replica, "job", j.ID, "err", err)
				}
				return
			}
			handing.Add(1)
			_, next, err := q.FreeSlotNext(fctx, j.ID)
			if err != nil {
				q.db.log.Warn("postgres: queue free slot", "replica", q.replica, "job", j.ID, "err", err)
			}
			if next == nil {
				handing.Add(-1)
				return
			}
			select {
			case handed <- *next:
			case <-ctx.Done():
				handing.Add(-1)
			}
		})
		jctx = kontext.WithSlotLimited(jctx, func(wait time.Duration) {
			sctx, scancel := context.WithTimeout(base, 10*time.Second)
			defer scancel()
			if err := q.SlowPool(sctx, j.Pool, wait); err != nil {
				q.db.log.Warn("postgres: queue slow pool", "replica", q.replica, "pool", j.Pool, "err", err)
			}
			for {
				select {
				case limited <- wait:
					return
				case old := <-limited: // keep the longer wait
					wait = max(wait, old)
				}
			}
		})
		go func() {
			err := errGoexit
			defer func() {
				if v := recover(); v != nil {
					q.db.log.Error("postgres: queue: job panicked", "job", j.ID, "panic", v)
					err = fmt.Errorf("postgres: queue: job %s panicked: %v", j.ID, v)
				}
				if c := context.Cause(jctx); errors.Is(c, ErrLeaseLost) {
					err = c // not ours any more: neither release nor hand over
				}
				done <- result{j.ID, err}
			}()
			err = run(jctx, j)
		}()
	}
	fill := func(takeover bool) {
		if takeover {
			taken, err := q.Takeover(ctx)
			if err != nil && ctx.Err() == nil {
				q.db.log.Warn("postgres: queue takeover", "replica", q.replica, "err", err)
			}
			for _, j := range taken {
				start(j)
			}
		}
		for ctx.Err() == nil {
			j, err := q.Next(ctx)
			if err != nil {
				if ctx.Err() == nil {
					q.db.log.Warn("postgres: queue next", "replica", q.replica, "err", err)
				}
				return
			}
			if j == nil {
				return
			}
			start(*j)
		}
	}
	finish := func(r result) {
		cancel := running[r.id]
		delete(running, r.id)
		cancel(nil)
		rctx, rcancel := context.WithTimeout(base, 10*time.Second)
		defer rcancel()
		switch {
		case errors.Is(r.err, ErrLeaseLost):
		case errors.Is(r.err, kontext.ErrShutdown):
			// Left unfinished: whoever takes it over continues it.
			if _, err := q.Handover(rctx, r.id); err != nil {
				q.db.log.Warn("postgres: queue handover", "replica", q.replica, "job", r.id, "err", err)
			}
		case ctx.Err() != nil:
			// Give the slot back even while stopping: the job is over.
			if _, err := q.Release(rctx, r.id); err != nil {
				q.db.log.Warn("postgres: queue release", "replica", q.replica, "job", r.id, "err", err)
			}
		default:
			// The slot goes straight to the next job, here.
			_, next, err := q.ReleaseNext(rctx, r.id)
			if err != nil {
				q.db.log.Warn("postgres: queue release", "replica", q.replica, "job", r.id, "err", err)
			}
			if next != nil {
				start(*next)
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			for _, cancel := range running {
				cancel(ErrHandedOver)
			}
			for len(running) > 0 {
				finish(<-done)
			}
			// A job this replica holds but does not run (a start whose
			// commit succeeded while its answer was lost) goes too.
			hctx, hcancel := context.WithTimeout(base, 10*time.Second)
			if _, err := q.Handover(hctx); err != nil {
				q.db.log.Warn("postgres: queue handover", "replica", q.replica, "err", err)
			}
			if err := q.absent(hctx); err != nil {
				q.db.log.Warn("postgres: queue presence", "replica", q.replica, "err", err)
			}
			hcancel()
			for range wake {
			}
			return
		case r := <-done:
			finish(r)
			fill(false)
		case j := <-handed:
			handing.Add(-1)
			start(j)
		case wait := <-limited:
			if retry == nil {
				retry = time.NewTimer(wait)
			} else {
				retry.Reset(wait)
			}
			retryC = retry.C
		case <-retryC:
			retryC = nil
			if err := q.notify(ctx); err != nil && ctx.Err() == nil {
				q.db.log.Warn("postgres: queue notify", "replica", q.replica, "err", err)
			}
			fill(false)
		case <-wake:
			if len(running) > 0 {
				// The change may be a cancel of one of ours.
				ids, err := q.cancelAsked(ctx)
				if err != nil && ctx.Err() == nil {
					q.db.log.Warn("postgres: queue cancel check", "replica", q.replica, "err", err)
				}
				for _, id := range ids {
					if cancel, ok := running[id]; ok {
						cancel(kontext.ErrCanceled)
					}
				}
			}
			fill(true)
		case <-tick.C:
			if err := q.present(ctx); err != nil && ctx.Err() == nil {
				q.db.log.Warn("postgres: queue presence", "replica", q.replica, "err", err)
			}
			owned, canceled, err := q.Renew(ctx)
			if err != nil {
				if ctx.Err() == nil {
					q.db.log.Warn("postgres: queue renew", "replica", q.replica, "err", err)
				}
			} else {
				for id, cancel := range running {
					switch {
					case !slices.Contains(owned, id):
						cancel(ErrLeaseLost)
					case slices.Contains(canceled, id):
						cancel(kontext.ErrCanceled)
					}
				}
				// A job held here but not run (a start whose commit
				// succeeded while its answer was lost) is handed over
				// rather than renewed for ever.
				// (Not while a hand-off is under way: its job may be
				// this replica's already and not yet taken by the loop;
				// the next renewal looks again.)
				var orphans []string
				for _, id := range owned {
					if _, ok := running[id]; !ok && handing.Load() == 0 {
						orphans = append(orphans, id)
					}
				}
				if len(orphans) > 0 {
					if _, err := q.Handover(ctx, orphans...); err != nil && ctx.Err() == nil {
						q.db.log.Warn("postgres: queue handover", "replica", q.replica, "err", err)
					}
				}
			}
			fill(true)
		}
	}
}
