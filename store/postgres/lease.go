package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Leases: named leases held by session advisory locks.
//
// A Leases is one replica's holder of named leases (the Discord gateway's
// shards). Every lease is a session advisory lock on one connection of its
// own, opened outside the pool (a pool could hand the session to someone
// else): the server releases the locks the moment that connection dies
// (the replica was killed, its host or network lost), so no clock decides
// who holds what. The holder pings the connection every Check; a ping that
// fails or takes longer than Check loses every lease at once (each Lost
// channel closes) and the connection is dropped, so the holder stops
// acting on a lease the server may already have given away. On the server
// side the session's TCP keepalives are set so that a silent peer is
// dropped a few Checks later, well after the holder gave up. The next
// TryAcquire connects again.
//
// A lease is granted only 2*Check after its lock was taken: a previous
// holder whose connection the server dropped (server restart, an
// administrator's pg_terminate_backend) has noticed its loss and stopped
// by then, so two replicas never act on one lease at the same time.
//
// The same connection holds a shared "presence" lock, so Peers counts the
// replicas holding a Leases on the schema (to spread shards evenly).
//
// Lock keys are pairs (class, hashtext(schema || name)), so schemas (tests,
// several bots on one server) never share a lease.

// leaseClass and presenceClass are the first halves of the lease and
// presence lock keys.
const (
	leaseClass    int32 = 0x6b6c6561 // "klea"
	presenceClass int32 = 0x6b707265 // "kpre"
)

// connectTimeout bounds opening the lease connection.
const connectTimeout = 10 * time.Second

// DefaultLeaseCheck is how often a Leases checks its connection when
// LeaseOptions.Check is not set.
const DefaultLeaseCheck = time.Second

// LeaseOptions configures Leases.
type LeaseOptions struct {
	// Check is how often the connection holding the leases is pinged, and
	// how long a ping may take; zero means DefaultLeaseCheck. A lost
	// connection is noticed within 2*Check.
	Check time.Duration
	// Logger receives lost connections; nil uses the store's.
	Logger *slog.Logger
	// Replica names this replica; the connection's application_name is
	// "kontextbot-leases/" + Replica, so an operator sees who holds what
	// in pg_stat_activity.
	Replica string
}

// Leases holds one replica's named leases on one dedicated connection. It
// is safe for concurrent use. Close it when done: that releases every
// lease.
type Leases struct {
	db      *DB
	check   time.Duration
	log     *slog.Logger
	appName string

	mu     sync.Mutex // guards everything below, and serializes use of conn
	conn   *pgx.Conn
	held   map[string]chan struct{} // lease name -> its Lost channel
	stop   chan struct{}            // ends the current connection's pinger
	closed bool
	wg     sync.WaitGroup
}

// Leases returns a holder of named leases on the store's database.
func (db *DB) Leases(opts LeaseOptions) *Leases {
	if opts.Check <= 0 {
		opts.Check = DefaultLeaseCheck
	}
	if opts.Logger == nil {
		opts.Logger = db.log
	}
	app := "kontextbot-leases"
	if opts.Replica != "" {
		app += "/" + opts.Replica
	}
	return &Leases{db: db, check: opts.Check, log: opts.Logger, appName: app, held: map[string]chan struct{}{}}
}

// ErrLeasesClosed is returned by TryAcquire after Close.
var ErrLeasesClosed = errors.New("postgres: leases closed")

