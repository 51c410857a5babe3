package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/console"
	"kontextbot/store"
	"kontextbot/store/postgres"
)

// Compile-time checks that the implementations satisfy the core's needs.
var (
	_ bot.Generator = (*kontext.Client)(nil)
	_ bot.Scheduler = (*bot.LocalScheduler)(nil)
	_ bot.Scheduler = (*postgres.Scheduler)(nil)
	_ bot.Store     = (*store.DB)(nil)
)

// app is the core with everything under it: store, client and queue. It
// is what serve and chat share.
type app struct {
	cfg    config
	log    *slog.Logger
	db     appStore
	sweep  sweepFunc
	client *kontext.Client
	queue  bot.Scheduler
	core   *bot.Core
	met    *metrics

	stopSweep context.CancelFunc
	sweeping  sync.WaitGroup
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// openApp opens the store and builds the client, the queue and the core.
// Call close when done, once.
func openApp(cfg config, log *slog.Logger) (*app, error) {
	db, sweep, err := openStore(cfg, log)
	if err != nil {
		return nil, explainOpen(cfg.DB, err)
	}
	met := newMetrics()
	met.budget.Set(cfg.Budget)
	cc := cfg.clientConfig()
	cc.Logger = log
	cc.Observe = met.attempt
	images := kontext.NewBudget(int64(cfg.ImageMemory)) // shared: the core's checks and the client's re-encoding
	cc.Budget = images
	client, err := kontext.NewClient(cc)
	if err != nil {
		db.Close()
		return nil, err
	}
	var queue bot.Scheduler
	if pg, ok := db.(*postgres.DB); ok {
		// One queue in the database for every replica.
		queue = pg.Scheduler(replicaName(), postgres.QueueOptions{
			Slots: cfg.Slots, Pools: cfg.Pools, UserRunning: cfg.UserRunning, UserWaiting: cfg.UserWaiting, MaxWaiting: cfg.QueueMax, Lease: cfg.Lease,
		})
	} else {
		local := kontext.NewQueue(kontext.QueueOptions{
			Slots: cfg.Slots, Pools: cfg.Pools, UserRunning: cfg.UserRunning, UserWaiting: cfg.UserWaiting, MaxWaiting: cfg.QueueMax, Logger: log,
		})
		met.watchQueue(local)
		queue = bot.NewLocalScheduler(local)
	}
	core := bot.New(bot.Config{
		Model: cfg.Model, Prices: cfg.Prices, UserDaily: cfg.UserDaily, WorkspaceBudget: cfg.Budget,
		Channels: cfg.Channels, Admins: cfg.Admins, Logger: log, OnJobEnd: met.jobEnd,
		PostRetry: cfg.PostRetry, ImageBudget: images,
	}, db, client, queue)
	a := &app{cfg: cfg, log: log, db: db, sweep: sweep, client: client, queue: queue, core: core, met: met}
	ctx, cancel := context.WithCancel(context.Background())
	a.stopSweep = cancel
	a.sweeping.Add(1)
	go a.sweepLoop(ctx)
	return a, nil
}

// explainOpen turns a store that cannot be opened for lack of permission
// into a sentence that says whose permission and how to fix it.
func explainOpen(path string, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return err
	}
	dir, _ := filepath.Abs(filepath.Dir(path))
	return fmt.Errorf("cannot write the database %s: the folder %s is not writable by this process (uid %d). "+
		"Make it writable by that user (in Docker the image runs as uid 65532: `chown -R 65532:65532` the host folder "+
		"mounted on /data, or use a named volume such as -v kontextbot-data:/data), or set KONTEXT_DB to a writable path (%w)",
		path, dir, os.Getuid(), err)
}

// replicaName names this process in the shared queue: host, pid and a
// random part, so a restarted process never inherits a dead one's leases.
func replicaName() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%x", host, os.Getpid(), b)
}

// firstSweepDelay is how long after start the first retention sweep
// begins: startup and the first answers come first. The sweep works in
// small transactions, so writes never wait for more than one of them.
const firstSweepDelay = 10 * time.Second

