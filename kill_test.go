package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"kontextbot/kontext/kontexttest"
)

// killCase is one kill point of TestKillAnywhereDeliversOnce.
type killCase struct {
	name    string
	prompts []string
	env     map[string]string
	latency time.Duration
	inject  func(s *kontexttest.Server)
	// killWhen says the kill point is reached; what is its description.
	killWhen func(s *kontexttest.Server, out *lines) bool
	what     string
	// breakPosting replaces the output folder by a file once the job
	// runs, so posting the stored result fails.
	breakPosting bool
}

// TestKillAnywhereDeliversOnce kills `kontextbot chat` (SIGKILL: no
// cleanup at all) at each point of a job's life, with create-then-poll
// (KONTEXT_WAIT=0), starts it again, and checks that every accepted job
// is delivered exactly once, from exactly one prediction, and that nothing
// was cancelled (every prediction made was delivered).
func TestKillAnywhereDeliversOnce(t *testing.T) {
	tests := []killCase{
		{
			name:    "WaitingInTheQueue",
			prompts: []string{"a castle in the fog --seed 3", "a boat at dawn --seed 4"},
			env:     map[string]string{"KONTEXT_SLOTS": "1"},
			latency: 1500 * time.Millisecond,
			killWhen: func(s *kontexttest.Server, out *lines) bool {
				// A poll of the first job's prediction means its id is
				// stored (the id is stored before any poll).
				st := s.Stats()
				return out.has("queued · 1st in line") && st.Active == 1 && st.Polls >= 1
			},
			what: "the second job waiting behind the first, whose prediction runs with its id stored",
		},
		{
			name:    "RightAfterTheCreateAnswered",
			prompts: []string{"a castle in the fog --seed 3"},
			latency: 1500 * time.Millisecond,
			inject:  func(s *kontexttest.Server) { s.Inject(kontexttest.Poll, kontexttest.Fault{Hang: true}) },
			// The first poll comes after the create's answer was stored
			// (OnCreated runs before any poll); it is held, so the process
			// dies before it learns anything more.
			killWhen: func(s *kontexttest.Server, _ *lines) bool { return s.Stats().Polls >= 1 },
			what:     "the first poll in flight",
		},
		{
			name:    "WhileThePredictionProcesses",
			prompts: []string{"a castle in the fog --seed 3"},
			latency: 4 * time.Second,
			killWhen: func(s *kontexttest.Server, _ *lines) bool {
				st := s.Stats()
				return st.Polls >= 2 && st.Active == 1
			},
			what: "a poll answered while the prediction is still active",
		},
		{
			name:         "AfterTheResultWasStoredBeforePosting",
			prompts:      []string{"a castle in the fog --seed 3"},
			latency:      300 * time.Millisecond,
			breakPosting: true,
			killWhen:     func(_ *kontexttest.Server, out *lines) bool { return out.has("could not post it") },
			what:         "the result stored and its post failed",
		},
	}
	def, err := loadConfig(envMap(map[string]string{"COMETAPI_API_KEY": "k"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		for _, wait := range []string{"0", ""} {
			name := tt.name + "/Wait0"
			if wait == "" {
				name = tt.name + "/DefaultConfiguration"
			}
			t.Run(name, func(t *testing.T) {
				if wait == "" && def.Wait > 0 {
					t.Skipf("the default here is Prefer: wait=%s, which holds the create until the image is done, so a kill makes a second prediction (issue 10); this runs once the default is create-then-poll", def.Wait)
				}
				killAndRestart(t, tt, wait)
			})
		}
	}
}

// killAndRestart runs one row of TestKillAnywhereDeliversOnce, with
// KONTEXT_WAIT=wait ("" leaves it unset).
func killAndRestart(t *testing.T, tt killCase, wait string) {
	s, env := fakeEnv(t, kontexttest.Options{Latency: tt.latency, Pixels: 128 * 128})
	os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600)
	// Create-then-poll: explicitly, and as the default where it is
	// the default. With Prefer: wait=60 (the default before issue
	// 10) the queue row makes 3 predictions for 2 jobs and the poll
	// rows never poll.
	if wait != "" {
		env["KONTEXT_WAIT"] = wait
	}
	// Poll soon, so the poll rows reach their kill point while the
	// prediction runs (the provider branch's KONTEXT_FIRST_POLL;
	// ignored where unknown, where the first poll is at 500ms).
	env["KONTEXT_FIRST_POLL"] = "200ms"
	for k, v := range tt.env {
		env[k] = v
	}
	if tt.inject != nil {
		tt.inject(s)
	}
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	first := startProc(t, ctx, env, "chat", "-out", out)
	got := &first.stdout
	for _, p := range tt.prompts {
		io.WriteString(first.stdin, "/imagine "+p+"\n")
	}
	if tt.breakPosting {
		first.waitFor(10*time.Second, "the job to start", func() bool { return got.has("generating") })
		if err := os.RemoveAll(out); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(20 * time.Second); !tt.killWhen(s, got); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("kill point not reached (%s); fake %+v; output:\n%s", tt.what, s.Stats(), got.String())
		}
	}
	first.signal(syscall.SIGKILL)
	first.wait()
	if got.has("✓") {
		t.Fatalf("an image was delivered before the kill:\n%s", got.String())
	}
	if tt.breakPosting {
		os.Remove(out)
	}

	second := startProc(t, ctx, env, "chat", "-out", out)
	if err := second.run(""); err != nil {
		t.Fatalf("second run: %v\n%s", err, second.stdout.String())
	}
	files, _ := filepath.Glob(filepath.Join(out, "*.png"))
	if len(files) != len(tt.prompts) {
		t.Fatalf("got %d images after the restart, want %d:\n%s", len(files), len(tt.prompts), second.stdout.String())
	}
	var delivered []string
	for _, f := range files {
		data, _ := os.ReadFile(f)
		p, err := kontexttest.ReadProvenance(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		delivered = append(delivered, p.Prompt)
	}
	var want []string
	for _, p := range tt.prompts {
		want = append(want, strings.SplitN(p, " --", 2)[0])
	}
	slices.Sort(delivered)
	slices.Sort(want)
	if !slices.Equal(delivered, want) {
		t.Errorf("delivered %q, want each of %q once", delivered, want)
	}
	if !second.stdout.has("resuming") {
		t.Errorf("the restart did not say it resumed:\n%s", second.stdout.String())
	}
	st := s.Stats()
	if st.Creates != len(tt.prompts) || st.Runs != len(tt.prompts) {
		t.Errorf("creates %d, predictions run %d; want %d of each (one prediction per job)", st.Creates, st.Runs, len(tt.prompts))
	}
	if st.Cancels != 0 || st.Canceled != 0 {
		t.Errorf("cancels %d (canceled %d), want none: every prediction was delivered", st.Cancels, st.Canceled)
	}
	third := startProc(t, ctx, env, "chat", "-out", out)
	if err := third.run(""); err != nil || third.stdout.has("resuming") {
		t.Errorf("third run: %v\n%s", err, third.stdout.String())
	}
	if files, _ := filepath.Glob(filepath.Join(out, "*.png")); len(files) != len(tt.prompts) {
		t.Errorf("after a third start: %d images, want %d", len(files), len(tt.prompts))
	}
}
