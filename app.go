package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext"
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
		return nil, err
	}
	met := newMetrics()
	cc := cfg.clientConfig()
	cc.Logger = log
	cc.Observe = met.attempt
	client, err := kontext.NewClient(cc)
	if err != nil {
		db.Close()
		return nil, err
	}
	var queue bot.Scheduler
	if pg, ok := db.(*postgres.DB); ok {
		// One queue in the database for every replica.
		queue = pg.Scheduler(replicaName(), postgres.QueueOptions{
			Slots: cfg.Slots, UserRunning: cfg.UserRunning, UserWaiting: cfg.UserWaiting, MaxWaiting: cfg.QueueMax, Lease: cfg.Lease,
		})
	} else {
		local := kontext.NewQueue(kontext.QueueOptions{
			Slots: cfg.Slots, UserRunning: cfg.UserRunning, UserWaiting: cfg.UserWaiting, MaxWaiting: cfg.QueueMax, Logger: log,
		})
		met.watchQueue(local)
		queue = bot.NewLocalScheduler(local)
	}
	core := bot.New(bot.Config{
		Model: cfg.Model, Prices: cfg.Prices, UserDaily: cfg.UserDaily, WorkspaceBudget: cfg.Budget,
		Channels: cfg.Channels, Admins: cfg.Admins, Logger: log, OnJobEnd: met.jobEnd,
	}, db, client, queue)
	a := &app{cfg: cfg, log: log, db: db, sweep: sweep, client: client, queue: queue, core: core, met: met}
	ctx, cancel := context.WithCancel(context.Background())
	a.stopSweep = cancel
	a.sweeping.Add(1)
	go a.sweepLoop(ctx)
	return a, nil
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

// sweepLoop removes idle conversations at start and then daily.
func (a *app) sweepLoop(ctx context.Context) {
	defer a.sweeping.Done()
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

// runChat holds one conversation in the terminal.
func runChat(ctx context.Context, args []string, env envFunc, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("chat", stderr)
	out := fs.String("out", "out", "folder the images are written to")
	conv := fs.String("conv", "default", "conversation to continue (\"default\" unless you name another)")
	user := fs.String("user", "", "your name in usage figures (default: $USER)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	if *user == "" {
		*user = env("USER")
	}
	if *user == "" {
		*user = "me"
	}
	log := newLogger(cfg, stderr)
	a, err := openApp(cfg, log)
	if err != nil {
		return err
	}
	chat, err := console.New(a.core, stdout, *out, *user, *conv)
	if err != nil {
		return errors.Join(err, a.close(context.Background()))
	}
	a.core.Register(chat)
	ids, err := a.core.Recover(ctx)
	if err != nil {
		return errors.Join(err, a.close(context.Background()))
	}
	if len(ids) > 0 {
		chat.Expect(ids...)
		fmt.Fprintf(stdout, "resuming %d job(s) from before the restart\n", len(ids))
	}
	runErr := chat.Run(ctx, stdin)
	if errors.Is(runErr, context.Canceled) {
		runErr = nil // interrupted: unfinished jobs stay on disk for the next start
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout(ctx))
	defer cancel()
	return errors.Join(runErr, a.close(sctx))
}

// shutdownTimeout is how long running jobs may finish: long on a normal
// end, short once the user interrupted.
func shutdownTimeout(ctx context.Context) time.Duration {
	if ctx.Err() != nil {
		return 2 * time.Second
	}
	return 10 * time.Minute
}
