// Package store is kontextbot's persistence: one bbolt file that owns the
// conversations and their images, the platform messages the images were
// posted in, the jobs, and the usage counters. It implements bot.Store.
//
// # Layout
//
// The file holds these top-level buckets; every value is JSON except the
// image bytes and the reference counts.
//
//	meta           "schema" -> decimal schema version (currently 2)
//	conversations  ConvKey.String() -> bot.Conversation (turns oldest first)
//	conv_updated   time(Updated) + ConvKey.String() -> empty: conversations by last use
//	images         sha256 hex -> the raw image bytes
//	image_refs     sha256 hex -> 8-byte big-endian count of turns that use it
//	thumbnails     sha256 hex -> the image's encoded history thumbnail (absent: none made yet)
//	messages       platform/workspace/msgID -> {"key": ConvKey, "turn": id}
//	jobs           job id -> bot.Job
//	jobs_live      job id -> empty: the jobs whose State is live
//	jobs_done      time(Updated) + job id -> empty: the other jobs, by last change
//	usage_day      platform/workspace/user/2006-01-02 (UTC) -> bot.Usage
//	usage_month    platform/workspace/2006-01 (UTC) -> bot.Usage
//	claims         claim key -> 8-byte big-endian Unix nanoseconds it expires at
//	settings       platform/workspace -> bot.WorkspaceSettings (absent: none)
//
// time(t) is 12 bytes that sort as t does: the Unix seconds as a
// big-endian int64 with its sign bit flipped, then the nanoseconds as a
// big-endian uint32. The three index buckets let the retention sweep read
// only what is idle and LiveJobs only what is live, whatever the number of
// conversations and finished jobs kept.
//
// Invariants, kept inside the one transaction of every write:
//
//   - image_refs[h] is the number of turns, across all conversations, whose
//     SHA256 is h; images[h] exists exactly while that count is above zero,
//     so identical bytes are stored once and dropped when the last turn that
//     uses them goes. thumbnails[h] exists only while images[h] does, and
//     goes with it.
//   - messages[p/w/m] exists exactly while m is listed in the Messages of the
//     turn it points to. A turn lists at most MaxMessagesPerTurn message ids
//     (the oldest mapping is dropped past that), and pruning or sweeping a
//     turn drops its mappings. Because the key starts with the platform and
//     workspace, a lookup from one workspace can never find another's message.
//   - conv_updated holds exactly one entry per conversation, at its Updated;
//     jobs_live holds exactly the live jobs, jobs_done every other job at
//     its Updated.
//
// Schema 1 files (without the three indexes) are migrated on Open, once, in
// one transaction that builds the indexes from the conversations and jobs.
//
// Every write is one bbolt read-write transaction committed with fsync, so
// it is durable when the method returns; the retention sweep is the one
// exception: it works in many small transactions, each of which keeps
// every invariant, so that no write waits behind it for long. Only one
// process may hold the file.
package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"kontextbot/bot"
)

// SchemaVersion is the version of the file layout this code reads and
// writes. Open migrates a version 1 file (adding the indexes) and refuses
// any other version.
const SchemaVersion = 2

// MaxMessagesPerTurn bounds how many platform message ids a turn remembers;
// past it the oldest id and its mapping are dropped.
const MaxMessagesPerTurn = 10

// DefaultHistory is the number of turns kept per conversation when
// Options.History is not set.
const DefaultHistory = 20

// DefaultTimeout is how long Open waits for the file lock when
// Options.Timeout is not set.
const DefaultTimeout = time.Second

// ErrLocked is returned (wrapped) by Open when another process holds the file.
var ErrLocked = errors.New("store: database locked")

// ErrSchema is returned (wrapped) by Open when the file's schema version is
// not the one this code uses.
var ErrSchema = errors.New("store: unsupported database schema version")

var _ bot.Store = (*DB)(nil)

// Bucket names; see the package comment for what each holds.
var (
	bucketMeta       = []byte("meta")
	bucketConvs      = []byte("conversations")
	bucketImages     = []byte("images")
	bucketRefs       = []byte("image_refs")
	bucketMessages   = []byte("messages")
	bucketJobs       = []byte("jobs")
	bucketUsageDay   = []byte("usage_day")
	bucketUsageMonth = []byte("usage_month")
	bucketClaims     = []byte("claims")
	bucketConvIdx    = []byte("conv_updated")
	bucketJobsLive   = []byte("jobs_live")
	bucketJobsDone   = []byte("jobs_done")
	bucketSettings   = []byte("settings")
	bucketThumbs     = []byte("thumbnails")

	allBuckets = [][]byte{bucketMeta, bucketConvs, bucketImages, bucketRefs,
		bucketMessages, bucketJobs, bucketUsageDay, bucketUsageMonth, bucketClaims,
		bucketConvIdx, bucketJobsLive, bucketJobsDone, bucketSettings, bucketThumbs}

	keySchema = []byte("schema")
)

// Options configures Open. The zero value gives the defaults.
type Options struct {
	// History is the number of turns kept per conversation (KONTEXT_HISTORY);
	// the oldest drop out. Zero or less means DefaultHistory.
	History int
	// Timeout is how long Open waits for the file lock. Zero or less means
	// DefaultTimeout.
	Timeout time.Duration
	// Now is the clock; nil means time.Now. Tests inject their own.
	Now func() time.Time
}

// DB is the bbolt-backed store. It is safe for concurrent use; bbolt allows
// any number of readers alongside one writer.
type DB struct {
	bolt    *bbolt.DB
	path    string
	history int
	now     func() time.Time

	// sweepHeld, when set (by benchmarks), is told how long each sweep
	// transaction held the write lock: its work, and in all, commit
	// included.
	sweepHeld func(work, held time.Duration)
}

