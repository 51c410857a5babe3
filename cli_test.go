package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"kontextbot/kontext/kontexttest"
)

// TestHelp: the top-level help lists every command with one line, and
// every command answers -h with its usage, exit status 0.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}, {"help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), args, envMap(nil), &stdout, &stderr); err != nil {
				t.Fatalf("got %v, want nil", err)
			}
			for _, c := range commands {
				if !regexp.MustCompile(`(?m)^  ` + c.name + ` +\S.*$`).MatchString(stdout.String()) {
					t.Errorf("the help has no line for %s:\n%s", c.name, stdout.String())
				}
			}
			if strings.Contains(stdout.String(), "Usage of") {
				t.Errorf("the help is a flag set's:\n%s", stdout.String())
			}
		})
	}
	for _, c := range commands {
		for _, args := range [][]string{{c.name, "-h"}, {c.name, "--help"}, {"help", c.name}} {
			if c.name == "help" {
				continue
			}
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				var stdout, stderr bytes.Buffer
				if err := run(context.Background(), args, envMap(nil), &stdout, &stderr); err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				if got, want := stderr.String(), "Usage: kontextbot "+c.name; !strings.HasPrefix(got, want) {
					t.Errorf("got %q, want it to start with %q", got, want)
				}
				if !strings.Contains(stderr.String(), upperFirst(c.summary)) {
					t.Errorf("the usage does not say what %s does:\n%s", c.name, stderr.String())
				}
			})
		}
	}
}

// TestHelpWithBrokenEnvFile: help needs no configuration.
func TestHelpWithBrokenEnvFile(t *testing.T) {
	env := envMap(map[string]string{"KONTEXT_ENV_FILE": filepath.Join(t.TempDir(), "missing.env")})
	var stderr bytes.Buffer
	if err := run(context.Background(), []string{"serve", "-h"}, env, io.Discard, &stderr); err != nil {
		t.Errorf("serve -h with a missing env file: %v", err)
	}
	if err := run(context.Background(), []string{"--version"}, env, io.Discard, &stderr); err != nil {
		t.Errorf("--version with a missing env file: %v", err)
	}
}

func TestVersion(t *testing.T) {
	tests := []struct {
		name              string
		stamped, revision string
		want              []string
	}{
		{name: "Unstamped", want: []string{"kontextbot devel (", readBuildInfo().GoVersion}},
		{name: "Stamped", stamped: "v1.4.0", revision: "0123456789abcdef0123", want: []string{"kontextbot v1.4.0 (commit 0123456789ab, "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			version, revision = tt.stamped, tt.revision
			t.Cleanup(func() { version, revision = "", "" })
			for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
				var stdout bytes.Buffer
				if err := run(context.Background(), args, envMap(nil), &stdout, io.Discard); err != nil {
					t.Fatalf("%v: %v", args, err)
				}
				for _, w := range tt.want {
					if !strings.Contains(stdout.String(), w) {
						t.Errorf("%v: got %q, want %q in it", args, stdout.String(), w)
					}
				}
				if strings.Contains(stdout.String(), "(devel)") {
					t.Errorf("%v: got %q", args, stdout.String())
				}
			}
		})
	}
}

