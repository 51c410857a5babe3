package main

import (
	"context"
	"log/slog"
	"net/url"
	"time"

	"kontextbot/bot"
	"kontextbot/store"
	"kontextbot/store/postgres"
)

var _ appStore = (*postgres.DB)(nil)
var _ appStore = (*store.DB)(nil)

// appStore is what the app needs of a store beyond bot.Store: a health
// check and closing. Both the bbolt store and the PostgreSQL store are one.
type appStore interface {
	bot.Store
	Ping(ctx context.Context) error
	Close() error
}

// sweepStats is what one retention pass removed, whichever the store.
type sweepStats struct {
	Conversations, Images, Jobs, Messages, Claims int
}

// sweepFunc is a store's retention pass.
type sweepFunc func(ctx context.Context, idleBefore time.Time) (sweepStats, error)

// openTimeout bounds connecting to PostgreSQL and applying its migrations.
const openTimeout = 30 * time.Second

// openStore opens the store cfg names: PostgreSQL when KONTEXT_DATABASE_URL
// is set, else the bbolt file KONTEXT_DB.
func openStore(cfg config, log *slog.Logger) (appStore, sweepFunc, error) {
	if cfg.DatabaseURL == "" {
		db, err := store.Open(cfg.DB, store.Options{History: cfg.History})
		if err != nil {
			return nil, nil, err
		}
		log.Debug("store", "backend", "bbolt", "file", cfg.DB)
		return db, func(ctx context.Context, before time.Time) (sweepStats, error) {
			st, err := db.Sweep(ctx, before)
			return sweepStats{st.Conversations, st.Images, st.Jobs, st.Messages, st.Claims}, err
		}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	db, err := postgres.Open(ctx, cfg.DatabaseURL, postgres.Options{History: cfg.History, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	where := "(KONTEXT_DATABASE_URL)"
	if u, err := url.Parse(cfg.DatabaseURL); err == nil {
		u.RawQuery = "" // may hold a password too
		where = u.Redacted()
	}
	log.Info("store", "backend", "postgres", "database", where)
	return db, func(ctx context.Context, before time.Time) (sweepStats, error) {
		st, err := db.Sweep(ctx, before)
		return sweepStats{st.Conversations, st.Images, st.Jobs, st.Messages, st.Claims}, err
	}, nil
}