// SweepStats is what one Sweep removed.
type SweepStats struct {
	// Conversations is the number of idle conversations removed.
	Conversations int
	// Images is the number of images deleted because nothing referred to
	// them any more.
	Images int
	// Jobs is the number of finished jobs removed.
	Jobs int
	// Messages is the number of message mappings removed.
	Messages int
	// Claims is the number of expired claims removed.
	Claims int
}

// Open opens the store at path, creating the parent folder (0o750) and the
// file (0o600) if needed, and every bucket. It fails with an error wrapping
// ErrLocked when another process holds the file for longer than
// opts.Timeout, and with one wrapping ErrSchema when the file was written
// with another schema version.
func Open(path string, opts Options) (*DB, error) {
	if opts.History <= 0 {
		opts.History = DefaultHistory
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("store: open %s: %w", path, err)
		}
	}
	b, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opts.Timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: the database %s is in use by another kontextbot process (only one may run per file); stop it or set KONTEXT_DB to another file", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := b.Update(func(tx *bbolt.Tx) error { return initSchema(tx, path) }); err != nil {
		_ = b.Close()
		return nil, err
	}
	return &DB{bolt: b, path: path, history: opts.History, now: opts.Now}, nil
}

// initSchema records the schema version in a new file, or checks it in an
// existing one, and creates every bucket.
func initSchema(tx *bbolt.Tx, path string) error {
	meta := tx.Bucket(bucketMeta)
	switch {
	case meta != nil && meta.Get(keySchema) != nil:
		raw := string(meta.Get(keySchema))
		v, err := strconv.Atoi(raw)
		if err != nil {
			return fmt.Errorf("%w: the database %s records schema version %q, which this kontextbot (version %d) cannot read; set KONTEXT_DB to another file", ErrSchema, path, raw, SchemaVersion)
		}
		switch v {
		case SchemaVersion:
		case 1:
			if err := migrate1to2(tx, path); err != nil {
				return err
			}
		default:
			return schemaError(path, v)
		}
	default:
		// No version: a brand-new file, unless it already holds buckets,
		// which means something else wrote it.
		foreign := false
		_ = tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
			if !bytes.Equal(name, bucketMeta) {
				foreign = true
			}
			return nil
		})
		if foreign {
			return schemaError(path, 0)
		}
		m, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return fmt.Errorf("store: open %s: %w", path, err)
		}
		if err := m.Put(keySchema, []byte(strconv.Itoa(SchemaVersion))); err != nil {
			return fmt.Errorf("store: open %s: %w", path, err)
		}
	}
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("store: open %s: create bucket %s: %w", path, name, err)
		}
	}
	return nil
}

func schemaError(path string, got int) error {
	hint := "it was written by a newer kontextbot: run that release, or set KONTEXT_DB to another file"
	if got < SchemaVersion {
		hint = "it was written by an older kontextbot or another program: set KONTEXT_DB to another file (or move this one away) to start afresh"
	}
	return fmt.Errorf("%w: the database %s has schema version %d but this kontextbot uses version %d; %s", ErrSchema, path, got, SchemaVersion, hint)
}

// Close releases the file. Methods called after Close fail.
func (db *DB) Close() error {
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", db.path, err)
	}
	return nil
}

// Ping checks that the database is open and readable, for health checks.
func (db *DB) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	err := db.bolt.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			return errors.New("no meta bucket")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: ping %s: %w", db.path, err)
	}
	return nil
}

// Conversation returns the conversation at key, or an error wrapping
// bot.ErrNotFound.
func (db *DB) Conversation(ctx context.Context, key bot.ConvKey) (*bot.Conversation, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: conversation %s: %w", key, err)
	}
	var c *bot.Conversation
	err := db.bolt.View(func(tx *bbolt.Tx) error {
		var err error
		c, err = getConv(tx, key)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: conversation %s: %w", key, err)
	}
	return c, nil
}

// Image returns a copy of the bytes stored under the sha256 hex digest, or
// an error wrapping bot.ErrNotFound.
func (db *DB) Image(ctx context.Context, sha string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: image %s: %w", sha, err)
	}
	var data []byte
	err := db.bolt.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketImages).Get([]byte(sha))
		if v == nil {
			return bot.ErrNotFound
		}
		data = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: image %s: %w", sha, err)
	}
	return data, nil
}

