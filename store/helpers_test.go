package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"kontextbot/bot"
)

// openTest opens a store in a fresh temporary folder (one level deeper than
// the test's own, so Open has to create it) and closes it at cleanup.
func openTest(tb testing.TB, opts Options) *DB {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "data", "kontext.db")
	db, err := Open(path, opts)
	if err != nil {
		tb.Fatalf("Open(%s): %v", path, err)
	}
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return db
}

// countKeys is the number of keys in one bucket.
func (db *DB) countKeys(tb testing.TB, bucket []byte) int {
	tb.Helper()
	n := 0
	err := db.bolt.View(func(tx *bbolt.Tx) error {
		n = tx.Bucket(bucket).Stats().KeyN
		return nil
	})
	if err != nil {
		tb.Fatalf("count %s: %v", bucket, err)
	}
	return n
}

// check runs bbolt's consistency check over the whole file.
func (db *DB) check() error {
	return db.bolt.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
}

// img returns small deterministic bytes, distinct for each n.
func img(n int) []byte {
	b := make([]byte, 64)
	copy(b, "\x89PNG fake image ")
	binary.BigEndian.PutUint64(b[56:], uint64(n))
	return b
}

func shaOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func turn(id string) bot.Turn {
	return bot.Turn{ID: id, Kind: bot.KindImagine, Prompt: "prompt " + id, Format: "png", Width: 8, Height: 8,
		Created: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

// fakeClock is an injectable clock for Options.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{now: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// Two conversations in different workspaces.
var (
	keyA = bot.ConvKey{Platform: "discord", Workspace: "guildA", Channel: "chan1", Thread: "th1"}
	keyB = bot.ConvKey{Platform: "discord", Workspace: "guildB", Channel: "chan1", Thread: "th1"}
)

// turnID names the i-th test turn.
func turnID(i int) string { return fmt.Sprintf("t%02d", i) }

// refs is the stored reference count of an image.
func (db *DB) refs(tb testing.TB, sha string) uint64 {
	tb.Helper()
	var n uint64
	if err := db.bolt.View(func(tx *bbolt.Tx) error {
		n = refCount(tx.Bucket(bucketRefs).Get([]byte(sha)))
		return nil
	}); err != nil {
		tb.Fatalf("refs %s: %v", sha, err)
	}
	return n
}
