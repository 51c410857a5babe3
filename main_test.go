package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
)

// TestMain lets a test run the real binary: with KONTEXTBOT_TEST_MAIN=1
// the test binary is kontextbot itself.
func TestMain(m *testing.M) {
	if os.Getenv("KONTEXTBOT_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// envMap is a getenv over a map.
func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name         string
		env          map[string]string
		wantProblems []string // variables named in the error, in order
		check        func(t *testing.T, c config)
	}{
		{name: "Defaults", env: map[string]string{"COMETAPI_API_KEY": "sk-1"}, check: func(t *testing.T, c config) {
			if c.BaseURL != "https://api.cometapi.com" || c.Model != kontext.ModelMax || c.Slots != 24 || c.Pools[kontext.ModelMax] != 6 || c.Route != kontext.RouteModels {
				t.Errorf("defaults: got %+v", c)
			}
			if c.UserRunning != 2 || c.UserWaiting != 5 || c.QueueMax != 200 || c.DB != "data/kontextbot.db" || c.History != 20 {
				t.Errorf("defaults: got %+v", c)
			}
			if c.Prices[kontext.ModelMax] != 0.192 || c.Prices[kontext.ModelPro] != 0.096 { // CometAPI's prices
				t.Errorf("prices: got %v", c.Prices)
			}
			if c.Lease != 10*time.Second {
				t.Errorf("lease: got %v, want 10s", c.Lease)
			}
		}},
		{name: "Lease", env: map[string]string{"COMETAPI_API_KEY": "sk-1", "KONTEXT_LEASE": "3"}, check: func(t *testing.T, c config) {
			if c.Lease != 3*time.Second {
				t.Errorf("lease: got %v, want 3s", c.Lease)
			}
		}},
		{name: "BadLease", env: map[string]string{"COMETAPI_API_KEY": "sk-1", "KONTEXT_LEASE": "0"}, wantProblems: []string{"KONTEXT_LEASE"}},
		{name: "AllSet", env: map[string]string{
			"COMETAPI_API_KEY": "sk-1", "COMETAPI_BASE_URL": "http://127.0.0.1:8787/", "KONTEXT_MODEL": "flux-kontext-pro",
			"KONTEXT_SLOTS": "24", "KONTEXT_ROUTE": "images", "KONTEXT_ADMINS": " u1, ,u2 ", "KONTEXT_PRICE_PRO": "$0.096",
			"KONTEXT_WAIT": "0",
		}, check: func(t *testing.T, c config) {
			if c.BaseURL != "http://127.0.0.1:8787" || c.Model != kontext.ModelPro || c.Slots != 24 || c.Route != kontext.RouteImages {
				t.Errorf("got %+v", c)
			}
			if !slices.Equal(c.Admins, []string{"u1", "u2"}) || c.Prices[kontext.ModelPro] != 0.096 || c.Wait >= 0 {
				t.Errorf("got admins %q prices %v wait %s", c.Admins, c.Prices, c.Wait)
			}
		}},
		{name: "MissingKey", env: map[string]string{}, wantProblems: []string{"COMETAPI_API_KEY"}},
		{name: "EveryProblemAtOnce", env: map[string]string{
			"COMETAPI_BASE_URL": "api.cometapi.com", "KONTEXT_MODEL": "flux-dev", "KONTEXT_SLOTS": "zero",
			"KONTEXT_ROUTE": "rest", "KONTEXT_PRICE_MAX": "cheap", "LOG_LEVEL": "loud",
		}, wantProblems: []string{"COMETAPI_API_KEY", "COMETAPI_BASE_URL", "KONTEXT_MODEL", "KONTEXT_ROUTE", "KONTEXT_SLOTS", "KONTEXT_PRICE_MAX", "LOG_LEVEL"}},
		{name: "SlotsOutOfRange", env: map[string]string{"COMETAPI_API_KEY": "k", "KONTEXT_SLOTS": "0"}, wantProblems: []string{"KONTEXT_SLOTS"}},
		{name: "DiscordPublicKey", env: map[string]string{"COMETAPI_API_KEY": "k", "DISCORD_PUBLIC_KEY": strings.Repeat("ab", 32)},
			check: func(t *testing.T, c config) {
				if c.DiscordPublicKey != strings.Repeat("ab", 32) {
					t.Errorf("DISCORD_PUBLIC_KEY: got %q", c.DiscordPublicKey)
				}
			}},
		{name: "BadDiscordPublicKey", env: map[string]string{"COMETAPI_API_KEY": "k", "DISCORD_PUBLIC_KEY": "the public key"},
			wantProblems: []string{"DISCORD_PUBLIC_KEY"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConfig(envMap(tt.env))
			if len(tt.wantProblems) == 0 {
				if err != nil {
					t.Fatalf("loadConfig: %v", err)
				}
				tt.check(t, c)
				return
			}
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a *configError", err)
			}
			if len(ce.problems) != len(tt.wantProblems) {
				t.Fatalf("got %d problems, want %d:\n%v", len(ce.problems), len(tt.wantProblems), err)
			}
			for i, name := range tt.wantProblems {
				if !strings.HasPrefix(ce.problems[i], name) {
					t.Errorf("problem %d: got %q, want it to name %s", i, ce.problems[i], name)
				}
			}
		})
	}
}

