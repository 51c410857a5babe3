package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"kontextbot/kontext/kontexttest"
	"kontextbot/store"
	"kontextbot/store/postgres"
	"kontextbot/store/postgres/pgtest"
)

func TestConfigDatabaseURL(t *testing.T) {
	tests := []struct {
		name        string
		value       string
		want        string
		wantProblem bool
	}{
		{"unset means bbolt", "", "", false},
		{"postgres URL", "postgres://bot:pw@db:5432/kontext?sslmode=require", "postgres://bot:pw@db:5432/kontext?sslmode=require", false},
		{"postgresql URL", "postgresql://bot@db/kontext", "postgresql://bot@db/kontext", false},
		{"unix socket", "postgres:///kontext?host=/run/postgresql", "postgres:///kontext?host=/run/postgresql", false},
		{"spaces trimmed", "  postgres://bot@db/kontext ", "postgres://bot@db/kontext", false},
		{"another scheme", "mysql://bot:s3cret@db/kontext", "", true},
		{"no host", "postgres:///kontext?password=s3cret", "", true},
		{"not a URL", "host=db password=s3cret", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadConfig(envMap(map[string]string{"COMETAPI_API_KEY": "k", "KONTEXT_DATABASE_URL": tc.value}))
			if !tc.wantProblem {
				if err != nil {
					t.Fatalf("loadConfig: %v", err)
				}
				if c.DatabaseURL != tc.want {
					t.Errorf("DatabaseURL: got %q, want %q", c.DatabaseURL, tc.want)
				}
				return
			}
			var ce *configError
			if !errors.As(err, &ce) || len(ce.problems) != 1 || !strings.HasPrefix(ce.problems[0], "KONTEXT_DATABASE_URL") {
				t.Fatalf("got %v, want one problem naming KONTEXT_DATABASE_URL", err)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the problem %q repeats the password", err)
			}
		})
	}
}

// TestOpenStoreChoosesTheBackend checks that an empty KONTEXT_DATABASE_URL
// opens the bbolt file and a set one opens PostgreSQL (and no file).
func TestOpenStoreChoosesTheBackend(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Run("bbolt", func(t *testing.T) {
		cfg := config{DB: filepath.Join(t.TempDir(), "k.db"), History: 20}
		db, sweep, err := openStore(cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, ok := db.(*store.DB); !ok {
			t.Errorf("store: got %T, want *store.DB", db)
		}
		if _, err := sweep(context.Background(), time.Now()); err != nil {
			t.Errorf("sweep: %v", err)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		cfg := config{DB: filepath.Join(t.TempDir(), "k.db"), DatabaseURL: pgtest.Schema(t), History: 20}
		db, sweep, err := openStore(cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, ok := db.(*postgres.DB); !ok {
			t.Errorf("store: got %T, want *postgres.DB", db)
		}
		if err := db.Ping(context.Background()); err != nil {
			t.Errorf("ping: %v", err)
		}
		if _, err := sweep(context.Background(), time.Now()); err != nil {
			t.Errorf("sweep: %v", err)
		}
		if _, err := os.Stat(cfg.DB); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("bbolt file %s: got %v, want none", cfg.DB, err)
		}
		// With the queue shared in the database, several processes on one
		// database are one bot: a second one opens.
		second, _, err := openStore(cfg, log)
		if err != nil {
			t.Fatalf("second openStore on one database: %v", err)
		}
		second.Close()
	})
	t.Run("postgres unreachable", func(t *testing.T) {
		cfg := config{DatabaseURL: "postgres://bot:s3cret@127.0.0.1:1/kontext?connect_timeout=2", History: 20}
		db, _, err := openStore(cfg, log)
		if err == nil {
			db.Close()
			t.Fatal("openStore: got nil error")
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error %q shows the password", err)
		}
	})
}

// TestChatOnPostgres runs `kontextbot chat` twice on one PostgreSQL
// database: the conversation and the usage of the first run are there in
// the second, and no bbolt file is written.
func TestChatOnPostgres(t *testing.T) {
	dbURL := pgtest.Schema(t)
	_, env := fakeEnv(t, kontexttest.Options{Pixels: 128 * 128})
	os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600)
	env["KONTEXT_DATABASE_URL"] = dbURL
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	chat := func(lines ...string) string {
		t.Helper()
		p := startProc(t, ctx, env, "chat", "-out", out, "-user", "ada")
		if err := p.run(strings.Join(lines, "\n") + "\n"); err != nil {
			t.Fatalf("chat: %v", err)
		}
		return p.stdout.String()
	}
	chat("/imagine a lighthouse --seed 7", "add a rainbow", "/quit")
	second := chat("/undo", "/usage", "/quit")
	for _, want := range []string{"↶ back to", "You have made 2 images today"} {
		if !strings.Contains(second, want) {
			t.Errorf("second run lacks %q:\n%s", want, second)
		}
	}
	if _, err := os.Stat(env["KONTEXT_DB"]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bbolt file %s: got %v, want none", env["KONTEXT_DB"], err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var convs, images int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM images)`).Scan(&convs, &images); err != nil {
		t.Fatal(err)
	}
	if convs != 1 || images != 2 {
		t.Errorf("in PostgreSQL: %d conversations, %d images; want 1 and 2", convs, images)
	}
}