// sweepLoop removes idle conversations, finished jobs and expired claims
// shortly after start and then daily.
func (a *app) sweepLoop(ctx context.Context) {
	defer a.sweeping.Done()
	select {
	case <-ctx.Done():
		return
	case <-time.After(firstSweepDelay):
	}
	t := time.NewTicker(24 * time.Hour)
	defer t.Stop()
	for {
		before := time.Now().Add(-time.Duration(a.cfg.RetentionDays) * 24 * time.Hour)
		st, err := a.sweep(ctx, before)
		if err != nil && ctx.Err() == nil {
			a.log.Error("retention sweep", "err", err)
		} else if st != (sweepStats{}) {
			a.log.Info("retention sweep", "conversations", st.Conversations, "images", st.Images, "jobs", st.Jobs, "messages", st.Messages, "claims", st.Claims)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// drain stops the core taking requests and lets running jobs finish until
// ctx ends; waiting ones stay on disk for the next start.
func (a *app) drain(ctx context.Context) error {
	err := a.core.Close(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		a.log.Warn("shutdown: running jobs did not finish in time; they resume at the next start")
		err = nil
	}
	a.client.Close()
	return err
}

// close drains the core, then closes the store.
func (a *app) close(ctx context.Context) error {
	return errors.Join(a.drain(ctx), a.closeStore())
}

// closeStore stops the retention sweep and closes the store; the core must
// be drained first.
func (a *app) closeStore() error {
	a.stopSweep()
	a.sweeping.Wait()
	return a.db.Close()
}

// runChat holds one conversation in the terminal. With -fake it runs the
// fake provider in the same process, with a database of its own, so it
// needs no API key and never mixes fake jobs with real ones.
func runChat(ctx context.Context, args []string, env envFunc, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("chat", stderr)
	out := fs.String("out", "out", "folder the images (and the log, chat.log) are written to")
	conv := fs.String("conv", "default", "conversation to continue (\"default\" unless you name another)")
	user := fs.String("user", "", "your name in usage figures (default: $USER)")
	fake := fs.Bool("fake", false, "use a fake provider in this process: no API key needed, nothing is charged")
	fakeLatency := fs.Duration("fake-latency", 2*time.Second, "with -fake: time each image takes")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *fake {
		srv := kontexttest.NewServer(kontexttest.Options{Latency: *fakeLatency, Jitter: *fakeLatency / 2,
			Slots: 24, ModelSlots: map[string]int{kontext.ModelMax: 6}}) // BFL's limits, KONTEXT_SLOTS' defaults
		defer srv.Close() // after the app below has closed
		env = withFakeProvider(env, srv.URL)
	}
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	if err := cfg.restrictModels(); err != nil {
		return err
	}
	if *user == "" {
		*user = env("USER")
	}
	if *user == "" {
		*user = "me"
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("chat: %w", err)
	}
	// Log lines would interleave with the conversation: they go to a file.
	logPath := filepath.Join(*out, "chat.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("chat: log file: %w", err)
	}
	defer logFile.Close()
	log := newLogger(cfg, logFile)
	a, err := openApp(cfg, log)
	if err != nil {
		return err
	}
	chat, err := console.New(a.core, stdout, *out, *user, *conv)
	if err != nil {
		return errors.Join(err, a.close(context.Background()))
	}
	a.core.Register(chat)
	a.met.watchPlatform(console.Platform, nil)
	ids, err := a.core.Recover(ctx)
	if err != nil {
		return errors.Join(err, a.close(context.Background()))
	}
	if *fake {
		fmt.Fprintf(stdout, "using the fake provider (no API key, nothing charged; database %s)\n", cfg.DB)
	}
	fmt.Fprintf(stdout, "log: %s\n", logPath)
	if len(ids) > 0 {
		chat.Expect(ids...)
		fmt.Fprintf(stdout, "resuming %d job(s) from before the restart\n", len(ids))
	}
	runErr := chat.Run(ctx, stdin)
	interrupted := ctx.Err() != nil || errors.Is(runErr, console.ErrInterrupted)
	if errors.Is(runErr, context.Canceled) || errors.Is(runErr, console.ErrInterrupted) {
		runErr = nil // interrupted: unfinished jobs stay on disk for the next start
	}
	timeout := 10 * time.Minute
	if interrupted {
		timeout = 2 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return errors.Join(runErr, a.close(sctx))
}

// withFakeProvider is env with the provider replaced by the fake at url: its key,
// and a database of its own next to KONTEXT_DB, so that jobs made with
// the fake are never resumed against the real provider, nor real ones
// against the fake.
func withFakeProvider(env envFunc, url string) envFunc {
	db := env("KONTEXT_DB")
	if db == "" {
		db = "data/kontextbot.db"
	}
	ext := filepath.Ext(db)
	db = strings.TrimSuffix(db, ext) + "-fake" + ext
	return func(k string) string {
		switch k {
		case "COMETAPI_BASE_URL":
			return url
		case "COMETAPI_API_KEY":
			return kontexttest.DefaultAPIKey
		case "KONTEXT_DB":
			return db
		}
		return env(k)
	}
}