// TestServeReportsEveryProblem: an empty configuration names the missing
// key and the missing platform at once.
func TestServeReportsEveryProblem(t *testing.T) {
	env := map[string]string{"KONTEXT_ENV_FILE": filepath.Join(t.TempDir(), "empty.env")}
	os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600)
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{name: "Empty", env: env, want: []string{"2 problems", "COMETAPI_API_KEY is not set", "no chat platform is configured"}},
		{name: "KeyOnly", env: with(env, "COMETAPI_API_KEY", "sk-1"), want: []string{"no chat platform is configured"}},
		{name: "HalfSlack", env: with(env, "SLACK_APP_TOKEN", "xapp-1"), want: []string{"2 problems", "COMETAPI_API_KEY is not set", "SLACK_BOT_TOKEN is not set"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), nil, envMap(tt.env), io.Discard, io.Discard)
			if err == nil {
				t.Fatal("serve started")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %v\nwant it to say %q", err, w)
				}
			}
		})
	}
}

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for kk, vv := range m {
		if kk != k {
			out[kk] = vv
		}
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFakeAPIAsTheReadmeSays follows "Try it without an API key" after
// `cp .env.example .env`, with and without a real key filled in: the fake
// accepts the README's key, and never prints the one in .env.
func TestFakeAPIAsTheReadmeSays(t *testing.T) {
	example, err := os.ReadFile(".env.example")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		fill     string // what the user wrote in .env
		flags    []string
		key      string // the key imagine sends
		wantFail string
	}{
		{name: "EnvAsCopied", key: "test"},
		{name: "EnvWithRealKey", fill: "COMETAPI_API_KEY=sk-real-secret-key\n", key: "test"},
		{name: "AnyKey", fill: "COMETAPI_API_KEY=sk-real-secret-key\n", key: "whatever"},
		{name: "KeyFlagRequired", flags: []string{"-key", "sk-chosen-secret"}, key: "test", wantFail: "the API key was rejected"},
		{name: "KeyFlagGiven", flags: []string{"-key", "sk-chosen-secret"}, key: "sk-chosen-secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			envFile := filepath.Join(dir, ".env")
			os.WriteFile(envFile, append(bytes.Clone(example), tt.fill...), 0o600)
			env := map[string]string{"KONTEXT_ENV_FILE": envFile}
			ctx, cancel := context.WithCancel(context.Background())
			var out syncBuffer
			done := make(chan error, 1)
			go func() {
				done <- run(ctx, append([]string{"fakeapi", "-addr", "127.0.0.1:0", "-latency", "20ms", "-jitter", "0"}, tt.flags...), envMap(env), &out, io.Discard)
			}()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("fakeapi: %v", err)
				}
				for _, secret := range []string{"sk-real-secret-key", "sk-chosen-secret"} {
					if strings.Contains(out.String(), secret) {
						t.Errorf("fakeapi printed a key:\n%s", out.String())
					}
				}
			}()
			addr := regexp.MustCompile(`listening on (http://\S+)`)
			deadline := time.Now().Add(10 * time.Second)
			for addr.FindStringSubmatch(out.String()) == nil {
				if time.Now().After(deadline) {
					t.Fatalf("fakeapi never said where it listens:\n%s", out.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			base := addr.FindStringSubmatch(out.String())[1]
			// The README: export COMETAPI_BASE_URL=... COMETAPI_API_KEY=test
			env["COMETAPI_BASE_URL"], env["COMETAPI_API_KEY"] = base, tt.key
			fox := filepath.Join(dir, "fox.png")
			err := run(context.Background(), []string{"imagine", "-prompt", "a red fox", "-o", fox}, envMap(env), io.Discard, io.Discard)
			if tt.wantFail != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantFail) {
					t.Errorf("imagine: got %v, want %q", err, tt.wantFail)
				}
				return
			}
			if err != nil {
				t.Fatalf("imagine: %v", err)
			}
			if _, err := os.Stat(fox); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestAcceptAnyKeyStillNeedsAKey: a request without a key is refused, as
// CometAPI refuses it.
func TestAcceptAnyKeyStillNeedsAKey(t *testing.T) {
	fake := kontexttest.NewServer(kontexttest.Options{})
	defer fake.Close()
	h := acceptAnyKey(fake.Fake, kontexttest.DefaultAPIKey)
	for _, auth := range []string{"", "Bearer ", "Basic dGVzdA==", "test"} {
		t.Run(auth, func(t *testing.T) {
			rec := httptestRecorder(h, auth)
			if rec != 401 {
				t.Errorf("Authorization %q: got %d, want 401", auth, rec)
			}
		})
	}
	if got := httptestRecorder(h, "Bearer anything"); got == 401 {
		t.Errorf("Bearer anything: got 401")
	}
}

// TestChatFake: `kontextbot chat -fake` needs no key and no second
// terminal, even with a real key in .env, and keeps its own database.
func TestChatFake(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, ".env")
	os.WriteFile(envFile, []byte("COMETAPI_API_KEY=sk-real-secret-key\nCOMETAPI_BASE_URL=https://api.cometapi.com\n"), 0o600)
	db := filepath.Join(dir, "data", "kontextbot.db")
	env := map[string]string{"KONTEXT_ENV_FILE": envFile, "KONTEXT_DB": db}
	out := filepath.Join(dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	chat := startProc(t, ctx, env, "chat", "-fake", "-fake-latency", "50ms", "-out", out)
	if err := chat.run("/imagine a red fox --seed 5\nmake it winter\n/quit\n"); err != nil {
		t.Fatalf("chat -fake: %v", err)
	}
	stdout, stderr := &chat.stdout, &chat.stderr
	files, _ := filepath.Glob(filepath.Join(out, "*.png"))
	if len(files) != 2 {
		t.Fatalf("got %d images, want 2:\n%s", len(files), stdout.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "kontextbot-fake.db")); err != nil {
		t.Errorf("the fake's database: %v", err)
	}
	if _, err := os.Stat(db); err == nil {
		t.Error("chat -fake wrote to the real database")
	}
	if strings.Contains(stdout.String()+stderr.String(), "sk-real-secret-key") {
		t.Error("the key was printed")
	}
	if stderr.String() != "" {
		t.Errorf("log lines reached the terminal:\n%s", stderr.String())
	}
	if log, err := os.ReadFile(filepath.Join(out, "chat.log")); err != nil || !strings.Contains(string(log), "job") {
		t.Errorf("chat.log: %v\n%s", err, log)
	}
}

// TestChatCtrlCExitsZero runs `kontextbot chat -fake` in a pseudo-terminal
// and presses Ctrl-C at the prompt.
func TestChatCtrlCExitsZero(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"KONTEXT_ENV_FILE": filepath.Join(dir, "none.env"), "KONTEXT_DB": filepath.Join(dir, "k.db")}
	os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := binary(ctx, env, "chat", "-fake", "-fake-latency", "50ms", "-out", filepath.Join(dir, "out"))
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 160})
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	var screen syncBuffer
	go io.Copy(&screen, bufio.NewReader(ptmx))
	waitScreen := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(screen.String(), want); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the screen never showed %q:\n%s", want, screen.String())
			}
		}
	}
	waitScreen("/help for commands")
	io.WriteString(ptmx, "/imagine a fox\r")
	waitScreen("✓ ")
	io.WriteString(ptmx, "\x1b[A\x1b[A\x03")
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); err != nil || code != 0 {
		t.Errorf("exit: %v (code %d), want 0\n%s", err, code, screen.String())
	}
	if got := strings.Count(screen.String(), "✓ "); got != 1 {
		t.Errorf("got %d images, want 1 (the arrows and Ctrl-C make none)", got)
	}
}

// httptestRecorder sends a create request with the Authorization header
// auth through h and returns the status.
func httptestRecorder(h http.Handler, auth string) int {
	req := httptest.NewRequest(http.MethodPost, "/replicate/v1/models/black-forest-labs/flux-kontext-max/predictions",
		strings.NewReader(`{"input":{"prompt":"a fox"}}`))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code
}