// Thumbnail returns a copy of the thumbnail stored for the image under
// the sha256 hex digest, or an error wrapping bot.ErrNotFound.
func (db *DB) Thumbnail(ctx context.Context, sha string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: thumbnail %s: %w", sha, err)
	}
	var data []byte
	err := db.bolt.View(func(tx *bbolt.Tx) error {
		// A file made before the bucket existed and opened read-only has none.
		if b := tx.Bucket(bucketThumbs); b != nil {
			data = bytes.Clone(b.Get([]byte(sha)))
		}
		if data == nil {
			return bot.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: thumbnail %s: %w", sha, err)
	}
	return data, nil
}

// PutThumbnail stores (or replaces) the thumbnail of the image under the
// sha256 hex digest; an error wrapping bot.ErrNotFound when the image is
// not stored. The thumbnail is deleted with the image.
func (db *DB) PutThumbnail(ctx context.Context, sha string, data []byte) error {
	wrap := func(err error) error { return fmt.Errorf("store: put thumbnail %s: %w", sha, err) }
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	if len(data) == 0 {
		return wrap(errors.New("no thumbnail bytes"))
	}
	err := db.bolt.Update(func(tx *bbolt.Tx) error {
		k := []byte(sha)
		if tx.Bucket(bucketImages).Get(k) == nil {
			return bot.ErrNotFound
		}
		return tx.Bucket(bucketThumbs).Put(k, data)
	})
	if err != nil {
		return wrap(err)
	}
	return nil
}

// AddTurn stores data once per content and appends t to the conversation at
// key (created if new) as its head, in one transaction with the job and
// charge when they are not nil. t.SHA256 is set from data when empty and
// must match it otherwise; t.Messages, if any, are recorded as AddMessage
// would. Turns past the history limit are pruned oldest first, with their
// message mappings and any image left unreferenced. A turn id already in
// the conversation is an error. The result is the conversation as stored.
func (db *DB) AddTurn(ctx context.Context, key bot.ConvKey, t bot.Turn, data []byte, job *bot.Job, charge *bot.Charge) (*bot.Conversation, error) {
	return db.addTurn(ctx, "add turn", key, t, data, job, charge, true)
}

// AddReference stores data once per content and appends t to the
// conversation at key (created if new) without making it the head: an
// image an edit uses as a further reference. Otherwise it is AddTurn
// without a job or a charge.
func (db *DB) AddReference(ctx context.Context, key bot.ConvKey, t bot.Turn, data []byte) (*bot.Conversation, error) {
	return db.addTurn(ctx, "add reference", key, t, data, nil, nil, false)
}

// addTurn is AddTurn, and AddReference when head is false.
func (db *DB) addTurn(ctx context.Context, op string, key bot.ConvKey, t bot.Turn, data []byte, job *bot.Job, charge *bot.Charge, head bool) (*bot.Conversation, error) {
	wrap := func(err error) error { return fmt.Errorf("store: %s %s: %w", op, key, err) }
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	if err := bot.CheckAddTurn(key, &t, data, job); err != nil {
		return nil, wrap(err)
	}
	msgs := t.Messages
	t.Messages = nil
	if t.Seed != nil {
		seed := *t.Seed
		t.Seed = &seed
	}

	var out *bot.Conversation
	err := db.bolt.Update(func(tx *bbolt.Tx) error {
		c, err := getConv(tx, key)
		existed := err == nil
		switch {
		case errors.Is(err, bot.ErrNotFound):
			c = &bot.Conversation{Key: key}
		case err != nil:
			return err
		}
		prev := c.Updated
		if c.Turn(t.ID) != nil {
			return fmt.Errorf("turn %s is already in the conversation", t.ID)
		}
		if _, err := addRef(tx, t.SHA256, data); err != nil {
			return err
		}
		c.Turns = append(c.Turns, t)
		if head {
			c.Head = t.ID
		}
		c.Updated = db.now()
		for _, m := range msgs {
			if _, err := attachMessage(tx, c, t.ID, m); err != nil {
				return err
			}
		}
		if err := db.prune(tx, c, t.ID); err != nil {
			return err
		}
		if out, err = putConv(tx, c); err != nil {
			return err
		}
		if err := indexConv(tx, key, prev, existed, c.Updated); err != nil {
			return err
		}
		if job != nil {
			if err := putJob(tx, job); err != nil {
				return err
			}
		}
		if charge != nil {
			if err := addUsage(tx, charge); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err)
	}
	return out, nil
}

// prune drops the oldest turns of c past the history limit (never the
// head, the turn keep just added, or a turn another one uses as a
// reference; see bot.PruneTurns), releasing their images and message
// mappings.
func (db *DB) prune(tx *bbolt.Tx, c *bot.Conversation, keep string) error {
	for _, old := range bot.PruneTurns(c, db.history, keep) {
		if _, err := dropRef(tx, old.SHA256); err != nil {
			return err
		}
		if _, err := dropMessages(tx, c.Key, old); err != nil {
			return err
		}
	}
	return nil
}

// SetHead makes turn id the head of the conversation at key (undo). An
// unknown conversation or turn is an error wrapping bot.ErrNotFound.
func (db *DB) SetHead(ctx context.Context, key bot.ConvKey, id string) (*bot.Conversation, error) {
	wrap := func(err error) error { return fmt.Errorf("store: set head %s to %s: %w", key, id, err) }
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	var out *bot.Conversation
	err := db.bolt.Update(func(tx *bbolt.Tx) error {
		c, err := getConv(tx, key)
		if err != nil {
			return err
		}
		if c.Turn(id) == nil {
			return fmt.Errorf("turn: %w", bot.ErrNotFound)
		}
		prev := c.Updated
		c.Head = id
		c.Turn(id).Hidden = false // shown again
		c.Updated = db.now()
		if out, err = putConv(tx, c); err != nil {
			return err
		}
		return indexConv(tx, key, prev, true, c.Updated)
	})
	if err != nil {
		return nil, wrap(err)
	}
	return out, nil
}

// DeleteTurn deletes turn id from the conversation at key as
// bot.RemoveTurn decides: the turn goes (its image with it when no other
// turn uses the bytes) or, when a later turn was made from it, stays
// hidden with its image; its message mappings go either way, and a head
// that went moves to its nearest shown ancestor. An unknown conversation
// or turn is an error wrapping bot.ErrNotFound.
func (db *DB) DeleteTurn(ctx context.Context, key bot.ConvKey, id string) (*bot.Conversation, error) {
	wrap := func(err error) error { return fmt.Errorf("store: delete turn %s of %s: %w", id, key, err) }
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	var out *bot.Conversation
	err := db.bolt.Update(func(tx *bbolt.Tx) error {
		c, err := getConv(tx, key)
		if err != nil {
			return err
		}
		gone, forget, err := bot.RemoveTurn(c, id)
		if err != nil {
			return err
		}
		for _, g := range gone {
			if _, err := dropRef(tx, g.SHA256); err != nil {
				return err
			}
			if _, err := dropMessages(tx, key, g); err != nil {
				return err
			}
		}
		if _, err := dropMessages(tx, key, bot.Turn{ID: id, Messages: forget}); err != nil {
			return err
		}
		prev := c.Updated
		c.Updated = db.now()
		if len(c.Turns) == 0 {
			// Nothing left: the conversation goes, as if never started.
			out = &bot.Conversation{Key: key, Turns: []bot.Turn{}, Updated: c.Updated}
			if err := tx.Bucket(bucketConvIdx).Delete(append(timeKey(prev), key.String()...)); err != nil {
				return fmt.Errorf("unindex conversation: %w", err)
			}
			return tx.Bucket(bucketConvs).Delete([]byte(key.String()))
		}
		if out, err = putConv(tx, c); err != nil {
			return err
		}
		return indexConv(tx, key, prev, true, c.Updated)
	})
	if err != nil {
		return nil, wrap(err)
	}
	return out, nil
}

// AddMessage records that turn id of the conversation at key was posted as
// platform message msgID, and lists msgID in the turn's Messages (the last
// MaxMessagesPerTurn are kept). A msgID that was recorded for another turn
// moves to this one. An unknown conversation or turn is an error wrapping
// bot.ErrNotFound.
func (db *DB) AddMessage(ctx context.Context, key bot.ConvKey, id, msgID string) error {
	wrap := func(err error) error {
		return fmt.Errorf("store: add message %s to %s turn %s: %w", msgID, key, id, err)
	}
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	if msgID == "" {
		return wrap(errors.New("empty message id"))
	}
	err := db.bolt.Update(func(tx *bbolt.Tx) error {
		c, err := getConv(tx, key)
		if err != nil {
			return err
		}
		changed, err := attachMessage(tx, c, id, msgID)
		if err != nil || !changed {
			return err
		}
		_, err = putConv(tx, c)
		return err
	})
	if err != nil {
		return wrap(err)
	}
	return nil
}

// Message finds the turn posted as msgID on key's platform and in key's
// workspace, returning the conversation key and turn id. It wraps
// bot.ErrNotFound when there is no such message or its turn has gone.
func (db *DB) Message(ctx context.Context, key bot.ConvKey, msgID string) (bot.ConvKey, string, error) {
	wrap := func(err error) error {
		return fmt.Errorf("store: message %s in %s/%s: %w", msgID, key.Platform, key.Workspace, err)
	}
	if err := ctx.Err(); err != nil {
		return bot.ConvKey{}, "", wrap(err)
	}
	mk, err := messageKey(key, msgID)
	if err != nil {
		return bot.ConvKey{}, "", wrap(err)
	}
	var ref messageRef
	err = db.bolt.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketMessages).Get(mk)
		if v == nil {
			return bot.ErrNotFound
		}
		if err := json.Unmarshal(v, &ref); err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		c, err := getConv(tx, ref.Key)
		if err != nil {
			return err
		}
		if c.Turn(ref.Turn) == nil {
			return fmt.Errorf("turn %s: %w", ref.Turn, bot.ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return bot.ConvKey{}, "", wrap(err)
	}
	return ref.Key, ref.Turn, nil
}

// PutJob creates or replaces a job.
func (db *DB) PutJob(ctx context.Context, j *bot.Job) error {
	if j == nil {
		return errors.New("store: put job: nil job")
	}
	wrap := func(err error) error { return fmt.Errorf("store: put job %s: %w", j.ID, err) }
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	if j.ID == "" {
		return wrap(errors.New("job has no id"))
	}
	if err := db.bolt.Update(func(tx *bbolt.Tx) error { return putJob(tx, j) }); err != nil {
		return wrap(err)
	}
	return nil
}

// Job returns the job with id, or an error wrapping bot.ErrNotFound.
func (db *DB) Job(ctx context.Context, id string) (*bot.Job, error) {
	wrap := func(err error) error { return fmt.Errorf("store: job %s: %w", id, err) }
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	var j bot.Job
	err := db.bolt.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketJobs).Get([]byte(id))
		if v == nil {
			return bot.ErrNotFound
		}
		if err := json.Unmarshal(v, &j); err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err)
	}
	return &j, nil
}

