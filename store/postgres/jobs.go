package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"kontextbot/bot"
)

// PutJob creates or replaces a job.
func (db *DB) PutJob(ctx context.Context, j *bot.Job) error {
	if j == nil {
		return errors.New("postgres: put job: nil job")
	}
	wrap := func(err error) error { return fmt.Errorf("postgres: put job %s: %w", j.ID, err) }
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	if j.ID == "" {
		return wrap(errors.New("job has no id"))
	}
	if err := db.inTx(ctx, func(tx pgx.Tx) error { return putJob(ctx, tx, j) }); err != nil {
		return wrap(err)
	}
	return nil
}

// Job returns the job with id, or an error wrapping bot.ErrNotFound.
func (db *DB) Job(ctx context.Context, id string) (*bot.Job, error) {
	wrap := func(err error) error { return fmt.Errorf("postgres: job %s: %w", id, err) }
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	var data []byte
	err := db.pool.QueryRow(ctx, `SELECT data FROM jobs WHERE id = $1`, id).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		err = bot.ErrNotFound
	}
	if err != nil {
		return nil, wrap(err)
	}
	var j bot.Job
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, wrap(fmt.Errorf("decode: %w", err))
	}
	return &j, nil
}

// liveJobsSQL reads the live jobs (bot.JobState.Live); its condition must
// match the predicate of the jobs_live index for the planner to use it.
const liveJobsSQL = `SELECT id, data FROM jobs WHERE state IN ('waiting', 'submitted', 'posting') ORDER BY created, id`

// LiveJobs returns every waiting, submitted or posting job, ordered by
// Created and then by ID. It reads them through the jobs_live partial
// index: finished jobs are never scanned.
func (db *DB) LiveJobs(ctx context.Context) ([]*bot.Job, error) {
	wrap := func(err error) error { return fmt.Errorf("postgres: live jobs: %w", err) }
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	rows, err := db.pool.Query(ctx, liveJobsSQL)
	if err != nil {
		return nil, wrap(err)
	}
	var jobs []*bot.Job
	for rows.Next() {
		var id string
		var data []byte
		if err := rows.Scan(&id, &data); err != nil {
			rows.Close()
			return nil, wrap(err)
		}
		var j bot.Job
		if err := json.Unmarshal(data, &j); err != nil {
			rows.Close()
			return nil, wrap(fmt.Errorf("decode job %s: %w", id, err))
		}
		jobs = append(jobs, &j)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(err)
	}
	// The column holds microseconds; Created itself has nanoseconds.
	bot.SortJobs(jobs)
	return jobs, nil
}

// Usage returns the user's usage on the UTC day of at and the workspace's
// in the UTC month of at; zero values when nothing is recorded.
func (db *DB) Usage(ctx context.Context, platform, workspace, user string, at time.Time) (userDay, workspaceMonth bot.Usage, err error) {
	wrap := func(err error) error {
		return fmt.Errorf("postgres: usage %s/%s/%s: %w", platform, workspace, user, err)
	}
	if err := ctx.Err(); err != nil {
		return bot.Usage{}, bot.Usage{}, wrap(err)
	}
	day, month := usageDates(at)
	var dImages, mImages *int64
	var dSpend, mSpend *float64
	err = db.pool.QueryRow(ctx, `
		SELECT d.images, d.spend, m.images, m.spend
		FROM (SELECT 1) AS one
		LEFT JOIN usage_day d ON d.platform = $1 AND d.workspace = $2 AND d.user_id = $3 AND d.day = $4
		LEFT JOIN usage_month m ON m.platform = $1 AND m.workspace = $2 AND m.month = $5`,
		platform, workspace, user, day, month).Scan(&dImages, &dSpend, &mImages, &mSpend)
	if err != nil {
		return bot.Usage{}, bot.Usage{}, wrap(err)
	}
	if dImages != nil {
		userDay = bot.Usage{Images: int(*dImages), Spend: *dSpend}
	}
	if mImages != nil {
		workspaceMonth = bot.Usage{Images: int(*mImages), Spend: *mSpend}
	}
	return userDay, workspaceMonth, nil
}

// Claim records key as handled until now+ttl and reports whether this call
// is the first to claim it: false while an earlier claim, from any
// replica, has not expired. It is one statement, so of any number of
// concurrent claimants exactly one is first.
func (db *DB) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	wrap := func(err error) error { return fmt.Errorf("postgres: claim %s: %w", key, err) }
	if err := ctx.Err(); err != nil {
		return false, wrap(err)
	}
	if key == "" {
		return false, wrap(errors.New("empty key"))
	}
	now := stamp(db.now())
	var got string
	err := db.pool.QueryRow(ctx, `
		INSERT INTO claims (key, expires) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET expires = EXCLUDED.expires WHERE claims.expires <= $3
		RETURNING key`, key, stamp(now.Add(ttl)), now).Scan(&got)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, wrap(err)
	}
	return true, nil
}

// putJob writes j in tx.
func putJob(ctx context.Context, tx pgx.Tx, j *bot.Job) error {
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO jobs (id, state, created, updated, data) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, created = EXCLUDED.created,
			updated = EXCLUDED.updated, data = EXCLUDED.data`,
		j.ID, string(j.State), stamp(j.Created), stamp(j.Updated), data)
	if err != nil {
		return fmt.Errorf("put job %s: %w", j.ID, err)
	}
	return nil
}

// usageDates are the UTC day of at and the first day of its UTC month.
func usageDates(at time.Time) (day, month time.Time) {
	at = at.UTC()
	day = time.Date(at.Year(), at.Month(), at.Day(), 0, 0, 0, 0, time.UTC)
	month = time.Date(at.Year(), at.Month(), 1, 0, 0, 0, 0, time.UTC)
	return day, month
}

// addUsage adds one image at c.USD to the user/day and workspace/month
// records of c.At.
func addUsage(ctx context.Context, tx pgx.Tx, c *bot.Charge) error {
	day, month := usageDates(c.At)
	_, err := tx.Exec(ctx, `
		WITH d AS (
			INSERT INTO usage_day (platform, workspace, user_id, day, images, spend) VALUES ($1, $2, $3, $4, 1, $6)
			ON CONFLICT (platform, workspace, user_id, day)
			DO UPDATE SET images = usage_day.images + 1, spend = usage_day.spend + EXCLUDED.spend
		)
		INSERT INTO usage_month (platform, workspace, month, images, spend) VALUES ($1, $2, $5, 1, $6)
		ON CONFLICT (platform, workspace, month)
		DO UPDATE SET images = usage_month.images + 1, spend = usage_month.spend + EXCLUDED.spend`,
		c.Platform, c.Workspace, c.User, day, month, c.USD)
	if err != nil {
		return fmt.Errorf("add usage: %w", err)
	}
	return nil
}
