package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"kontextbot/kontext/kontexttest"
	"kontextbot/store/postgres/pgtest"
)

// TestReplicasChatKilledMidBurst runs 3 replicas of the real binary
// (`kontextbot chat`, one conversation each) on one database and one fake
// provider with 2 slots, sends each a burst of pictures, and SIGKILLs one
// while it runs a job. Every accepted job (every job in the database) is
// delivered exactly once (an image file in the folder of the chat it was
// asked in, whichever replica ran it: none twice, even when the replica
// that wrote it died before recording that it had) and
// charged once; the provider never sees more than its 2 active
// predictions and answers no 429; a prediction the dead replica had
// created is followed by id, not created again.
func TestReplicasChatKilledMidBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 3 processes")
	}
	dbURL := pgtest.Schema(t)
	fake, env := fakeEnv(t, kontexttest.Options{Slots: 2, Latency: 400 * time.Millisecond, Pixels: 64 * 64})
	os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600)
	env["KONTEXT_DATABASE_URL"] = dbURL
	env["KONTEXT_SLOTS"] = "2"
	env["KONTEXT_LEASE"] = "1"
	env["KONTEXT_USER_WAITING"] = "10"
	env["KONTEXT_WAIT"] = "0" // the prediction id is stored as soon as it exists
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	const perReplica = 6
	var procs []*proc
	var outs []string
	for i := range 3 {
		out := t.TempDir()
		procs = append(procs, startProc(t, ctx, env, "chat", "-out", out, "-user", fmt.Sprintf("u%d", i), "-conv", fmt.Sprintf("c%d", i)))
		outs = append(outs, out)
	}
	count := func(q string, args ...any) int {
		t.Helper()
		var n int
		if err := conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	// The tables exist once every replica has started.
	waitFor("the schema", func() bool {
		return count(`SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'queue_jobs'`) == 1
	})
	for k := range perReplica {
		for i, p := range procs {
			fmt.Fprintf(p.stdin, "/imagine replica %d picture %d --seed %d\n", i, k, k+1)
		}
	}
	const total = 3 * perReplica
	waitFor("every job accepted", func() bool { return count(`SELECT count(*) FROM jobs`) == total })

	// Kill replica 0 while it runs a job, at least a few jobs in.
	victim := procs[0].pid()
	owner := fmt.Sprintf("%%/%d/%%", victim)
	waitFor("replica 0 running a job mid-burst", func() bool {
		return count(`SELECT count(*) FROM jobs WHERE state = 'delivered'`) >= 3 &&
			count(`SELECT count(*) FROM queue_jobs WHERE state = 'running' AND owner LIKE $1`, owner) > 0
	})
	procs[0].signal(syscall.SIGKILL)
	procs[0].wait()
	// Jobs the dead replica held without a recorded prediction may have
	// been created just before it died: each may be created once more.
	unknown := count(`SELECT count(*) FROM queue_jobs q JOIN jobs j ON j.id = q.id
		WHERE q.state = 'running' AND q.owner LIKE $1 AND j.state = 'waiting'`, owner)
	held := count(`SELECT count(*) FROM queue_jobs WHERE state = 'running' AND owner LIKE $1`, owner)
	t.Logf("killed replica 0 holding %d running job(s), %d without a recorded prediction", held, unknown)

	waitFor("every job delivered", func() bool {
		return count(`SELECT count(*) FROM jobs WHERE state IN ('waiting', 'submitted', 'posting')`) == 0
	})
	for _, p := range procs[1:] {
		p.signal(os.Interrupt)
		p.wait()
	}
	// A job whose create the dead replica sent without recording the
	// prediction is not created again (it may be paid for already): it
	// fails, its person is told, and nothing is charged.
	rows, err := conn.Query(ctx, `SELECT data->>'prompt' FROM jobs WHERE state = 'failed'
		AND data->>'create_sent' IS NOT NULL AND coalesce(data->>'prediction_id', '') = ''`)
	if err != nil {
		t.Fatal(err)
	}
	unsurePrompts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	unsure := len(unsurePrompts)
	if unsure > unknown {
		t.Errorf("%d jobs failed as unsure, but the dead replica held only %d without a recorded prediction", unsure, unknown)
	}
	if n := count(`SELECT count(*) FROM jobs WHERE state <> 'delivered'`); n != unsure {
		t.Errorf("%d jobs ended without being delivered, %d of them unsure; want only unsure ones", n, unsure)
	}
	// Each accepted job's image, exactly once, across the replicas'
	// folders, and in the folder of the chat that asked for it.
	seen := map[string]int{}
	for i, out := range outs {
		files, _ := filepath.Glob(filepath.Join(out, "*.png"))
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			prov, err := kontexttest.ReadProvenance(data)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			seen[prov.Prompt]++
			if !strings.HasPrefix(prov.Prompt, fmt.Sprintf("replica %d ", i)) {
				t.Errorf("%q was delivered to replica %d's folder", prov.Prompt, i)
			}
		}
	}
	for i := range 3 {
		for k := range perReplica {
			prompt := fmt.Sprintf("replica %d picture %d", i, k)
			want := 1
			if slices.Contains(unsurePrompts, prompt) {
				want = 0
			}
			if seen[prompt] != want {
				t.Errorf("%q delivered %d times, want %d", prompt, seen[prompt], want)
			}
		}
	}
	if n := count(`SELECT coalesce(sum(images), 0)::int FROM usage_month`); n != total-unsure {
		t.Errorf("images charged: got %d, want %d (one per delivery)", n, total-unsure)
	}
	st := fake.Stats()
	if st.MaxActive > 2 || st.SlotLimit429 != 0 {
		t.Errorf("provider: max active %d, %d 429s; want at most 2 and none", st.MaxActive, st.SlotLimit429)
	}
	if st.Creates < total-unsure || st.Creates > total {
		t.Errorf("creates: got %d, want %d to %d (the unsure jobs' creates sent once, if at all)", st.Creates, total-unsure, total)
	}
	for prompt, n := range st.CreatedByPrompt {
		if n > 1 {
			t.Errorf("%q was created %d times: paid for more than once", prompt, n)
		}
	}
	if !strings.Contains(fmt.Sprint(seen), "replica 0") {
		t.Error("no image of the killed replica's conversation was delivered")
	}
}
