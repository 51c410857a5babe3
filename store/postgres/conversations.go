package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"kontextbot/bot"
)

// querier is what both a pool and a transaction offer.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Conversation returns the conversation at key, or an error wrapping
// bot.ErrNotFound.
func (db *DB) Conversation(ctx context.Context, key bot.ConvKey) (*bot.Conversation, error) {
	wrap := func(err error) error { return fmt.Errorf("postgres: conversation %s: %w", key, err) }
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	c, err := getConv(ctx, db.pool, key, false)
	if err != nil {
		return nil, wrap(err)
	}
	return c, nil
}

// Image returns the bytes stored under the sha256 hex digest, or an error
// wrapping bot.ErrNotFound.
func (db *DB) Image(ctx context.Context, sha string) ([]byte, error) {
	data, err := db.blob(ctx, `SELECT data FROM images WHERE sha256 = $1`, sha)
	if err != nil {
		return nil, fmt.Errorf("postgres: image %s: %w", sha, err)
	}
	return data, nil
}

// blob runs query, which selects one bytea column by a sha256 key, for
// sha: bot.ErrNotFound when no row matches.
func (db *DB) blob(ctx context.Context, query, sha string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var data []byte
	err := db.pool.QueryRow(ctx, query, sha).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, bot.ErrNotFound
	}
	return data, err
}

// Thumbnail returns the thumbnail stored for the image under the sha256
// hex digest, or an error wrapping bot.ErrNotFound.
func (db *DB) Thumbnail(ctx context.Context, sha string) ([]byte, error) {
	data, err := db.blob(ctx, `SELECT data FROM thumbnails WHERE sha256 = $1`, sha)
	if err != nil {
		return nil, fmt.Errorf("postgres: thumbnail %s: %w", sha, err)
	}
	return data, nil
}

