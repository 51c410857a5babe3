package store

import (
	"fmt"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"

	"kontextbot/bot"
	"kontextbot/store/storetest"
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

// The contract suite's helpers, under the names these tests use.
var (
	img      = storetest.Img
	shaOf    = storetest.SHA
	turn     = storetest.Turn
	newClock = storetest.NewClock
)

type fakeClock = storetest.Clock

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
