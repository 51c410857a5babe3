package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/store/postgres/pgtest"
	"kontextbot/store/storetest"
)

// TestContract runs the contract suite that every bot.Store passes against
// PostgreSQL, each case in a schema of its own.
func TestContract(t *testing.T) {
	if DefaultHistory != storetest.DefaultHistory || MaxMessagesPerTurn != storetest.MaxMessagesPerTurn {
		t.Fatalf("defaults (history %d, messages per turn %d) differ from the contract's (%d, %d)",
			DefaultHistory, MaxMessagesPerTurn, storetest.DefaultHistory, storetest.MaxMessagesPerTurn)
	}
	storetest.Run(t, func(t *testing.T, opts storetest.Options) storetest.Store {
		return openContract(t, pgtest.Schema(t), opts)
	})
}

// migrationRows reads the migrations table of the schema at u.
func migrationRows(t *testing.T, db *DB) []int {
	t.Helper()
	rows, err := db.pool.Query(context.Background(), `SELECT version FROM kontext_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return vs
}

func wantVersions() []int {
	var vs []int
	for v := 1; v <= SchemaVersion(); v++ {
		vs = append(vs, v)
	}
	return vs
}

// TestMigrateConcurrentOpens starts several stores on a fresh schema at
// once, as replicas starting together do: all succeed and each migration
// is applied once.
func TestMigrateConcurrentOpens(t *testing.T) {
	u := pgtest.Schema(t)
	const n = 4
	dbs := make([]*DB, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			dbs[i], errs[i] = Open(context.Background(), u, Options{})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
			continue
		}
		defer dbs[i].Close()
	}
	if t.Failed() {
		return
	}
	if got, want := migrationRows(t, dbs[0]), wantVersions(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("applied migrations: got %v, want %v (each once)", got, want)
	}
	// Every store works on the one schema.
	ctx := context.Background()
	key := bot.ConvKey{Platform: "slack", Workspace: "T1", Channel: "C1"}
	for i, db := range dbs {
		if _, err := db.AddTurn(ctx, key, storetest.Turn(fmt.Sprintf("t%d", i)), storetest.Img(i), nil, nil); err != nil {
			t.Errorf("AddTurn through store %d: %v", i, err)
		}
	}
	c, err := dbs[0].Conversation(ctx, key)
	if err != nil || len(c.Turns) != n {
		t.Errorf("conversation written by %d stores: got %v, %v; want %d turns", n, c, err, n)
	}
}

// TestMigrateIdempotent reopens a migrated schema: nothing is applied
// again and the data stays.
func TestMigrateIdempotent(t *testing.T) {
	ctx := context.Background()
	u := pgtest.Schema(t)
	db, err := Open(ctx, u, Options{})
	if err != nil {
		t.Fatal(err)
	}
	key := bot.ConvKey{Platform: "slack", Workspace: "T1", Channel: "C1"}
	if _, err := db.AddTurn(ctx, key, storetest.Turn("t1"), storetest.Img(1), nil, nil); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for i := range 2 {
		db, err := Open(ctx, u, Options{})
		if err != nil {
			t.Fatalf("reopen %d: %v", i, err)
		}
		if got, want := migrationRows(t, db), wantVersions(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("reopen %d: applied migrations: got %v, want %v", i, got, want)
		}
		if _, err := db.Conversation(ctx, key); err != nil {
			t.Errorf("reopen %d: conversation: %v", i, err)
		}
		db.Close()
	}
}

// TestMigrateRefusesNewerSchema opens a schema that a newer kontextbot
// migrated: Open refuses it with a sentence and changes nothing.
func TestMigrateRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	u := pgtest.Schema(t)
	db, err := Open(ctx, u, Options{})
	if err != nil {
		t.Fatal(err)
	}
	newer := SchemaVersion() + 1
	if _, err := db.pool.Exec(ctx, `INSERT INTO kontext_migrations (version, name) VALUES ($1, 'from the future')`, newer); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = Open(ctx, u, Options{})
	if err == nil {
		db.Close()
		t.Fatal("Open of a newer schema: got nil error, want ErrSchema")
	}
	if !errors.Is(err, ErrSchema) {
		t.Errorf("Open: got %v, want an error wrapping ErrSchema", err)
	}
	for _, want := range []string{fmt.Sprintf("schema version %d", newer), "newer release"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error text %q: want it to contain %q", err, want)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		want    string
		notWant string
	}{
		{"not a URL", "postgres://user:s3cret@[::1", "not a valid PostgreSQL URL", "s3cret"},
		{"no server", "postgres://user:s3cret@127.0.0.1:1/db?sslmode=disable&connect_timeout=2", "postgres: open user@127.0.0.1:1/db", "s3cret"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			db, err := Open(ctx, tc.url, Options{})
			if err == nil {
				db.Close()
				t.Fatal("Open: got nil error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q: want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), tc.notWant) {
				t.Errorf("error %q: shows the password", err)
			}
		})
	}
}

// TestQueriesUseIndexes checks that LiveJobs and the sweep find their rows
// through their indexes, so neither reads the whole table (LiveJobs never
// reads a finished job).
func TestQueriesUseIndexes(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, Options{})
	for i := range 200 {
		st := bot.JobDelivered
		if i%50 == 0 {
			st = bot.JobWaiting
		}
		if err := db.PutJob(ctx, &bot.Job{ID: fmt.Sprintf("j%03d", i), State: st, Created: time.Unix(int64(i), 0), Updated: time.Unix(int64(i), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.pool.Exec(ctx, `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// Without sequential scans the planner must find an index whose
	// predicate the query implies; with them a tiny table may be scanned.
	if _, err := conn.Exec(ctx, `SET enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, `RESET enable_seqscan`)
	tests := []struct {
		name, sql, index string
		args             []any
	}{
		{"LiveJobs", liveJobsSQL, "jobs_live", nil},
		{"sweep conversations", sweepConvsSQL, "conversations_updated", []any{time.Now(), 10}},
		{"sweep jobs", sweepJobsSQL, "jobs_finished", []any{time.Now(), 10}},
		{"sweep claims", sweepClaimsSQL, "claims_expires", []any{time.Now(), 10}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := conn.Query(ctx, "EXPLAIN "+tc.sql, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			var plan strings.Builder
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan.WriteString(line + "\n")
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(plan.String(), tc.index) {
				t.Errorf("plan does not use %s:\n%s", tc.index, plan.String())
			}
		})
	}
	live, err := db.LiveJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(live), 4; got != want {
		t.Errorf("live jobs: got %d, want %d", got, want)
	}
}

// TestTextRoundTrip stores text PostgreSQL treats specially (NUL, quotes,
// non-ASCII) in turns and jobs: it comes back as it went in.
func TestTextRoundTrip(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, Options{})
	prompt := "a \x00 cat's \"hat\" \\u0000 — 猫 🐱"
	key := bot.ConvKey{Platform: "slack", Workspace: "T1", Channel: "C1"}
	tt := storetest.Turn("t1")
	tt.Prompt = prompt
	if _, err := db.AddTurn(ctx, key, tt, storetest.Img(1), nil, nil); err != nil {
		t.Fatal(err)
	}
	c, err := db.Conversation(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Turn("t1").Prompt; got != prompt {
		t.Errorf("turn prompt: got %q, want %q", got, prompt)
	}
	if err := db.PutJob(ctx, &bot.Job{ID: "j1", Prompt: prompt, State: bot.JobWaiting}); err != nil {
		t.Fatal(err)
	}
	j, err := db.Job(ctx, "j1")
	if err != nil {
		t.Fatal(err)
	}
	if j.Prompt != prompt {
		t.Errorf("job prompt: got %q, want %q", j.Prompt, prompt)
	}
}
