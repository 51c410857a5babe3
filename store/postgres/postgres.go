// Package postgres is kontextbot's shared backend: the same bot.Store as the
// embedded bbolt store (package store), kept in PostgreSQL so that several
// replicas of the bot can serve one set of conversations, jobs and usage.
//
// # Guarantees
//
// Every method behaves as the bbolt store's does; the contract suite in
// store/storetest runs against both. In short:
//
//   - A conversation is one row whose turns (oldest first, at most History)
//     are a JSON array. Every write to a conversation locks its row
//     (SELECT ... FOR UPDATE) first, so concurrent writers, on any replica,
//     apply one after the other and none is lost.
//   - Image bytes are stored once per sha256 (bytea) with a reference count
//     equal to the number of turns using them; the row goes with the last
//     turn that uses it, and its thumbnail row (if any) with it.
//   - A message row maps platform/workspace/message id to a turn and exists
//     exactly while the turn lists that message id; lookups never cross
//     workspaces.
//   - AddTurn is one transaction: the image, the turn, the job's end and the
//     charge commit together or not at all.
//   - Live jobs are found through a partial index, so LiveJobs never reads
//     finished jobs.
//   - Claims are INSERT ... ON CONFLICT DO UPDATE ... WHERE expired: one
//     statement, so exactly one of any number of concurrent claimants wins.
//
// A transaction that loses a deadlock or a serialization conflict is run
// again (a few times) before the error is returned.
//
// # Migrations
//
// The schema lives in migrations/NNN_name.sql, embedded in the binary.
// Open applies those newer than the database's version, in order, in one
// transaction that first takes a transaction-scoped advisory lock: replicas
// starting together apply each migration once, and the others wait and
// then find nothing to do. A database whose version is newer than this
// binary knows is refused.
//
// The tables live in the first schema of the connection's search_path
// (public unless the URL sets search_path=...).
//
// # The shared queue
//
// Queue (queue.go) is the database side of the fair slot queue shared by
// every replica: kontext.Queue's rules (slots, round-robin between users,
// caps, Serials, positions, cancel) decided under an advisory lock, with
// leases by the database's clock, takeover, handover and LISTEN/NOTIFY
// wake-ups; Queue.Work runs one replica's share. Scheduler (sched.go) is
// the bot.Scheduler over it: with KONTEXT_DATABASE_URL set, every process
// on the database runs the bot's jobs through it, by id.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"kontextbot/bot"
)

var _ bot.Store = (*DB)(nil)

// DefaultHistory is the number of turns kept per conversation when
// Options.History is not set (as in the bbolt store).
const DefaultHistory = 20

// MaxMessagesPerTurn bounds how many platform message ids a turn remembers;
// past it the oldest id and its mapping are dropped (as in the bbolt store).
const MaxMessagesPerTurn = 10

// migrationLock is the advisory lock key that serializes migrations across
// every process using the database ("kontext" in ASCII).
const migrationLock int64 = 0x6b6f6e74657874

// maxAttempts is how many times a transaction runs when it keeps losing
// deadlocks or serialization conflicts.
const maxAttempts = 5

// ErrSchema is returned (wrapped) by Open when the database was migrated by
// a newer kontextbot than this one.
var ErrSchema = errors.New("postgres: unsupported database schema version")

//go:embed migrations/*.sql
var migrationFS embed.FS

// Options configures Open. The zero value gives the defaults.
type Options struct {
	// History is the number of turns kept per conversation (KONTEXT_HISTORY);
	// zero or less means DefaultHistory.
	History int
	// Now is the clock; nil means time.Now. Tests inject their own.
	Now func() time.Time
	// Logger receives what the store cannot return as an error (the queue
	// listener's reconnections); nil discards it.
	Logger *slog.Logger
}

// DB is the PostgreSQL store. It is safe for concurrent use, by any number
// of goroutines and processes.
type DB struct {
	pool    *pgxpool.Pool
	history int
	now     func() time.Time
	log     *slog.Logger
	// queueTurn lets one transaction of this process at a time wait for
	// the shared queue's advisory lock (see Queue.locked): the lock
	// serializes them across replicas anyway, and every one waiting in
	// PostgreSQL would hold one of the pool's few connections, leaving
	// none for the writes a platform waits for (a job stored before its
	// request is acknowledged, within Slack's and Discord's 3 s).
	queueTurn chan struct{}
}

// Open connects to the database at url (postgres://user@host:port/db?...),
// applies the migrations this binary holds and returns the store. It fails
// when the server cannot be reached, the URL is not valid, or the database
// was migrated by a newer kontextbot (an error wrapping ErrSchema).
func Open(ctx context.Context, url string, opts Options) (*DB, error) {
	if opts.History <= 0 {
		opts.History = DefaultHistory
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The error text of a bad URL may hold the password: say less.
		return nil, errors.New("postgres: open: KONTEXT_DATABASE_URL is not a valid PostgreSQL URL; use postgres://user:password@host:5432/database")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open %s: %w", describe(cfg), err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: open %s: %w", describe(cfg), err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	db := &DB{pool: pool, history: opts.History, now: opts.Now, log: opts.Logger, queueTurn: make(chan struct{}, 1)}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: open %s: %w", describe(cfg), err)
	}
	return db, nil
}

// describe names the database of cfg without its password.
func describe(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// Close closes every connection. Methods called after Close fail.
func (db *DB) Close() error {
	db.pool.Close()
	return nil
}

// Ping checks that the database answers, for health checks.
func (db *DB) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	if err := db.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Pool is the store's connection pool, for the packages that share the
// database with it (the shared queue); they must not close it.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// migration is one embedded schema change.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations reads the embedded files, ordered by version. Names are
// NNN_what.sql; versions start at 1 and have no gaps.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("migration file %s: want NNN_name.sql", e.Name())
		}
		b, err := migrationFS.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: want version %d", m.name, i+1)
		}
	}
	return out, nil
}

// SchemaVersion is the version of the newest migration this binary holds.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// migrate applies the migrations the database lacks, in one transaction
// serialized by an advisory lock.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return fmt.Errorf("migrate: lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS kontext_migrations (
			version integer     PRIMARY KEY,
			name    text        NOT NULL,
			applied timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM kontext_migrations`).Scan(&current); err != nil {
			return fmt.Errorf("migrate: read version: %w", err)
		}
		if latest := len(ms); current > latest {
			return fmt.Errorf("%w: the database has schema version %d but this kontextbot knows versions up to %d; run the newer release (or point KONTEXT_DATABASE_URL at another database)", ErrSchema, current, latest)
		}
		for _, m := range ms[current:] {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migrate: apply %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO kontext_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
				return fmt.Errorf("migrate: record %s: %w", m.name, err)
			}
		}
		return nil
	})
}

// inTx runs fn in a transaction, again from the start when it loses a
// deadlock or a serialization conflict. fn must set its results afresh on
// every run.
func (db *DB) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return retryTx(ctx, func() error { return pgx.BeginFunc(ctx, db.pool, fn) })
}

// retryTx runs the transaction run, again when it loses a deadlock or a
// serialization conflict, up to maxAttempts times with a growing pause.
func retryTx(ctx context.Context, run func() error) error {
	for attempt := 1; ; attempt++ {
		err := run()
		if err == nil || attempt >= maxAttempts || !retryable(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * 5 * time.Millisecond):
		}
	}
}

// retryable reports whether err is a deadlock or serialization failure,
// after which the whole transaction can run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// stamp is t as PostgreSQL stores it: UTC, whole microseconds.
func stamp(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }
