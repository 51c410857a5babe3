package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"kontextbot/bot"
	"kontextbot/store/storetest"
)

// prefill writes n conversations of two turns ("a", head "b") that share
// one 1 KB image, like the bbolt benchmarks' prefill, with COPY.
func prefill(b *testing.B, db *DB, n int) {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	data := make([]byte, 1024)
	copy(data, "shared bench image")
	sha := storetest.SHA(data)
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	if _, err := db.pool.Exec(ctx, `INSERT INTO images (sha256, data, refs) VALUES ($1, $2, $3)`, sha, data, 2*n); err != nil {
		b.Fatal(err)
	}
	rows := make([][]any, 0, n)
	for i := range n {
		var turns []bot.Turn
		for _, id := range []string{"a", "b"} {
			t := storetest.Turn(id)
			t.SHA256, t.Bytes = sha, len(data)
			t.Messages = []string{fmt.Sprintf("%d%s", i, id)}
			turns = append(turns, t)
		}
		js, err := json.Marshal(turns)
		if err != nil {
			b.Fatal(err)
		}
		k := storetest.BenchKey(i)
		rows = append(rows, []any{k.Platform, k.Workspace, k.Channel, k.Thread, "b", js, t0})
	}
	_, err := db.pool.CopyFrom(ctx, pgx.Identifier{"conversations"},
		[]string{"platform", "workspace", "channel", "thread", "head", "turns", "updated"}, pgx.CopyFromRows(rows))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := db.pool.Exec(ctx, `ANALYZE conversations`); err != nil {
		b.Fatal(err)
	}
	b.Logf("prefilled %d conversations in %v", n, time.Since(start).Round(time.Millisecond))
}

// BenchmarkConversationRead reads random conversations out of 100,000.
func BenchmarkConversationRead(b *testing.B) {
	db := openTest(b, Options{})
	prefill(b, db, storetest.BenchConvs)
	storetest.BenchHeadRead(b, db, storetest.BenchConvs)
}

// BenchmarkHeadWrite moves the head (SetHead: one transaction that locks
// the row, reads it and writes it, committed durably) of random
// conversations out of 100,000.
func BenchmarkHeadWrite(b *testing.B) {
	db := openTest(b, Options{})
	prefill(b, db, storetest.BenchConvs)
	storetest.BenchHeadWrite(b, db, storetest.BenchConvs)
}
