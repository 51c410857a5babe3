package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"kontextbot/bot"
	"kontextbot/store/storetest"
)

// TestContract runs the contract suite that every bot.Store passes against
// the bbolt store.
func TestContract(t *testing.T) {
	if DefaultHistory != storetest.DefaultHistory || MaxMessagesPerTurn != storetest.MaxMessagesPerTurn {
		t.Fatalf("bbolt defaults (history %d, messages per turn %d) differ from the contract's (%d, %d)",
			DefaultHistory, MaxMessagesPerTurn, storetest.DefaultHistory, storetest.MaxMessagesPerTurn)
	}
	storetest.Run(t, func(t *testing.T, opts storetest.Options) storetest.Store {
		// One level deeper than the test's folder, so Open has to create it.
		return openContract(t, filepath.Join(t.TempDir(), "data", "kontext.db"), opts)
	})
}

// contractDB adapts a bbolt DB to storetest.Store.
type contractDB struct {
	*DB
	closed bool
}

var _ storetest.Store = (*contractDB)(nil)

func openContract(t *testing.T, path string, opts storetest.Options) *contractDB {
	t.Helper()
	db, err := Open(path, Options{History: opts.History, Now: opts.Now})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	s := &contractDB{DB: db}
	t.Cleanup(func() {
		if s.closed {
			return
		}
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// Reopen closes the file and opens it again.
func (s *contractDB) Reopen(t *testing.T, opts storetest.Options) storetest.Store {
	t.Helper()
	path := s.path
	s.closed = true
	if err := s.DB.Close(); err != nil {
		t.Fatalf("Close before reopen: %v", err)
	}
	return openContract(t, path, opts)
}

// Sweep runs the bbolt sweep.
func (s *contractDB) Sweep(ctx context.Context, idleBefore time.Time) (storetest.SweepStats, error) {
	st, err := s.DB.Sweep(ctx, idleBefore)
	return storetest.SweepStats{Conversations: st.Conversations, Images: st.Images, Jobs: st.Jobs,
		Messages: st.Messages, Claims: st.Claims}, err
}

// Counts is the number of keys in each bucket.
func (s *contractDB) Counts(ctx context.Context) (storetest.Counts, error) {
	var c storetest.Counts
	err := s.bolt.View(func(tx *bbolt.Tx) error {
		for _, b := range []struct {
			name []byte
			n    *int
		}{
			{bucketConvs, &c.Conversations}, {bucketImages, &c.Images}, {bucketRefs, &c.ImageRefs},
			{bucketMessages, &c.Messages}, {bucketJobs, &c.Jobs}, {bucketClaims, &c.Claims},
			{bucketThumbs, &c.Thumbnails},
		} {
			*b.n = tx.Bucket(b.name).Stats().KeyN
		}
		return nil
	})
	return c, err
}

// ImageRefs is the stored reference count of an image.
func (s *contractDB) ImageRefs(ctx context.Context, sha string) (int, error) {
	var n uint64
	err := s.bolt.View(func(tx *bbolt.Tx) error {
		n = refCount(tx.Bucket(bucketRefs).Get([]byte(sha)))
		return nil
	})
	return int(n), err
}

// Check runs bbolt's page check and verifies the reference counts and the
// message mappings against the conversations.
func (s *contractDB) Check(ctx context.Context) error {
	return s.bolt.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		uses := map[string]uint64{}
		listed := map[string]messageRef{}
		err := tx.Bucket(bucketConvs).ForEach(func(k, v []byte) error {
			var c bot.Conversation
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			if len(c.Turns) > s.history && overfull(c, s.history) {
				return fmt.Errorf("conversation %s holds %d turns, past the history of %d", k, len(c.Turns), s.history)
			}
			if c.Head != "" && c.Current() == nil {
				return fmt.Errorf("conversation %s: head %q is not one of its turns", k, c.Head)
			}
			for _, t := range c.Turns {
				uses[t.SHA256]++
				for _, m := range t.Messages {
					mk, err := messageKey(c.Key, m)
					if err != nil {
						return err
					}
					listed[string(mk)] = messageRef{Key: c.Key, Turn: t.ID}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		var errs []error
		err = tx.Bucket(bucketRefs).ForEach(func(k, v []byte) error {
			if got, want := refCount(v), uses[string(k)]; got != want {
				errs = append(errs, fmt.Errorf("image %s: reference count %d, used by %d turns", k, got, want))
			}
			if tx.Bucket(bucketImages).Get(k) == nil {
				errs = append(errs, fmt.Errorf("image %s: counted but not stored", k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for sha := range uses {
			if tx.Bucket(bucketImages).Get([]byte(sha)) == nil {
				errs = append(errs, fmt.Errorf("image %s: used by a turn but not stored", sha))
			}
		}
		err = tx.Bucket(bucketThumbs).ForEach(func(k, _ []byte) error {
			if tx.Bucket(bucketImages).Get(k) == nil {
				errs = append(errs, fmt.Errorf("thumbnail %s: its image is not stored", k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		stored := 0
		err = tx.Bucket(bucketMessages).ForEach(func(k, v []byte) error {
			stored++
			var ref messageRef
			if err := json.Unmarshal(v, &ref); err != nil {
				return err
			}
			if want, ok := listed[string(k)]; !ok || want != ref {
				errs = append(errs, fmt.Errorf("message %s: maps to %v, listed on %v", k, ref, want))
			}
			return nil
		})
		if err != nil {
			return err
		}
		if stored != len(listed) {
			keys := make([]string, 0, len(listed))
			for k := range listed {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			errs = append(errs, fmt.Errorf("%d message mappings stored, %d listed on turns (%v)", stored, len(listed), keys))
		}
		return errors.Join(errs...)
	})
}

// overfull reports whether c holds more turns than history although some
// could be pruned (turns other turns use as references are kept past it).
// The newest turn counts as just added.
func overfull(c bot.Conversation, history int) bool {
	c.Turns = slices.Clone(c.Turns)
	return len(bot.PruneTurns(&c, history, c.Turns[len(c.Turns)-1].ID)) > 0
}