// LiveJobs returns every waiting, submitted or posting job, ordered by
// Created and then by ID. It reads only the live jobs (through the
// jobs_live index), however many finished ones are kept.
func (db *DB) LiveJobs(ctx context.Context) ([]*bot.Job, error) {
	wrap := func(err error) error { return fmt.Errorf("store: live jobs: %w", err) }
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	var jobs []*bot.Job
	err := db.bolt.View(func(tx *bbolt.Tx) error {
		all := tx.Bucket(bucketJobs)
		return tx.Bucket(bucketJobsLive).ForEach(func(k, _ []byte) error {
			v := all.Get(k)
			if v == nil {
				return fmt.Errorf("job %s is indexed as live but not stored", k)
			}
			var j bot.Job
			if err := json.Unmarshal(v, &j); err != nil {
				return fmt.Errorf("decode job %s: %w", k, err)
			}
			if j.State.Live() {
				jobs = append(jobs, &j)
			}
			return nil
		})
	})
	if err != nil {
		return nil, wrap(err)
	}
	bot.SortJobs(jobs)
	return jobs, nil
}

// Usage returns the user's usage on the UTC day of at and the workspace's
// in the UTC month of at; zero values when nothing is recorded.
func (db *DB) Usage(ctx context.Context, platform, workspace, user string, at time.Time) (userDay, workspaceMonth bot.Usage, err error) {
	wrap := func(err error) error {
		return fmt.Errorf("store: usage %s/%s/%s: %w", platform, workspace, user, err)
	}
	if err := ctx.Err(); err != nil {
		return bot.Usage{}, bot.Usage{}, wrap(err)
	}
	dk, mk := usageKeys(platform, workspace, user, at)
	err = db.bolt.View(func(tx *bbolt.Tx) error {
		if err := getUsage(tx.Bucket(bucketUsageDay), dk, &userDay); err != nil {
			return err
		}
		return getUsage(tx.Bucket(bucketUsageMonth), mk, &workspaceMonth)
	})
	if err != nil {
		return bot.Usage{}, bot.Usage{}, wrap(err)
	}
	return userDay, workspaceMonth, nil
}

