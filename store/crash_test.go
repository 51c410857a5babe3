package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"kontextbot/bot"
)

// Environment of the crash child: the database path and the round number.
const (
	envCrashDB    = "KONTEXTBOT_STORE_CRASH_DB"
	envCrashRound = "KONTEXTBOT_STORE_CRASH_ROUND"
)

// crashAt is the fixed charge time of the child's writes, so that every
// round adds to the same usage records.
var crashAt = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func crashKey(round, i int) bot.ConvKey {
	return bot.ConvKey{Platform: "discord", Workspace: "crash", Channel: fmt.Sprintf("c%d-%d", round, i/5)}
}

func crashImage(round, i int) []byte { return img(round*1_000_000 + i) }

// TestCrashChild is the writer that TestCrashDurability runs in a child
// process and kills. It does nothing in a normal test run.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(envCrashDB)
	if path == "" {
		t.Skip("only runs as the child of TestCrashDurability")
	}
	round, err := strconv.Atoi(os.Getenv(envCrashRound))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db, err := Open(path, Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ack := func(format string, args ...any) {
		// One write(2) per line, after the method returned.
		if _, err := fmt.Fprintf(os.Stdout, "ACK "+format+"\n", args...); err != nil {
			os.Exit(3)
		}
	}
	deadline := time.Now().Add(30 * time.Second) // in case the parent is gone
	for i := 0; time.Now().Before(deadline); i++ {
		key := crashKey(round, i)
		tid := fmt.Sprintf("t%d-%d", round, i)
		job := &bot.Job{ID: fmt.Sprintf("d%d-%d", round, i), Conv: key, State: bot.JobDelivered, Result: tid,
			Created: crashAt, Updated: crashAt}
		charge := &bot.Charge{Platform: "discord", Workspace: "crash", User: "u", USD: 0.5, At: crashAt}
		if _, err := db.AddTurn(ctx, key, turn(tid), crashImage(round, i), job, charge); err != nil {
			t.Fatal(err)
		}
		ack("turn %d %d", round, i)
		if err := db.AddMessage(ctx, key, tid, fmt.Sprintf("m%d-%d", round, i)); err != nil {
			t.Fatal(err)
		}
		ack("msg %d %d", round, i)
		if err := db.PutJob(ctx, &bot.Job{ID: fmt.Sprintf("w%d-%d", round, i), Conv: key, State: bot.JobWaiting,
			Created: crashAt, Updated: crashAt}); err != nil {
			t.Fatal(err)
		}
		ack("job %d %d", round, i)
	}
	t.Fatal("child was not killed in time")
}

type crashAck struct {
	what     string
	round, i int
}

// TestCrashDurability kills a writing child process with SIGKILL in the
// middle of its stream of writes, three times, and checks after each kill
// that the file opens cleanly and holds every write the child acknowledged.
func TestCrashDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes; skipped with -short")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	var acked []crashAck
	const rounds = 3
	for round := range rounds {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), envCrashDB+"="+path, envCrashRound+"="+strconv.Itoa(round))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAt := 200 + rand.IntN(200)
		n, killed := 0, false
		r := bufio.NewReader(out)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				break // EOF; a line cut short (no newline) is not an acknowledgement
			}
			var a crashAck
			if _, err := fmt.Sscanf(line, "ACK %s %d %d\n", &a.what, &a.round, &a.i); err != nil {
				continue // the test framework's own output
			}
			acked = append(acked, a)
			if n++; n == killAt {
				if err := cmd.Process.Kill(); err != nil { // SIGKILL
					t.Fatal(err)
				}
				killed = true
			}
		}
		werr := cmd.Wait()
		cancel()
		if !killed {
			t.Fatalf("round %d: child ended after %d acknowledgements before the kill: %v\n%s", round, n, werr, stderr.String())
		}
		var ee *exec.ExitError
		if !errors.As(werr, &ee) || !strings.Contains(ee.String(), "killed") {
			t.Fatalf("round %d: child ended with %v, want killed\n%s", round, werr, stderr.String())
		}
		t.Logf("round %d: killed after %d acknowledged writes (%d read in all)", round, killAt, n)
		verifyCrash(t, path, round, acked)
	}
}

// verifyCrash reopens the file after the kill of round and checks every
// acknowledged write of every round so far.
func verifyCrash(t *testing.T, path string, round int, acked []crashAck) {
	t.Helper()
	ctx := context.Background()
	db, err := Open(path, Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("round %d: reopen after kill: %v", round, err)
	}
	defer db.Close()
	if err := db.check(); err != nil {
		t.Fatalf("round %d: consistency check after kill: %v", round, err)
	}
	live, err := db.LiveJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	liveIDs := map[string]bool{}
	for _, j := range live {
		liveIDs[j.ID] = true
	}
	turns := 0
	for _, a := range acked {
		key := crashKey(a.round, a.i)
		tid := fmt.Sprintf("t%d-%d", a.round, a.i)
		switch a.what {
		case "turn":
			turns++
			c, err := db.Conversation(ctx, key)
			if err != nil {
				t.Fatalf("round %d: acknowledged turn %s: %v", round, tid, err)
			}
			tt := c.Turn(tid)
			if tt == nil {
				t.Fatalf("round %d: acknowledged turn %s missing from %v", round, tid, key)
			}
			data, err := db.Image(ctx, tt.SHA256)
			if err != nil || !bytes.Equal(data, crashImage(a.round, a.i)) {
				t.Fatalf("round %d: image of acknowledged turn %s: got %x, %v", round, tid, data, err)
			}
			j, err := db.Job(ctx, fmt.Sprintf("d%d-%d", a.round, a.i))
			if err != nil || j.State != bot.JobDelivered || j.Result != tid {
				t.Fatalf("round %d: job saved with turn %s: got %+v, %v", round, tid, j, err)
			}
		case "msg":
			k, id, err := db.Message(ctx, key, fmt.Sprintf("m%d-%d", a.round, a.i))
			if err != nil || k != key || id != tid {
				t.Fatalf("round %d: acknowledged message of %s: got %v %q, %v", round, tid, k, id, err)
			}
		case "job":
			id := fmt.Sprintf("w%d-%d", a.round, a.i)
			if !liveIDs[id] {
				t.Fatalf("round %d: acknowledged waiting job %s not among the live jobs", round, id)
			}
		default:
			t.Fatalf("unknown acknowledgement %+v", a)
		}
	}
	// Each round may have committed one more AddTurn than it acknowledged.
	day, month, err := db.Usage(ctx, "discord", "crash", "u", crashAt)
	if err != nil {
		t.Fatal(err)
	}
	if day.Images < turns || day.Images > turns+round+1 || day != month || day.Spend != float64(day.Images)*0.5 {
		t.Fatalf("round %d: usage after %d acknowledged turns: got day %+v month %+v", round, turns, day, month)
	}
}
