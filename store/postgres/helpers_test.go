package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"kontextbot/bot"
	"kontextbot/store/postgres/pgtest"
	"kontextbot/store/storetest"
)

// openTest opens a store in a schema of its own and closes it at cleanup.
func openTest(tb testing.TB, opts Options) *DB {
	tb.Helper()
	u := pgtest.Schema(tb)
	db, err := Open(context.Background(), u, opts)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// contractDB adapts a DB to storetest.Store.
type contractDB struct {
	*DB
	url string
}

var _ storetest.Store = (*contractDB)(nil)

func openContract(t *testing.T, u string, opts storetest.Options) *contractDB {
	t.Helper()
	db, err := Open(context.Background(), u, Options{History: opts.History, Now: opts.Now})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return &contractDB{DB: db, url: u}
}

// Reopen closes every connection and opens the same schema again.
func (s *contractDB) Reopen(t *testing.T, opts storetest.Options) storetest.Store {
	t.Helper()
	s.DB.Close()
	return openContract(t, s.url, opts)
}

// Sweep runs the PostgreSQL sweep.
func (s *contractDB) Sweep(ctx context.Context, idleBefore time.Time) (storetest.SweepStats, error) {
	st, err := s.DB.Sweep(ctx, idleBefore)
	return storetest.SweepStats{Conversations: st.Conversations, Images: st.Images, Jobs: st.Jobs,
		Messages: st.Messages, Claims: st.Claims}, err
}

// Counts counts the rows of each table.
func (s *contractDB) Counts(ctx context.Context) (storetest.Counts, error) {
	var c storetest.Counts
	err := s.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM conversations), (SELECT count(*) FROM images),
		(SELECT count(*) FROM images WHERE refs > 0), (SELECT count(*) FROM messages),
		(SELECT count(*) FROM jobs), (SELECT count(*) FROM claims), (SELECT count(*) FROM thumbnails)`).
		Scan(&c.Conversations, &c.Images, &c.ImageRefs, &c.Messages, &c.Jobs, &c.Claims, &c.Thumbnails)
	return c, err
}

// ImageRefs is the refs column of an image, 0 when there is no row.
func (s *contractDB) ImageRefs(ctx context.Context, sha string) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT refs FROM images WHERE sha256 = $1`, sha).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return n, err
}

// Check verifies, from the tables, that each image's bytes hash to its key
// and its refs count the turns that use it, that every conversation is
// within its history and has its head, and that message rows and the
// turns' message lists agree.
func (s *contractDB) Check(ctx context.Context) error {
	var errs []error
	uses := map[string]int64{}
	listed := map[string]string{} // platform/workspace/msg -> channel/thread/turn
	rows, err := s.pool.Query(ctx, `SELECT platform, workspace, channel, thread, head, turns FROM conversations`)
	if err != nil {
		return err
	}
	for rows.Next() {
		c := bot.Conversation{}
		var turns []byte
		if err := rows.Scan(&c.Key.Platform, &c.Key.Workspace, &c.Key.Channel, &c.Key.Thread, &c.Head, &turns); err != nil {
			rows.Close()
			return err
		}
		if err := json.Unmarshal(turns, &c.Turns); err != nil {
			rows.Close()
			return err
		}
		if len(c.Turns) > s.history && overfull(c, s.history) {
			errs = append(errs, fmt.Errorf("conversation %s holds %d turns, past the history of %d", c.Key, len(c.Turns), s.history))
		}
		if c.Head != "" && c.Current() == nil {
			errs = append(errs, fmt.Errorf("conversation %s: head %q is not one of its turns", c.Key, c.Head))
		}
		for _, t := range c.Turns {
			uses[t.SHA256]++
			for _, m := range t.Messages {
				listed[c.Key.Platform+"/"+c.Key.Workspace+"/"+m] = c.Key.Channel + "/" + c.Key.Thread + "/" + t.ID
			}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = s.pool.Query(ctx, `SELECT sha256, data, refs FROM images`)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for rows.Next() {
		var sha string
		var data []byte
		var refs int64
		if err := rows.Scan(&sha, &data, &refs); err != nil {
			rows.Close()
			return err
		}
		seen[sha] = true
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != sha {
			errs = append(errs, fmt.Errorf("image %s: bytes hash to %x", sha, sum))
		}
		if refs != uses[sha] {
			errs = append(errs, fmt.Errorf("image %s: reference count %d, used by %d turns", sha, refs, uses[sha]))
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for sha := range uses {
		if !seen[sha] {
			errs = append(errs, fmt.Errorf("image %s: used by a turn but not stored", sha))
		}
	}
	rows, err = s.pool.Query(ctx, `SELECT platform, workspace, msg_id, channel, thread, turn FROM messages`)
	if err != nil {
		return err
	}
	stored := 0
	for rows.Next() {
		var p, w, m, c, th, turn string
		if err := rows.Scan(&p, &w, &m, &c, &th, &turn); err != nil {
			rows.Close()
			return err
		}
		stored++
		k, v := p+"/"+w+"/"+m, c+"/"+th+"/"+turn
		if listed[k] != v {
			errs = append(errs, fmt.Errorf("message %s: maps to %s, listed on %q", k, v, listed[k]))
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if stored != len(listed) {
		keys := make([]string, 0, len(listed))
		for k := range listed {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		errs = append(errs, fmt.Errorf("%d message rows stored, %d listed on turns (%v)", stored, len(listed), keys))
	}
	return errors.Join(errs...)
}

// overfull reports whether c holds more turns than history although some
// could be pruned (turns other turns use as references are kept past it).
// The newest turn counts as just added.
func overfull(c bot.Conversation, history int) bool {
	c.Turns = slices.Clone(c.Turns)
	return len(bot.PruneTurns(&c, history, c.Turns[len(c.Turns)-1].ID)) > 0
}