// Claim records key as handled until now+ttl and reports whether this call
// is the first to claim it: false while an earlier claim has not expired.
func (db *DB) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	wrap := func(err error) error { return fmt.Errorf("store: claim %s: %w", key, err) }
	if err := ctx.Err(); err != nil {
		return false, wrap(err)
	}
	if key == "" {
		return false, wrap(errors.New("empty key"))
	}
	now := db.now()
	first := false
	err := db.bolt.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketClaims)
		if v := b.Get([]byte(key)); len(v) == 8 && int64(binary.BigEndian.Uint64(v)) > now.UnixNano() {
			return nil
		}
		first = true
		var exp [8]byte
		binary.BigEndian.PutUint64(exp[:], uint64(now.Add(ttl).UnixNano()))
		return b.Put([]byte(key), exp[:])
	})
	if err != nil {
		return false, wrap(err)
	}
	return first, nil
}

// Settings returns the workspace's stored overrides, or the zero value.
func (db *DB) Settings(ctx context.Context, platform, workspace string) (bot.WorkspaceSettings, error) {
	wrap := func(err error) error { return fmt.Errorf("store: settings %s/%s: %w", platform, workspace, err) }
	var s bot.WorkspaceSettings
	if err := ctx.Err(); err != nil {
		return s, wrap(err)
	}
	k, err := settingsKey(platform, workspace)
	if err != nil {
		return s, wrap(err)
	}
	err = db.bolt.View(func(tx *bbolt.Tx) error {
		// A file made before the bucket existed and opened read-only has none.
		if b := tx.Bucket(bucketSettings); b != nil {
			if v := b.Get(k); v != nil {
				return json.Unmarshal(v, &s)
			}
		}
		return nil
	})
	if err != nil {
		return bot.WorkspaceSettings{}, wrap(err)
	}
	return s, nil
}

// PutSettings replaces the workspace's overrides; an empty value deletes them.
func (db *DB) PutSettings(ctx context.Context, platform, workspace string, s bot.WorkspaceSettings) error {
	wrap := func(err error) error { return fmt.Errorf("store: put settings %s/%s: %w", platform, workspace, err) }
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	k, err := settingsKey(platform, workspace)
	if err != nil {
		return wrap(err)
	}
	v, err := json.Marshal(s)
	if err != nil {
		return wrap(err)
	}
	err = db.bolt.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketSettings)
		if s.Empty() {
			return b.Delete(k)
		}
		return b.Put(k, v)
	})
	if err != nil {
		return wrap(err)
	}
	return nil
}

func settingsKey(platform, workspace string) ([]byte, error) {
	if platform == "" || strings.Contains(platform, "/") || strings.Contains(workspace, "/") {
		return nil, errors.New("invalid platform or workspace")
	}
	return []byte(platform + "/" + workspace), nil
}

// Sweep batch bounds: a batch ends after this many records or once it
// has worked this long, whichever comes first, so that a write never waits
// behind maintenance for longer than one small transaction. The record
// counts bound the pages a batch dirties, and so its commit: removing a
// conversation touches about five pages (the conversation, its images,
// their counts, its message mappings, its index entry) in scattered
// places, a finished job two, a claim one.
const (
	sweepConvBatch  = 16
	sweepJobBatch   = 64
	sweepClaimBatch = 128
	sweepBatchTime  = 3 * time.Millisecond
	sweepPause      = time.Millisecond // between batches
)

// Sweep is the retention pass. It removes every conversation whose Updated
// is before idleBefore, with its message mappings and its references to
// images (deleting images nothing refers to any more), every job that is
// no longer live and whose Updated is before idleBefore, and every claim
// that has expired. Usage records are kept. It reads only what is idle,
// through the conv_updated and jobs_done indexes (claims are scanned).
//
// It works in small transactions (a few dozen records or about
// sweepBatchTime of work each), so other writes wait for one batch at
// most, never for the whole pass. Each batch keeps every invariant of the
// file: a conversation goes with its mappings and references in one
// batch. On error (including ctx ending midway) the batches already
// committed stay done and are counted in the returned stats; running
// Sweep again finishes the work. The file does not shrink; the freed
// pages are reused by later writes.
func (db *DB) Sweep(ctx context.Context, idleBefore time.Time) (SweepStats, error) {
	wrap := func(err error) error {
		return fmt.Errorf("store: sweep before %s: %w", idleBefore.Format(time.RFC3339), err)
	}
	var st SweepStats
	cut := timeKey(idleBefore)
	for _, step := range []func(*bbolt.Tx, []byte, *SweepStats) (bool, error){
		sweepConvs, sweepJobs,
	} {
		for {
			if err := ctx.Err(); err != nil {
				return st, wrap(err)
			}
			var done bool
			var batch SweepStats
			err := db.sweepTx(func(tx *bbolt.Tx) error {
				batch = SweepStats{}
				var err error
				done, err = step(tx, cut, &batch)
				return err
			})
			if err != nil {
				return st, wrap(err)
			}
			st.add(batch)
			if done {
				break
			}
			pause(ctx)
		}
	}
	now := uint64(db.now().UnixNano())
	var from []byte
	for {
		if err := ctx.Err(); err != nil {
			return st, wrap(err)
		}
		n := 0
		err := db.sweepTx(func(tx *bbolt.Tx) error {
			var err error
			n, from, err = sweepClaims(tx, from, now)
			return err
		})
		if err != nil {
			return st, wrap(err)
		}
		st.Claims += n
		if from == nil {
			return st, nil
		}
		pause(ctx)
	}
}