func TestDotenv(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "test.env")
	if err := os.WriteFile(file, []byte("COMETAPI_API_KEY=from-file\nKONTEXT_MODEL=flux-kontext-pro\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env, err := withDotenv(envMap(map[string]string{"KONTEXT_ENV_FILE": file, "COMETAPI_API_KEY": "from-env"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := env("COMETAPI_API_KEY"); got != "from-env" {
		t.Errorf("the environment must win: got %q", got)
	}
	if got := env("KONTEXT_MODEL"); got != "flux-kontext-pro" {
		t.Errorf("the file fills what the environment lacks: got %q", got)
	}
	if _, err := withDotenv(envMap(map[string]string{"KONTEXT_ENV_FILE": filepath.Join(dir, "missing.env")})); err == nil {
		t.Error("a missing file named explicitly must be an error")
	}
}

// fakeEnv starts a fake provider and returns the environment pointing at it.
func fakeEnv(t *testing.T, opts kontexttest.Options) (*kontexttest.Server, map[string]string) {
	t.Helper()
	opts.APIKey = "test"
	firstPoll := "" // a test that sets the latency gets the production schedule
	if opts.Latency == 0 {
		opts.Latency = 30 * time.Millisecond
		firstPoll = "30ms" // the fake's latency is the model's: poll on its schedule
	}
	s := kontexttest.NewServer(opts)
	t.Cleanup(s.Close)
	return s, map[string]string{
		"COMETAPI_BASE_URL": s.URL, "COMETAPI_API_KEY": "test",
		"KONTEXT_ENV_FILE": filepath.Join(t.TempDir(), "none.env"), // never read a developer's .env
		"KONTEXT_DB":       filepath.Join(t.TempDir(), "k.db"),

		"KONTEXT_FIRST_POLL": firstPoll,
	}
}

func writeTestPNG(t *testing.T, path string, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 31)
	}
	img.Set(0, 0, color.White)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRunImagineAndEdit(t *testing.T) {
	_, env := fakeEnv(t, kontexttest.Options{})
	// The env file must exist for an explicit KONTEXT_ENV_FILE.
	if err := os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fox := filepath.Join(dir, "fox.png")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"imagine", "-prompt", "a red fox", "-aspect", "16:9", "-seed", "7", "-o", fox}, envMap(env), &stdout, &stderr)
	if err != nil {
		t.Fatalf("imagine: %v\n%s", err, stderr.String())
	}
	if !regexp.MustCompile(`wrote .*fox\.png: \d+×\d+ png, seed 7, model flux-kontext-max, in `).MatchString(stdout.String()) {
		t.Errorf("imagine printed %q", stdout.String())
	}
	data, err := os.ReadFile(fox)
	if err != nil {
		t.Fatal(err)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil || format != "png" || cfg.Width <= cfg.Height {
		t.Fatalf("fox.png: %v %s %dx%d, want a wide PNG", err, format, cfg.Width, cfg.Height)
	}

	in := filepath.Join(dir, "in.png")
	input := writeTestPNG(t, in, 300, 200)
	out := filepath.Join(dir, "sub", "winter.png")
	stdout.Reset()
	err = run(context.Background(), []string{"edit", "-image", in, "-prompt", "make it winter", "-o", out}, envMap(env), &stdout, &stderr)
	if err != nil {
		t.Fatalf("edit: %v\n%s", err, stderr.String())
	}
	edited, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	prov, err := kontexttest.ReadProvenance(edited)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(input)
	if prov.InputSHA256 != hex.EncodeToString(sum[:]) || prov.Prompt != "make it winter" {
		t.Errorf("edit provenance %+v, want input sha256 %x", prov, sum)
	}
}