// connect opens the dedicated connection and takes the presence lock.
// l.mu is held.
func (l *Leases) connect(ctx context.Context) error {
	cfg := l.db.pool.Config().ConnConfig.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	// A peer that vanishes without closing (lost host or network) is
	// dropped by the server after idle + interval*count seconds, which
	// releases its locks; the holder gave up after 2*Check already.
	secs := max(1, int(l.check.Round(time.Second)/time.Second))
	cfg.RuntimeParams["tcp_keepalives_idle"] = strconv.Itoa(2 * secs)
	cfg.RuntimeParams["tcp_keepalives_interval"] = strconv.Itoa(secs)
	cfg.RuntimeParams["tcp_keepalives_count"] = "3"
	cfg.RuntimeParams["application_name"] = l.appName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock_shared($1, hashtext(current_schema()))`, presenceClass); err != nil {
		_ = conn.Close(context.Background())
		return err
	}
	l.conn = conn
	l.stop = make(chan struct{})
	l.wg.Add(1)
	go l.ping(conn, l.stop)
	return nil
}

// ping checks conn every Check until stop closes or a check fails; then
// every lease is lost.
func (l *Leases) ping(conn *pgx.Conn, stop chan struct{}) {
	defer l.wg.Done()
	t := time.NewTicker(l.check)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		if l.conn != conn {
			l.mu.Unlock()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.check)
		err := conn.Ping(ctx)
		cancel()
		if err != nil {
			l.log.Warn("postgres: the connection holding the leases is lost; every lease with it", "leases", len(l.held), "err", err)
			l.dropLocked()
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
	}
}

// dropLocked closes the connection and loses every lease. l.mu is held.
func (l *Leases) dropLocked() {
	if l.conn == nil {
		return
	}
	for name, lost := range l.held {
		close(lost)
		delete(l.held, name)
	}
	close(l.stop)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = l.conn.Close(ctx)
	cancel()
	l.conn = nil
}

// TryAcquire takes the lease name when no replica holds it, waiting
// 2*Check before it returns the grant (see above). It returns ok false at
// once when another replica holds it (or this Leases already does). lost
// closes when the lease is lost (the connection failed); release gives it
// up (it may be called more than once, and after a loss).
func (l *Leases) TryAcquire(ctx context.Context, name string) (lost <-chan struct{}, release func(), ok bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, nil, false, ErrLeasesClosed
	}
	if _, dup := l.held[name]; dup {
		return nil, nil, false, nil
	}
	if l.conn == nil {
		// No lease is held without a connection: nothing waits on l.mu
		// meanwhile but other tries.
		cctx, cancel := context.WithTimeout(ctx, connectTimeout)
		err := l.connect(cctx)
		cancel()
		if err != nil {
			return nil, nil, false, fmt.Errorf("postgres: lease %s: connect: %w", name, err)
		}
	}
	conn := l.conn
	// Bounded like a ping: l.mu is held, and the pinger must not wait
	// longer than that to notice a lost connection.
	qctx, cancel := context.WithTimeout(ctx, l.check)
	defer cancel()
	if err := conn.QueryRow(qctx, `SELECT pg_try_advisory_lock($1, hashtext(current_schema() || '/' || $2))`, leaseClass, name).Scan(&ok); err != nil {
		if conn.IsClosed() || ctx.Err() == nil {
			l.dropLocked() // the session's state is unknown: start afresh
		}
		return nil, nil, false, fmt.Errorf("postgres: lease %s: %w", name, err)
	}
	if !ok {
		return nil, nil, false, nil
	}
	ch := make(chan struct{})
	l.held[name] = ch
	release = func() { l.release(name, ch) }
	// The grace (see above), without holding l.mu: the pinger keeps
	// checking the connection meanwhile.
	l.mu.Unlock()
	t := time.NewTimer(2 * l.check)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		release()
		l.mu.Lock()
		return nil, nil, false, fmt.Errorf("postgres: lease %s: %w", name, ctx.Err())
	}
	l.mu.Lock()
	select {
	case <-ch: // the connection was lost meanwhile, and the lease with it
		return nil, nil, false, nil
	default:
	}
	return ch, release, true, nil
}

// release unlocks the lease name if ch is still its grant.
func (l *Leases) release(name string, ch chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held[name] != ch || l.conn == nil {
		return
	}
	delete(l.held, name)
	ctx, cancel := context.WithTimeout(context.Background(), l.check)
	defer cancel()
	var unlocked bool
	err := l.conn.QueryRow(ctx, `SELECT pg_advisory_unlock($1, hashtext(current_schema() || '/' || $2))`, leaseClass, name).Scan(&unlocked)
	if err != nil || !unlocked {
		// Closing the session is the sure way to let the lock go.
		l.log.Warn("postgres: releasing a lease failed; dropping the connection", "lease", name, "err", err)
		l.dropLocked()
	}
}

// Peers is the number of replicas holding a Leases on this schema, this
// one included once it has connected.
func (l *Leases) Peers(ctx context.Context) (int, error) {
	var n int
	err := l.db.pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND mode = 'ShareLock' AND objsubid = 2
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND classid = $1::int8::oid
		  AND objid = (hashtext(current_schema())::int8 & 4294967295)::oid`, int64(presenceClass)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("postgres: lease peers: %w", err)
	}
	return max(n, 1), nil
}

// Close releases every lease (their Lost channels close) and closes the
// connection.
func (l *Leases) Close() error {
	l.mu.Lock()
	l.closed = true
	if l.conn != nil && len(l.held) > 0 {
		// Unlock before closing: the server releases a closed session's
		// locks only once its backend has exited, a moment later; another
		// replica trying right away would find them still held.
		ctx, cancel := context.WithTimeout(context.Background(), l.check)
		_, _ = l.conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
		cancel()
	}
	l.dropLocked()
	l.mu.Unlock()
	l.wg.Wait()
	return nil
}