// pause lets the writes that queued behind a sweep batch go first: without
// it the sweep, still running, could take the write lock again before
// they wake.
func pause(ctx context.Context) {
	t := time.NewTimer(sweepPause)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// sweepTx runs one sweep batch in its own write transaction.
func (db *DB) sweepTx(fn func(*bbolt.Tx) error) error {
	var held time.Time
	var work time.Duration
	err := db.bolt.Update(func(tx *bbolt.Tx) error {
		held = time.Now()
		err := fn(tx)
		work = time.Since(held)
		return err
	})
	if db.sweepHeld != nil && !held.IsZero() {
		db.sweepHeld(work, time.Since(held))
	}
	return err
}

func (s *SweepStats) add(o SweepStats) {
	s.Conversations += o.Conversations
	s.Images += o.Images
	s.Jobs += o.Jobs
	s.Messages += o.Messages
	s.Claims += o.Claims
}

// sweepConvs removes one batch of the conversations idle before cut (a
// timeKey), oldest first, and reports whether none is left.
func sweepConvs(tx *bbolt.Tx, cut []byte, st *SweepStats) (bool, error) {
	keys, done := idleKeys(tx.Bucket(bucketConvIdx), cut, sweepConvBatch)
	start := time.Now()
	for i, k := range keys {
		if i > 0 && time.Since(start) > sweepBatchTime {
			return false, nil
		}
		if err := tx.Bucket(bucketConvIdx).Delete(k); err != nil {
			return false, err
		}
		if len(k) < timeKeyLen {
			continue // malformed: dropped
		}
		ck := k[timeKeyLen:]
		v := tx.Bucket(bucketConvs).Get(ck)
		if v == nil {
			continue // an index entry without its conversation: dropped above
		}
		var c bot.Conversation
		if err := json.Unmarshal(v, &c); err != nil {
			return false, fmt.Errorf("decode conversation %s: %w", ck, err)
		}
		if !bytes.Equal(timeKey(c.Updated), k[:timeKeyLen]) {
			continue // a stale entry: the conversation has its own, later one
		}
		for _, t := range c.Turns {
			gone, err := dropRef(tx, t.SHA256)
			if err != nil {
				return false, err
			}
			if gone {
				st.Images++
			}
			m, err := dropMessages(tx, c.Key, t)
			if err != nil {
				return false, err
			}
			st.Messages += m
		}
		if err := tx.Bucket(bucketConvs).Delete(ck); err != nil {
			return false, err
		}
		st.Conversations++
	}
	return done, nil
}

// sweepJobs removes one batch of the finished jobs idle before cut,
// oldest first, and reports whether none is left.
func sweepJobs(tx *bbolt.Tx, cut []byte, st *SweepStats) (bool, error) {
	keys, done := idleKeys(tx.Bucket(bucketJobsDone), cut, sweepJobBatch)
	start := time.Now()
	for i, k := range keys {
		if i > 0 && time.Since(start) > sweepBatchTime {
			return false, nil
		}
		if err := tx.Bucket(bucketJobsDone).Delete(k); err != nil {
			return false, err
		}
		if len(k) < timeKeyLen {
			continue // malformed: dropped
		}
		id := k[timeKeyLen:]
		v := tx.Bucket(bucketJobs).Get(id)
		if v == nil {
			continue
		}
		var j jobIndexFields
		if err := json.Unmarshal(v, &j); err != nil {
			return false, fmt.Errorf("decode job %s: %w", id, err)
		}
		if j.State.Live() || !bytes.Equal(timeKey(j.Updated), k[:timeKeyLen]) {
			continue // a stale entry
		}
		if err := tx.Bucket(bucketJobs).Delete(id); err != nil {
			return false, err
		}
		st.Jobs++
	}
	return done, nil
}

// idleKeys returns up to limit keys of index b that sort before cut,
// first ones first, and whether they are all there are. A key too short
// to hold a time counts as idle, so that the caller drops it.
func idleKeys(b *bbolt.Bucket, cut []byte, limit int) (keys [][]byte, all bool) {
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) >= timeKeyLen && bytes.Compare(k[:timeKeyLen], cut) >= 0 {
			return keys, true
		}
		if len(keys) == limit {
			return keys, false
		}
		keys = append(keys, bytes.Clone(k))
	}
	return keys, true
}

// sweepClaims removes the expired claims among one batch of claims from
// key from on (nil: the first), and returns how many it removed and the
// key to go on from (nil when it reached the end).
func sweepClaims(tx *bbolt.Tx, from []byte, now uint64) (int, []byte, error) {
	b := tx.Bucket(bucketClaims)
	c := b.Cursor()
	k, v := c.First()
	if from != nil {
		k, v = c.Seek(from)
	}
	var expired [][]byte
	var next []byte
	for n := 0; k != nil; k, v = c.Next() {
		if n++; n > sweepClaimBatch {
			next = bytes.Clone(k)
			break
		}
		if len(v) != 8 || binary.BigEndian.Uint64(v) <= now {
			expired = append(expired, bytes.Clone(k))
		}
	}
	for _, k := range expired {
		if err := b.Delete(k); err != nil {
			return 0, nil, err
		}
	}
	return len(expired), next, nil
}

// --- helpers that run inside a transaction ---

// messageRef is the value of a messages entry.
type messageRef struct {
	Key  bot.ConvKey `json:"key"`
	Turn string      `json:"turn"`
}

func getConv(tx *bbolt.Tx, key bot.ConvKey) (*bot.Conversation, error) {
	v := tx.Bucket(bucketConvs).Get([]byte(key.String()))
	if v == nil {
		return nil, bot.ErrNotFound
	}
	var c bot.Conversation
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, fmt.Errorf("decode conversation: %w", err)
	}
	return &c, nil
}