func TestRunFailures(t *testing.T) {
	s, env := fakeEnv(t, kontexttest.Options{})
	if err := os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.png")
	os.WriteFile(text, []byte("just some text"), 0o644)
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for kk, vv := range env {
			m[kk] = vv
		}
		m[k] = v
		return m
	}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		inject  *kontexttest.Fault
		want    string
		usage   bool
		creates int
	}{
		{name: "MissingKey", env: with("COMETAPI_API_KEY", ""), args: []string{"imagine", "-prompt", "x"}, want: "COMETAPI_API_KEY is not set"},
		{name: "RejectedKey", env: with("COMETAPI_API_KEY", "sk-wrong"), args: []string{"imagine", "-prompt", "x"}, want: "the API key was rejected", creates: 1},
		{name: "Unsafe", env: env, args: []string{"imagine", "-prompt", "x"}, inject: &kontexttest.Fault{Moderated: true}, want: "the provider refused this prompt as unsafe", creates: 1},
		{name: "OutOfCredits", env: env, args: []string{"imagine", "-prompt", "x"}, inject: &kontexttest.Fault{Status: 402}, want: "out of credits", creates: 1},
		{name: "NoPrompt", env: env, args: []string{"imagine"}, want: "-prompt is required", usage: true},
		{name: "BadAspect", env: env, args: []string{"imagine", "-prompt", "x", "-aspect", "5:1"}, want: `-aspect "5:1"`, usage: true},
		{name: "EditNoImage", env: env, args: []string{"edit", "-prompt", "x"}, want: "-image is required", usage: true},
		{name: "EditNotAnImage", env: env, args: []string{"edit", "-prompt", "x", "-image", text}, want: "not an image"},
		{name: "UnknownCommand", env: env, args: []string{"paint"}, want: `unknown command "paint"`, usage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.Stats().Creates
			if tt.inject != nil {
				s.Inject(kontexttest.Create, *tt.inject)
			}
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append(tt.args, "-o", filepath.Join(dir, tt.name+".png")), envMap(tt.env), &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
			var ue usageError
			if got := errors.As(err, &ue); got != tt.usage {
				t.Errorf("usage error: got %v, want %v", got, tt.usage)
			}
			if got := s.Stats().Creates - before; got != tt.creates {
				t.Errorf("creates: got %d, want %d", got, tt.creates)
			}
			if _, err := os.Stat(filepath.Join(dir, tt.name+".png")); err == nil {
				t.Error("a file was written for a failed command")
			}
		})
	}
}

func TestRunVersion(t *testing.T) {
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"version"}, envMap(nil), &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout.String(), "kontextbot ") {
		t.Errorf("got %q", stdout.String())
	}
}

// TestChatThroughStdin drives `kontextbot chat` as a user would, through
// stdin, and follows the chain of images by their provenance.
func TestChatThroughStdin(t *testing.T) {
	_, env := fakeEnv(t, kontexttest.Options{Pixels: 256 * 256})
	os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600)
	out := t.TempDir()
	script := strings.Join([]string{
		"/imagine a lighthouse at dusk --ar 16:9 --seed 7",
		"add a rainbow",
		"make it snow",
		"paint it like Hokusai",
		"/undo",
		"make it night",
		"/reroll",
		"/history",
		"/usage",
		"/bogus",
		"/quit",
	}, "\n")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	chat := startProc(t, ctx, env, "chat", "-out", out, "-user", "ada")
	if err := chat.run(script); err != nil {
		t.Fatalf("chat: %v", err)
	}
	stdout := &chat.stdout
	files, _ := filepath.Glob(filepath.Join(out, "0*.png")) // the images; /history's sheet is history-….png
	slices.Sort(files)
	if sheets, _ := filepath.Glob(filepath.Join(out, "history-*.png")); len(sheets) != 1 {
		t.Errorf("/history wrote %d sheets, want 1", len(sheets))
	}
	if len(files) != 6 {
		t.Fatalf("got %d images, want 6 (imagine, 3 edits, night, reroll):\n%s", len(files), stdout.String())
	}
	prov := make([]kontexttest.Provenance, len(files))
	digest := make([]string, len(files))
	for i, f := range files {
		data, _ := os.ReadFile(f)
		p, err := kontexttest.ReadProvenance(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		prov[i] = p
		sum := sha256.Sum256(data)
		digest[i] = hex.EncodeToString(sum[:])
	}
	// Imagine, then three edits each of the previous result.
	if prov[0].InputSHA256 != "" || prov[0].Seed != 7 || prov[0].AspectRatio != "16:9" {
		t.Errorf("imagine provenance: %+v", prov[0])
	}
	for i := 1; i <= 3; i++ {
		if prov[i].InputSHA256 != digest[i-1] {
			t.Errorf("edit %d started from %s, want the previous image %s", i, prov[i].InputSHA256, digest[i-1])
		}
	}
	// /undo moved the head back to the snow image: "make it night" edits it.
	if prov[4].Prompt != "make it night" || prov[4].InputSHA256 != digest[2] {
		t.Errorf("after undo: %+v, want an edit of image 3 (%s)", prov[4], digest[2])
	}
	// /reroll: same prompt and parent, another seed.
	if prov[5].Prompt != "make it night" || prov[5].InputSHA256 != digest[2] || prov[5].Seed == prov[4].Seed {
		t.Errorf("reroll: %+v, want the prompt and parent of image 5 with a new seed", prov[5])
	}
	for _, want := range []string{"↶ back to", "→  6 reroll", "You have made 6 images today", "unknown command /bogus"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}
}

