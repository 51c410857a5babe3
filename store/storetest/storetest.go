// Package storetest is the contract suite that every bot.Store backend
// passes: the embedded bbolt store (package store) and the shared
// PostgreSQL store (package store/postgres) run the same Run, so no
// behaviour is tested on one backend only.
//
// A backend's test opens a fresh, empty store for each call of the open
// function and wraps it in a Store: bot.Store plus the few operations the
// suite needs to see inside (counts of stored records, reference counts,
// an invariant check) and to restart it (Reopen).
package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"kontextbot/bot"
)

// DefaultHistory is the number of turns every backend keeps per
// conversation when Options.History is zero.
const DefaultHistory = 20

// MaxMessagesPerTurn is the number of platform message ids every backend
// remembers per turn; past it the oldest id and its mapping are dropped.
const MaxMessagesPerTurn = 10

// Options is how the suite asks for a store.
type Options struct {
	// History is the number of turns kept per conversation; zero means
	// the backend's default, which must be DefaultHistory.
	History int
	// Now is the store's clock (conversation Updated times, claim
	// expiry); nil means time.Now.
	Now func() time.Time
}

// Counts is how many records of each kind a store holds.
type Counts struct {
	Conversations int
	// Images is the number of distinct image contents stored.
	Images int
	// ImageRefs is the number of images with a recorded reference count
	// (equal to Images in a consistent store).
	ImageRefs int
	// Messages is the number of message → turn mappings.
	Messages int
	Jobs     int
	Claims   int
	// Thumbnails is the number of images with a stored thumbnail.
	Thumbnails int
}

// SweepStats is what one retention pass removed.
type SweepStats struct {
	Conversations int
	Images        int
	Jobs          int
	Messages      int
	Claims        int
}

// Store is what the suite drives: a bot.Store plus the operations both
// backends offer beyond it and the views a test needs.
type Store interface {
	bot.Store
	// Ping checks that the store answers.
	Ping(ctx context.Context) error
	// Sweep is the retention pass: it removes conversations whose Updated
	// is before idleBefore (with their message mappings and the images
	// nothing else refers to), finished jobs whose Updated is before
	// idleBefore, and claims expired by the store's clock. Usage is kept.
	Sweep(ctx context.Context, idleBefore time.Time) (SweepStats, error)
	// Counts reports how many records of each kind the store holds.
	Counts(ctx context.Context) (Counts, error)
	// ImageRefs is the stored reference count of image sha (0 when the
	// image is not stored).
	ImageRefs(ctx context.Context, sha string) (int, error)
	// Check verifies the backend's own invariants: every image's reference
	// count equals the number of turns that use it, every message mapping
	// is listed on the turn it points to and the reverse, and whatever
	// the backend can check of its own storage.
	Check(ctx context.Context) error
	// Reopen closes the store and opens the same data again with opts, as
	// a restart does. The returned store replaces this one, which must
	// not be used afterwards; the backend closes it at the test's end.
	Reopen(t *testing.T, opts Options) Store
}

// OpenFunc opens a fresh, empty store and closes it when t ends.
type OpenFunc func(t *testing.T, opts Options) Store

// Run runs every behaviour of bot.Store against the stores open makes,
// each in its own subtest with its own store.
func Run(t *testing.T, open OpenFunc) {
	tests := []struct {
		name string
		run  func(t *testing.T, open OpenFunc)
	}{
		{"ReopenKeepsData", testReopenKeepsData},
		{"CancelledContext", testCancelledContext},
		{"Ping", testPing},
		{"AddTurn", testAddTurn},
		{"DefaultHistory", testDefaultHistory},
		{"AddTurnPrunes", testAddTurnPrunes},
		{"AddReference", testAddReference},
		{"ImageDedup", testImageDedup},
		{"AddTurnAtomicWithJobAndCharge", testAddTurnAtomic},
		{"SetHead", testSetHead},
		{"DeleteTurn", testDeleteTurn},
		{"DeleteTurnShared", testDeleteTurnShared},
		{"Thumbnails", testThumbnails},
		{"ThumbnailsGoWithImages", testThumbnailsGoWithImages},
		{"Messages", testMessages},
		{"Jobs", testJobs},
		{"Usage", testUsage},
		{"Sweep", testSweep},
		{"Settings", testSettings},
		{"Claim", testClaim},
		{"ClaimConcurrent", testClaimConcurrent},
		{"Concurrent", testConcurrent},
		{"ConcurrentOneConversation", testConcurrentOneConversation},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, open) })
	}
}

// --- fixtures ---

var (
	t0   = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	keyA = bot.ConvKey{Platform: "discord", Workspace: "guildA", Channel: "chan1", Thread: "th1"}
	keyB = bot.ConvKey{Platform: "discord", Workspace: "guildB", Channel: "chan1", Thread: "th1"}
)

// Clock is an injectable clock for Options.Now, safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock that reads t until Set.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// Img returns small deterministic bytes, distinct for each n.
func Img(n int) []byte {
	b := make([]byte, 64)
	copy(b, "\x89PNG fake image ")
	binary.BigEndian.PutUint64(b[56:], uint64(n))
	return b
}

// SHA is the lower-case hex sha256 of b, as stores key images.
func SHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Turn is a turn with id and the fields an imagine result carries.
func Turn(id string) bot.Turn {
	return bot.Turn{ID: id, Kind: bot.KindImagine, Prompt: "prompt " + id, Format: "png", Width: 8, Height: 8,
		Created: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func turnID(i int) string { return fmt.Sprintf("t%02d", i) }

// counts reads the store's counts or fails the test.
func counts(t *testing.T, db Store) Counts {
	t.Helper()
	c, err := db.Counts(context.Background())
	if err != nil {
		t.Fatalf("Counts: %v", err)
	}
	return c
}

// refs reads an image's reference count or fails the test.
func refs(t *testing.T, db Store, sha string) int {
	t.Helper()
	n, err := db.ImageRefs(context.Background(), sha)
	if err != nil {
		t.Fatalf("ImageRefs(%s): %v", sha, err)
	}
	return n
}

// check runs the backend's invariant check.
func check(t *testing.T, db Store) {
	t.Helper()
	if err := db.Check(context.Background()); err != nil {
		t.Errorf("invariant check: %v", err)
	}
}

func usageEq(a, b bot.Usage) bool {
	d := a.Spend - b.Spend
	return a.Images == b.Images && d < 1e-9 && d > -1e-9
}
