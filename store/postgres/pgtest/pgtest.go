// Package pgtest gives tests a PostgreSQL schema of their own on the test
// server: KONTEXT_TEST_DATABASE_URL, by default the project machines'
// postgres://postgres@127.0.0.1:5432/test. Without a server the test is
// skipped with a sentence saying how to run it, unless
// KONTEXT_REQUIRE_POSTGRES=1 (set by .ci/run), which makes it fail.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultURL is the server the project's machines run.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// BaseURL is the server the tests use: KONTEXT_TEST_DATABASE_URL, or the
// default.
func BaseURL() string {
	if u := os.Getenv("KONTEXT_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// redact hides the password of a URL for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return "(the URL in KONTEXT_TEST_DATABASE_URL)"
	}
	return u.Redacted()
}

// Schema creates a schema of its own for the test on the test server,
// drops it when the test ends, and returns a URL whose connections use it.
// Without a server it skips the test with a sentence on how to run it, or
// fails it when KONTEXT_REQUIRE_POSTGRES=1 (as CI sets).
func Schema(tb testing.TB) string {
	tb.Helper()
	base := BaseURL()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		msg := fmt.Sprintf("no PostgreSQL server answers at %s (%v): start PostgreSQL and set KONTEXT_TEST_DATABASE_URL=postgres://user@host:5432/database?sslmode=disable to run the PostgreSQL tests", redact(base), err)
		if os.Getenv("KONTEXT_REQUIRE_POSTGRES") == "1" {
			tb.Fatal(msg + " (KONTEXT_REQUIRE_POSTGRES=1: they may not be skipped)")
		}
		tb.Skip(msg)
	}
	defer conn.Close(context.Background())
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "kontext_test_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatalf("create schema %s: %v", schema, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return withSearchPath(tb, base, schema)
}

// withSearchPath adds search_path=schema to a URL or keyword/value string.
func withSearchPath(tb testing.TB, base, schema string) string {
	if !strings.HasPrefix(base, "postgres://") && !strings.HasPrefix(base, "postgresql://") {
		return base + " search_path=" + schema
	}
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatalf("KONTEXT_TEST_DATABASE_URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