// PutThumbnail stores (or replaces) the thumbnail of the image under the
// sha256 hex digest; an error wrapping bot.ErrNotFound when the image is
// not stored (the foreign key refuses it). The row is deleted with the
// image (ON DELETE CASCADE).
func (db *DB) PutThumbnail(ctx context.Context, sha string, data []byte) error {
	wrap := func(err error) error { return fmt.Errorf("postgres: put thumbnail %s: %w", sha, err) }
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	if len(data) == 0 {
		return wrap(errors.New("no thumbnail bytes"))
	}
	_, err := db.pool.Exec(ctx, `INSERT INTO thumbnails (sha256, data) VALUES ($1, $2)
		ON CONFLICT (sha256) DO UPDATE SET data = EXCLUDED.data`, sha, data)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23503" { // foreign_key_violation: no such image
		err = bot.ErrNotFound
	}
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
	wrap := func(err error) error { return fmt.Errorf("postgres: %s %s: %w", op, key, err) }
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	if err := bot.CheckAddTurn(key, &t, data, job); err != nil {
		return nil, wrap(err)
	}
	msgs := slices.Clone(t.Messages)
	t.Messages = nil

	var out *bot.Conversation
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		c, err := lockConv(ctx, tx, key, true)
		if err != nil {
			return err
		}
		if c.Turn(t.ID) != nil {
			return fmt.Errorf("turn %s is already in the conversation", t.ID)
		}
		if err := addRef(ctx, tx, t.SHA256, data); err != nil {
			return err
		}
		c.Turns = append(c.Turns, t)
		if head {
			c.Head = t.ID
		}
		c.Updated = stamp(db.now())
		for _, m := range msgs {
			if _, err := attachMessage(ctx, tx, c, t.ID, m); err != nil {
				return err
			}
		}
		if err := db.prune(ctx, tx, c, t.ID); err != nil {
			return err
		}
		if out, err = putConv(ctx, tx, c); err != nil {
			return err
		}
		if job != nil {
			if err := putJob(ctx, tx, job); err != nil {
				return err
			}
		}
		if charge != nil {
			if err := addUsage(ctx, tx, charge); err != nil {
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
func (db *DB) prune(ctx context.Context, tx pgx.Tx, c *bot.Conversation, keep string) error {
	for _, old := range bot.PruneTurns(c, db.history, keep) {
		if _, err := dropRefs(ctx, tx, map[string]int64{old.SHA256: 1}); err != nil {
			return err
		}
		if _, err := dropMessages(ctx, tx, c.Key, old.ID, old.Messages); err != nil {
			return err
		}
	}
	return nil
}

// SetHead makes turn id the head of the conversation at key (undo). An
// unknown conversation or turn is an error wrapping bot.ErrNotFound.
func (db *DB) SetHead(ctx context.Context, key bot.ConvKey, id string) (*bot.Conversation, error) {
	wrap := func(err error) error { return fmt.Errorf("postgres: set head %s to %s: %w", key, id, err) }
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	var out *bot.Conversation
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		c, err := lockConv(ctx, tx, key, false)
		if err != nil {
			return err
		}
		if c.Turn(id) == nil {
			return fmt.Errorf("turn: %w", bot.ErrNotFound)
		}
		c.Head = id
		c.Turn(id).Hidden = false // shown again
		c.Updated = stamp(db.now())
		out, err = putConv(ctx, tx, c)
		return err
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
	wrap := func(err error) error { return fmt.Errorf("postgres: delete turn %s of %s: %w", id, key, err) }
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	var out *bot.Conversation
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		c, err := lockConv(ctx, tx, key, false)
		if err != nil {
			return err
		}
		gone, forget, err := bot.RemoveTurn(c, id)
		if err != nil {
			return err
		}
		drop := map[string]int64{}
		for _, g := range gone {
			drop[g.SHA256]++
			if _, err := dropMessages(ctx, tx, key, g.ID, g.Messages); err != nil {
				return err
			}
		}
		if _, err := dropRefs(ctx, tx, drop); err != nil {
			return err
		}
		if _, err := dropMessages(ctx, tx, key, id, forget); err != nil {
			return err
		}
		c.Updated = stamp(db.now())
		if len(c.Turns) == 0 {
			// Nothing left: the conversation goes, as if never started.
			out = &bot.Conversation{Key: key, Turns: []bot.Turn{}, Updated: c.Updated}
			_, err := tx.Exec(ctx, `DELETE FROM conversations
				WHERE platform = $1 AND workspace = $2 AND channel = $3 AND thread = $4`,
				key.Platform, key.Workspace, key.Channel, key.Thread)
			if err != nil {
				return fmt.Errorf("delete conversation: %w", err)
			}
			return nil
		}
		out, err = putConv(ctx, tx, c)
		return err
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
		return fmt.Errorf("postgres: add message %s to %s turn %s: %w", msgID, key, id, err)
	}
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	if msgID == "" {
		return wrap(errors.New("empty message id"))
	}
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		c, err := lockConv(ctx, tx, key, false)
		if err != nil {
			return err
		}
		changed, err := attachMessage(ctx, tx, c, id, msgID)
		if err != nil || !changed {
			return err
		}
		_, err = putConv(ctx, tx, c)
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
		return fmt.Errorf("postgres: message %s in %s/%s: %w", msgID, key.Platform, key.Workspace, err)
	}
	if err := ctx.Err(); err != nil {
		return bot.ConvKey{}, "", wrap(err)
	}
	if !validMessageKey(key) {
		return bot.ConvKey{}, "", wrap(errors.New("invalid conversation key"))
	}
	ck := bot.ConvKey{Platform: key.Platform, Workspace: key.Workspace}
	var id string
	var turns []byte
	err := db.pool.QueryRow(ctx, `
		SELECT m.channel, m.thread, m.turn, c.turns
		FROM messages m
		JOIN conversations c ON c.platform = m.platform AND c.workspace = m.workspace
			AND c.channel = m.channel AND c.thread = m.thread
		WHERE m.platform = $1 AND m.workspace = $2 AND m.msg_id = $3`,
		key.Platform, key.Workspace, msgID).Scan(&ck.Channel, &ck.Thread, &id, &turns)
	if errors.Is(err, pgx.ErrNoRows) {
		err = bot.ErrNotFound
	}
	if err != nil {
		return bot.ConvKey{}, "", wrap(err)
	}
	c := bot.Conversation{Key: ck}
	if err := json.Unmarshal(turns, &c.Turns); err != nil {
		return bot.ConvKey{}, "", wrap(fmt.Errorf("decode conversation %s: %w", ck, err))
	}
	if c.Turn(id) == nil {
		return bot.ConvKey{}, "", wrap(fmt.Errorf("turn %s: %w", id, bot.ErrNotFound))
	}
	return ck, id, nil
}

// --- helpers that run inside a transaction ---