// TestChatRestartDeliversTheJob stops `kontextbot chat` in the middle of a
// job, starts it again, and checks what the restart does with it. Without
// Prefer: wait the prediction's id is stored as soon as it exists, and the
// restart follows it: the result arrives exactly once, from one create.
// With Prefer: wait a process killed while its create is held never
// learned the id: the prediction exists and is paid for, and a create is
// never sent twice, so the restart tells the person instead (one create,
// no image, nothing charged).
func TestChatRestartDeliversTheJob(t *testing.T) {
	tests := []struct {
		name        string
		wait        string
		signal      os.Signal
		wantCreates int
		wantImages  int
		wantSaid    string // on the restart's output
	}{
		{name: "KilledWhileCreating", wait: "60", signal: syscall.SIGKILL, wantCreates: 1, wantImages: 0, wantSaid: bot.ErrCreateUnsure.Msg},
		{name: "KilledWhilePolling", wait: "0", signal: syscall.SIGKILL, wantCreates: 1, wantImages: 1},
		{name: "InterruptedWhilePolling", wait: "0", signal: os.Interrupt, wantCreates: 1, wantImages: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, env := fakeEnv(t, kontexttest.Options{Latency: 1500 * time.Millisecond, Pixels: 128 * 128})
			os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600)
			env["KONTEXT_WAIT"] = tt.wait
			out := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			first := startProc(t, ctx, env, "chat", "-out", out)
			io.WriteString(first.stdin, "/imagine a castle in the fog --seed 3\n")
			first.waitFor(30*time.Second, "the job to start", func() bool { return first.stdout.has("generating") })
			// Wait until the provider has the prediction, then stop.
			for deadline := time.Now().Add(5 * time.Second); s.Stats().Active == 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the prediction never started")
				}
			}
			if tt.wait == "0" {
				time.Sleep(100 * time.Millisecond) // let the prediction id reach the store
			}
			first.signal(tt.signal)
			first.wait()
			if files, _ := filepath.Glob(filepath.Join(out, "*.png")); len(files) != 0 {
				t.Fatalf("an image was delivered before the restart: %v", files)
			}

			second := startProc(t, ctx, env, "chat", "-out", out)
			if err := second.run(""); err != nil {
				t.Fatalf("second run: %v", err)
			}
			stdout2 := &second.stdout
			files, _ := filepath.Glob(filepath.Join(out, "*.png"))
			if len(files) != tt.wantImages {
				t.Fatalf("got %d images after the restart, want exactly %d:\n%s", len(files), tt.wantImages, stdout2.String())
			}
			if tt.wantImages == 1 {
				data, _ := os.ReadFile(files[0])
				if p, err := kontexttest.ReadProvenance(data); err != nil || p.Prompt != "a castle in the fog" || p.Seed != 3 {
					t.Errorf("delivered %+v (%v), want the castle with seed 3", p, err)
				}
			}
			if !strings.Contains(stdout2.String(), tt.wantSaid) {
				t.Errorf("the restart did not say %q:\n%s", tt.wantSaid, stdout2.String())
			}
			if !strings.Contains(stdout2.String(), "resuming 1 job") {
				t.Errorf("the restart did not say it resumed the job:\n%s", stdout2.String())
			}
			if got := s.Stats().Creates; got != tt.wantCreates {
				t.Errorf("creates: got %d, want %d", got, tt.wantCreates)
			}
			// A third start finds nothing left to do.
			third := startProc(t, ctx, env, "chat", "-out", out)
			if err := third.run(""); err != nil || third.stdout.has("resuming") {
				t.Errorf("third run: %v\n%s", err, third.stdout.String())
			}
		})
	}
}

// TestEnvExampleListsEveryVariable records every variable the configuration
// reads and checks .env.example documents each, with a comment.
func TestEnvExampleListsEveryVariable(t *testing.T) {
	read := map[string]bool{}
	loadConfig(func(k string) string { read[k] = true; return "" })
	example, err := os.ReadFile(".env.example")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	lines := strings.Split(string(example), "\n")
	for i, line := range lines {
		name, _, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		documented[name] = true
		if i == 0 || !strings.HasPrefix(lines[i-1], "#") {
			t.Errorf(".env.example: %s has no comment above it", name)
		}
	}
	for name := range read {
		if !documented[name] {
			t.Errorf("%s is read but not in .env.example", name)
		}
	}
	for name := range documented {
		if !read[name] {
			t.Errorf(".env.example lists %s, which nothing reads", name)
		}
	}
}