// putConv stores c and returns the stored state decoded afresh, so the
// caller's copy shares nothing with c and equals what a later read returns.
func putConv(tx *bbolt.Tx, c *bot.Conversation) (*bot.Conversation, error) {
	v, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode conversation: %w", err)
	}
	if err := tx.Bucket(bucketConvs).Put([]byte(c.Key.String()), v); err != nil {
		return nil, err
	}
	var out bot.Conversation
	if err := json.Unmarshal(v, &out); err != nil {
		return nil, fmt.Errorf("decode conversation: %w", err)
	}
	return &out, nil
}

// timeKeyLen is the length of a timeKey.
const timeKeyLen = 12

// timeKey encodes t in 12 bytes that sort as t does (see the package
// comment), for any t, the zero time included.
func timeKey(t time.Time) []byte {
	k := make([]byte, timeKeyLen, timeKeyLen+64)
	binary.BigEndian.PutUint64(k, uint64(t.Unix())^(1<<63))
	binary.BigEndian.PutUint32(k[8:], uint32(t.Nanosecond()))
	return k
}

// indexConv moves the conv_updated entry of the conversation at key from
// prev (when it existed) to updated.
func indexConv(tx *bbolt.Tx, key bot.ConvKey, prev time.Time, existed bool, updated time.Time) error {
	b := tx.Bucket(bucketConvIdx)
	ks := key.String()
	if existed {
		if prev.Equal(updated) {
			return nil // the same key
		}
		if err := b.Delete(append(timeKey(prev), ks...)); err != nil {
			return fmt.Errorf("unindex conversation: %w", err)
		}
	}
	if err := b.Put(append(timeKey(updated), ks...), nil); err != nil {
		return fmt.Errorf("index conversation: %w", err)
	}
	return nil
}

// jobIndexFields are the fields of a stored job its index entry depends on.
type jobIndexFields struct {
	State   bot.JobState `json:"state"`
	Updated time.Time    `json:"updated"`
}

// putJob stores j and moves its index entry (jobs_live or jobs_done).
func putJob(tx *bbolt.Tx, j *bot.Job) error {
	v, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	jobs := tx.Bucket(bucketJobs)
	id := []byte(j.ID)
	if old := jobs.Get(id); old != nil {
		var o jobIndexFields
		if err := json.Unmarshal(old, &o); err != nil {
			return fmt.Errorf("decode job %s: %w", j.ID, err)
		}
		if err := unindexJob(tx, id, o); err != nil {
			return err
		}
	}
	if err := jobs.Put(id, v); err != nil {
		return err
	}
	return indexJob(tx, id, jobIndexFields{State: j.State, Updated: j.Updated})
}

func indexJob(tx *bbolt.Tx, id []byte, f jobIndexFields) error {
	var err error
	if f.State.Live() {
		err = tx.Bucket(bucketJobsLive).Put(id, nil)
	} else {
		err = tx.Bucket(bucketJobsDone).Put(append(timeKey(f.Updated), id...), nil)
	}
	if err != nil {
		return fmt.Errorf("index job %s: %w", id, err)
	}
	return nil
}

func unindexJob(tx *bbolt.Tx, id []byte, f jobIndexFields) error {
	var err error
	if f.State.Live() {
		err = tx.Bucket(bucketJobsLive).Delete(id)
	} else {
		err = tx.Bucket(bucketJobsDone).Delete(append(timeKey(f.Updated), id...))
	}
	if err != nil {
		return fmt.Errorf("unindex job %s: %w", id, err)
	}
	return nil
}

// migrate1to2 adds the schema 2 indexes to a schema 1 file, building them
// from every conversation and job, and records version 2; it runs inside
// Open's transaction, so a failure leaves the file at version 1.
func migrate1to2(tx *bbolt.Tx, path string) error {
	wrap := func(err error) error {
		return fmt.Errorf("store: open %s: migrate schema 1 to 2: %w", path, err)
	}
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return wrap(fmt.Errorf("create bucket %s: %w", name, err))
		}
	}
	convIdx := tx.Bucket(bucketConvIdx)
	err := tx.Bucket(bucketConvs).ForEach(func(k, v []byte) error {
		var c struct {
			Updated time.Time `json:"updated"`
		}
		if err := json.Unmarshal(v, &c); err != nil {
			return fmt.Errorf("decode conversation %s: %w", k, err)
		}
		return convIdx.Put(append(timeKey(c.Updated), k...), nil)
	})
	if err != nil {
		return wrap(err)
	}
	err = tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
		var f jobIndexFields
		if err := json.Unmarshal(v, &f); err != nil {
			return fmt.Errorf("decode job %s: %w", k, err)
		}
		return indexJob(tx, k, f)
	})
	if err != nil {
		return wrap(err)
	}
	if err := tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(SchemaVersion))); err != nil {
		return wrap(err)
	}
	return nil
}

// addRef stores data under sha if it is new and counts one more reference
// to it. It returns the new count.
func addRef(tx *bbolt.Tx, sha string, data []byte) (uint64, error) {
	k := []byte(sha)
	refs := tx.Bucket(bucketRefs)
	n := refCount(refs.Get(k))
	if n == 0 || tx.Bucket(bucketImages).Get(k) == nil {
		if err := tx.Bucket(bucketImages).Put(k, data); err != nil {
			return 0, fmt.Errorf("put image %s: %w", sha, err)
		}
	}
	n++
	if err := refs.Put(k, binary.BigEndian.AppendUint64(nil, n)); err != nil {
		return 0, fmt.Errorf("count image %s: %w", sha, err)
	}
	return n, nil
}

