package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"kontextbot/bot"
)

// Batch sizes of the retention sweep: each batch is one short transaction,
// so the sweep never holds many locks or a long snapshot while the bot
// serves.
const (
	sweepConvBatch = 200
	sweepRowBatch  = 1000
)

// The sweep's queries: each takes the cut-off time and the batch size, and
// finds its rows through an index (conversations_updated, jobs_finished,
// claims_expires).
const (
	sweepConvsSQL = `SELECT platform, workspace, channel, thread, turns FROM conversations
		WHERE updated < $1 ORDER BY updated LIMIT $2 FOR UPDATE SKIP LOCKED`
	sweepJobsSQL = `DELETE FROM jobs WHERE id IN (
		SELECT id FROM jobs WHERE state NOT IN ('waiting', 'submitted', 'posting') AND updated < $1
		LIMIT $2 FOR UPDATE SKIP LOCKED)`
	sweepClaimsSQL = `DELETE FROM claims WHERE key IN (
		SELECT key FROM claims WHERE expires <= $1
		LIMIT $2 FOR UPDATE SKIP LOCKED)`
)

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

// Sweep is the retention pass. It removes every conversation whose Updated
// is before idleBefore, with its message mappings and its references to
// images (deleting images nothing refers to any more), every job that is
// no longer live and whose Updated is before idleBefore, and every claim
// expired by the store's clock. Usage records are kept.
//
// It works in small batches, each its own transaction, and skips rows
// another transaction holds (a conversation being written is not idle), so
// several replicas may sweep at once. On error, including ctx ending, the
// batches already committed stay removed and the stats count them.
func (db *DB) Sweep(ctx context.Context, idleBefore time.Time) (SweepStats, error) {
	wrap := func(err error) error {
		return fmt.Errorf("postgres: sweep before %s: %w", idleBefore.Format(time.RFC3339), err)
	}
	var st SweepStats
	if err := ctx.Err(); err != nil {
		return st, wrap(err)
	}
	for {
		n, err := db.sweepConversations(ctx, idleBefore, &st)
		if err != nil {
			return st, wrap(err)
		}
		if n < sweepConvBatch {
			break
		}
	}
	for {
		n, err := db.sweepRows(ctx, sweepJobsSQL, stamp(idleBefore))
		if err != nil {
			return st, wrap(fmt.Errorf("jobs: %w", err))
		}
		st.Jobs += n
		if n < sweepRowBatch {
			break
		}
	}
	now := stamp(db.now())
	for {
		n, err := db.sweepRows(ctx, sweepClaimsSQL, now)
		if err != nil {
			return st, wrap(fmt.Errorf("claims: %w", err))
		}
		st.Claims += n
		if n < sweepRowBatch {
			break
		}
	}
	return st, nil
}

// sweepRows runs one batch delete (sql takes the cut-off time and the
// batch size) and returns how many rows it removed.
func (db *DB) sweepRows(ctx context.Context, sql string, before time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	tag, err := db.pool.Exec(ctx, sql, before, sweepRowBatch)
	if err != nil {
		return 0, err
	}
	return int(tag.RowsAffected()), nil
}

// sweepConversations removes one batch of idle conversations with their
// messages and image references, adds what it removed to st, and returns
// how many conversations the batch held.
func (db *DB) sweepConversations(ctx context.Context, idleBefore time.Time, st *SweepStats) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var batch SweepStats
	n := 0
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		batch, n = SweepStats{}, 0
		rows, err := tx.Query(ctx, sweepConvsSQL, stamp(idleBefore), sweepConvBatch)
		if err != nil {
			return fmt.Errorf("find idle conversations: %w", err)
		}
		var p, w, c, t []string
		refs := map[string]int64{}
		for rows.Next() {
			var k bot.ConvKey
			var turns []byte
			if err := rows.Scan(&k.Platform, &k.Workspace, &k.Channel, &k.Thread, &turns); err != nil {
				rows.Close()
				return err
			}
			var ts []bot.Turn
			if err := json.Unmarshal(turns, &ts); err != nil {
				rows.Close()
				return fmt.Errorf("decode conversation %s: %w", k, err)
			}
			for _, turn := range ts {
				refs[turn.SHA256]++
			}
			p, w, c, t = append(p, k.Platform), append(w, k.Workspace), append(c, k.Channel), append(t, k.Thread)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("find idle conversations: %w", err)
		}
		n = len(p)
		if n == 0 {
			return nil
		}
		const keys = `unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS k(p, w, c, t)`
		tag, err := tx.Exec(ctx, `DELETE FROM messages m USING `+keys+`
			WHERE m.platform = k.p AND m.workspace = k.w AND m.channel = k.c AND m.thread = k.t`, p, w, c, t)
		if err != nil {
			return fmt.Errorf("delete messages: %w", err)
		}
		batch.Messages = int(tag.RowsAffected())
		if batch.Images, err = dropRefs(ctx, tx, refs); err != nil {
			return err
		}
		tag, err = tx.Exec(ctx, `DELETE FROM conversations x USING `+keys+`
			WHERE x.platform = k.p AND x.workspace = k.w AND x.channel = k.c AND x.thread = k.t`, p, w, c, t)
		if err != nil {
			return fmt.Errorf("delete conversations: %w", err)
		}
		batch.Conversations = int(tag.RowsAffected())
		return nil
	})
	if err != nil {
		return 0, err
	}
	st.Conversations += batch.Conversations
	st.Images += batch.Images
	st.Messages += batch.Messages
	return n, nil
}