// getConv reads the conversation at key, locking its row when lock is set.
func getConv(ctx context.Context, q querier, key bot.ConvKey, lock bool) (*bot.Conversation, error) {
	sql := `SELECT head, turns, updated FROM conversations
		WHERE platform = $1 AND workspace = $2 AND channel = $3 AND thread = $4`
	if lock {
		sql += ` FOR UPDATE`
	}
	c := &bot.Conversation{Key: key}
	var turns []byte
	err := q.QueryRow(ctx, sql, key.Platform, key.Workspace, key.Channel, key.Thread).Scan(&c.Head, &turns, &c.Updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, bot.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(turns, &c.Turns); err != nil {
		return nil, fmt.Errorf("decode conversation: %w", err)
	}
	c.Updated = c.Updated.UTC()
	return c, nil
}

// lockConv reads and locks the conversation at key for the rest of the
// transaction. When create is set, a conversation that does not exist is
// created empty (and so locked); otherwise it is bot.ErrNotFound.
func lockConv(ctx context.Context, tx pgx.Tx, key bot.ConvKey, create bool) (*bot.Conversation, error) {
	for {
		c, err := getConv(ctx, tx, key, true)
		if !errors.Is(err, bot.ErrNotFound) || !create {
			return c, err
		}
		// A concurrent creator may insert the row first: then this insert
		// waits for it, inserts nothing, and the loop locks its row.
		tag, err := tx.Exec(ctx, `INSERT INTO conversations (platform, workspace, channel, thread, head, turns, updated)
			VALUES ($1, $2, $3, $4, '', '[]', 'epoch') ON CONFLICT DO NOTHING`,
			key.Platform, key.Workspace, key.Channel, key.Thread)
		if err != nil {
			return nil, fmt.Errorf("create conversation: %w", err)
		}
		if tag.RowsAffected() == 1 {
			return &bot.Conversation{Key: key}, nil
		}
	}
}

// putConv writes c (whose row the transaction holds) and returns the stored
// state decoded afresh, so the caller's copy shares nothing with c and
// equals what a later read returns.
func putConv(ctx context.Context, tx pgx.Tx, c *bot.Conversation) (*bot.Conversation, error) {
	turns, err := json.Marshal(c.Turns)
	if err != nil {
		return nil, fmt.Errorf("encode conversation: %w", err)
	}
	updated := stamp(c.Updated)
	_, err = tx.Exec(ctx, `UPDATE conversations SET head = $5, turns = $6, updated = $7
		WHERE platform = $1 AND workspace = $2 AND channel = $3 AND thread = $4`,
		c.Key.Platform, c.Key.Workspace, c.Key.Channel, c.Key.Thread, c.Head, turns, updated)
	if err != nil {
		return nil, fmt.Errorf("put conversation: %w", err)
	}
	out := &bot.Conversation{Key: c.Key, Head: c.Head, Updated: updated}
	if err := json.Unmarshal(turns, &out.Turns); err != nil {
		return nil, fmt.Errorf("decode conversation: %w", err)
	}
	return out, nil
}

// addRef stores data under sha if it is new and counts one more reference
// to it. The bytes are only sent when the image is not stored yet.
func addRef(ctx context.Context, tx pgx.Tx, sha string, data []byte) error {
	tag, err := tx.Exec(ctx, `UPDATE images SET refs = refs + 1 WHERE sha256 = $1`, sha)
	if err != nil {
		return fmt.Errorf("count image %s: %w", sha, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	_, err = tx.Exec(ctx, `INSERT INTO images (sha256, data, refs) VALUES ($1, $2, 1)
		ON CONFLICT (sha256) DO UPDATE SET refs = images.refs + 1`, sha, data)
	if err != nil {
		return fmt.Errorf("put image %s: %w", sha, err)
	}
	return nil
}

// dropRefs counts n[sha] references fewer to each image and deletes the
// images none is left for, returning how many it deleted.
func dropRefs(ctx context.Context, tx pgx.Tx, n map[string]int64) (int, error) {
	if len(n) == 0 {
		return 0, nil
	}
	shas := make([]string, 0, len(n))
	for sha := range n {
		shas = append(shas, sha)
	}
	counts := make([]int64, len(shas))
	for i, sha := range shas {
		counts[i] = n[sha]
	}
	rows, err := tx.Query(ctx, `
		UPDATE images i SET refs = greatest(i.refs - d.n, 0)
		FROM unnest($1::text[], $2::bigint[]) AS d(sha, n)
		WHERE i.sha256 = d.sha
		RETURNING i.sha256, i.refs`, shas, counts)
	if err != nil {
		return 0, fmt.Errorf("uncount images: %w", err)
	}
	var gone []string
	for rows.Next() {
		var sha string
		var refs int64
		if err := rows.Scan(&sha, &refs); err != nil {
			rows.Close()
			return 0, fmt.Errorf("uncount images: %w", err)
		}
		if refs == 0 {
			gone = append(gone, sha)
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("uncount images: %w", err)
	}
	if len(gone) == 0 {
		return 0, nil
	}
	tag, err := tx.Exec(ctx, `DELETE FROM images WHERE sha256 = ANY($1) AND refs = 0`, gone)
	if err != nil {
		return 0, fmt.Errorf("delete images: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// validMessageKey reports whether key can name a message: a platform, and
// no '/' in platform or workspace (as the bbolt store requires).
func validMessageKey(key bot.ConvKey) bool {
	return key.Platform != "" && !strings.Contains(key.Platform, "/") && !strings.Contains(key.Workspace, "/")
}

// attachMessage maps msgID to turn id of c and lists it in that turn's
// Messages, trimming the oldest past MaxMessagesPerTurn. c (whose row the
// transaction holds) is changed in place and the caller stores it; a
// conversation other than c that loses the message is stored here. It
// reports whether c changed.
func attachMessage(ctx context.Context, tx pgx.Tx, c *bot.Conversation, id, msgID string) (bool, error) {
	t := c.Turn(id)
	if t == nil {
		return false, fmt.Errorf("turn %s: %w", id, bot.ErrNotFound)
	}
	if !validMessageKey(c.Key) {
		return false, errors.New("invalid conversation key")
	}
	k := c.Key
	for {
		var old bot.ConvKey
		var oldTurn string
		err := tx.QueryRow(ctx, `SELECT channel, thread, turn FROM messages
			WHERE platform = $1 AND workspace = $2 AND msg_id = $3 FOR UPDATE`,
			k.Platform, k.Workspace, msgID).Scan(&old.Channel, &old.Thread, &oldTurn)
		if errors.Is(err, pgx.ErrNoRows) {
			tag, err := tx.Exec(ctx, `INSERT INTO messages (platform, workspace, msg_id, channel, thread, turn)
				VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
				k.Platform, k.Workspace, msgID, k.Channel, k.Thread, id)
			if err != nil {
				return false, fmt.Errorf("put message %s: %w", msgID, err)
			}
			if tag.RowsAffected() == 1 {
				break
			}
			continue // inserted meanwhile by another transaction: lock and move it
		}
		if err != nil {
			return false, fmt.Errorf("read message %s: %w", msgID, err)
		}
		old.Platform, old.Workspace = k.Platform, k.Workspace
		switch {
		case old == k && oldTurn == id:
			if slices.Contains(t.Messages, msgID) {
				return false, nil // already recorded
			}
		case old == k:
			if ot := c.Turn(oldTurn); ot != nil {
				ot.Messages = slices.DeleteFunc(ot.Messages, func(m string) bool { return m == msgID })
			}
		default:
			oc, err := getConv(ctx, tx, old, true)
			switch {
			case errors.Is(err, bot.ErrNotFound):
			case err != nil:
				return false, err
			default:
				if ot := oc.Turn(oldTurn); ot != nil {
					ot.Messages = slices.DeleteFunc(ot.Messages, func(m string) bool { return m == msgID })
					if _, err := putConv(ctx, tx, oc); err != nil {
						return false, err
					}
				}
			}
		}
		_, err = tx.Exec(ctx, `UPDATE messages SET channel = $4, thread = $5, turn = $6
			WHERE platform = $1 AND workspace = $2 AND msg_id = $3`,
			k.Platform, k.Workspace, msgID, k.Channel, k.Thread, id)
		if err != nil {
			return false, fmt.Errorf("put message %s: %w", msgID, err)
		}
		break
	}
	t.Messages = slices.DeleteFunc(t.Messages, func(m string) bool { return m == msgID })
	t.Messages = append(t.Messages, msgID)
	if extra := len(t.Messages) - MaxMessagesPerTurn; extra > 0 {
		if _, err := dropMessages(ctx, tx, c.Key, id, t.Messages[:extra]); err != nil {
			return false, err
		}
		t.Messages = slices.Clone(t.Messages[extra:])
	}
	return true, nil
}

// dropMessages deletes the mappings of msgIDs that point to turn id of the
// conversation at key, returning how many it deleted.
func dropMessages(ctx context.Context, tx pgx.Tx, key bot.ConvKey, id string, msgIDs []string) (int, error) {
	if len(msgIDs) == 0 {
		return 0, nil
	}
	tag, err := tx.Exec(ctx, `DELETE FROM messages
		WHERE platform = $1 AND workspace = $2 AND msg_id = ANY($3)
		AND channel = $4 AND thread = $5 AND turn = $6`,
		key.Platform, key.Workspace, msgIDs, key.Channel, key.Thread, id)
	if err != nil {
		return 0, fmt.Errorf("delete messages: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