// dropRef counts one reference fewer to image sha and deletes the image
// (and its thumbnail) when none is left, reporting whether it did.
func dropRef(tx *bbolt.Tx, sha string) (deleted bool, err error) {
	k := []byte(sha)
	refs := tx.Bucket(bucketRefs)
	n := refCount(refs.Get(k))
	if n > 1 {
		return false, refs.Put(k, binary.BigEndian.AppendUint64(nil, n-1))
	}
	if err := refs.Delete(k); err != nil {
		return false, err
	}
	if err := tx.Bucket(bucketThumbs).Delete(k); err != nil {
		return false, err
	}
	images := tx.Bucket(bucketImages)
	if images.Get(k) == nil {
		return false, nil
	}
	return true, images.Delete(k)
}

func refCount(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// messageKey is the messages key platform/workspace/msgID. Platform and
// workspace may not contain '/', so no two (platform, workspace) pairs
// share a prefix.
func messageKey(key bot.ConvKey, msgID string) ([]byte, error) {
	if key.Platform == "" || strings.Contains(key.Platform, "/") || strings.Contains(key.Workspace, "/") {
		return nil, errors.New("invalid conversation key")
	}
	return []byte(key.Platform + "/" + key.Workspace + "/" + msgID), nil
}

// attachMessage maps msgID to turn id of c and lists it in that turn's
// Messages, trimming the oldest past MaxMessagesPerTurn. c is changed in
// place and the caller stores it; a conversation other than c that loses
// the message is stored here. It reports whether c changed.
func attachMessage(tx *bbolt.Tx, c *bot.Conversation, id, msgID string) (bool, error) {
	t := c.Turn(id)
	if t == nil {
		return false, fmt.Errorf("turn %s: %w", id, bot.ErrNotFound)
	}
	mk, err := messageKey(c.Key, msgID)
	if err != nil {
		return false, err
	}
	msgs := tx.Bucket(bucketMessages)
	if v := msgs.Get(mk); v != nil {
		var old messageRef
		if err := json.Unmarshal(v, &old); err != nil {
			return false, fmt.Errorf("decode message %s: %w", msgID, err)
		}
		switch {
		case old.Key == c.Key && old.Turn == id:
			if slices.Contains(t.Messages, msgID) {
				return false, nil // already recorded
			}
		case old.Key == c.Key:
			if ot := c.Turn(old.Turn); ot != nil {
				ot.Messages = slices.DeleteFunc(ot.Messages, func(m string) bool { return m == msgID })
			}
		default:
			oc, err := getConv(tx, old.Key)
			switch {
			case errors.Is(err, bot.ErrNotFound):
			case err != nil:
				return false, err
			default:
				if ot := oc.Turn(old.Turn); ot != nil {
					ot.Messages = slices.DeleteFunc(ot.Messages, func(m string) bool { return m == msgID })
					if _, err := putConv(tx, oc); err != nil {
						return false, err
					}
				}
			}
		}
	}
	v, err := json.Marshal(messageRef{Key: c.Key, Turn: id})
	if err != nil {
		return false, err
	}
	if err := msgs.Put(mk, v); err != nil {
		return false, err
	}
	t.Messages = slices.DeleteFunc(t.Messages, func(m string) bool { return m == msgID })
	t.Messages = append(t.Messages, msgID)
	for len(t.Messages) > MaxMessagesPerTurn {
		if _, err := dropMessage(tx, c.Key, id, t.Messages[0]); err != nil {
			return false, err
		}
		t.Messages = t.Messages[1:]
	}
	return true, nil
}

// dropMessages deletes the mappings of t's messages that still point to
// it, returning how many it deleted.
func dropMessages(tx *bbolt.Tx, key bot.ConvKey, t bot.Turn) (int, error) {
	n := 0
	for _, m := range t.Messages {
		ok, err := dropMessage(tx, key, t.ID, m)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}

// dropMessage deletes the mapping of msgID if it points to turn id of the
// conversation at key.
func dropMessage(tx *bbolt.Tx, key bot.ConvKey, id, msgID string) (bool, error) {
	mk, err := messageKey(key, msgID)
	if err != nil {
		return false, err
	}
	msgs := tx.Bucket(bucketMessages)
	v := msgs.Get(mk)
	if v == nil {
		return false, nil
	}
	var ref messageRef
	if err := json.Unmarshal(v, &ref); err != nil {
		return false, fmt.Errorf("decode message %s: %w", msgID, err)
	}
	if ref.Key != key || ref.Turn != id {
		return false, nil
	}
	return true, msgs.Delete(mk)
}

// usageKeys returns the user/day and workspace/month keys for at (UTC).
func usageKeys(platform, workspace, user string, at time.Time) (day, month []byte) {
	at = at.UTC()
	day = []byte(platform + "/" + workspace + "/" + user + "/" + at.Format(time.DateOnly))
	month = []byte(platform + "/" + workspace + "/" + at.Format("2006-01"))
	return day, month
}

func getUsage(b *bbolt.Bucket, k []byte, u *bot.Usage) error {
	v := b.Get(k)
	if v == nil {
		*u = bot.Usage{}
		return nil
	}
	if err := json.Unmarshal(v, u); err != nil {
		return fmt.Errorf("decode usage %s: %w", k, err)
	}
	return nil
}

// addUsage adds one image at c.USD to the user/day and workspace/month
// records of c.At.
func addUsage(tx *bbolt.Tx, c *bot.Charge) error {
	dk, mk := usageKeys(c.Platform, c.Workspace, c.User, c.At)
	for _, r := range []struct {
		b *bbolt.Bucket
		k []byte
	}{{tx.Bucket(bucketUsageDay), dk}, {tx.Bucket(bucketUsageMonth), mk}} {
		var u bot.Usage
		if err := getUsage(r.b, r.k, &u); err != nil {
			return err
		}
		u.Images++
		u.Spend += c.USD
		v, err := json.Marshal(u)
		if err != nil {
			return err
		}
		if err := r.b.Put(r.k, v); err != nil {
			return fmt.Errorf("put usage %s: %w", r.k, err)
		}
	}
	return nil
}
