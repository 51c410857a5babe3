package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"kontextbot/bot"
)

// Settings returns the workspace's stored overrides, or the zero value.
func (db *DB) Settings(ctx context.Context, platform, workspace string) (bot.WorkspaceSettings, error) {
	wrap := func(err error) error { return fmt.Errorf("postgres: settings %s/%s: %w", platform, workspace, err) }
	var s bot.WorkspaceSettings
	if err := ctx.Err(); err != nil {
		return s, wrap(err)
	}
	if platform == "" || strings.Contains(platform, "/") || strings.Contains(workspace, "/") {
		return s, wrap(errors.New("invalid platform"))
	}
	var raw []byte
	err := db.pool.QueryRow(ctx, `SELECT settings FROM workspace_settings WHERE platform = $1 AND workspace = $2`,
		platform, workspace).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, wrap(err)
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return bot.WorkspaceSettings{}, wrap(err)
	}
	return s, nil
}

// PutSettings replaces the workspace's overrides; an empty value deletes them.
func (db *DB) PutSettings(ctx context.Context, platform, workspace string, s bot.WorkspaceSettings) error {
	wrap := func(err error) error { return fmt.Errorf("postgres: put settings %s/%s: %w", platform, workspace, err) }
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	if platform == "" || strings.Contains(platform, "/") || strings.Contains(workspace, "/") {
		return wrap(errors.New("invalid platform"))
	}
	if s.Empty() {
		if _, err := db.pool.Exec(ctx, `DELETE FROM workspace_settings WHERE platform = $1 AND workspace = $2`, platform, workspace); err != nil {
			return wrap(err)
		}
		return nil
	}
	raw, err := json.Marshal(s)
	if err != nil {
		return wrap(err)
	}
	_, err = db.pool.Exec(ctx, `
		INSERT INTO workspace_settings (platform, workspace, settings, updated) VALUES ($1, $2, $3, $4)
		ON CONFLICT (platform, workspace) DO UPDATE SET settings = EXCLUDED.settings, updated = EXCLUDED.updated`,
		platform, workspace, string(raw), stamp(db.now()))
	if err != nil {
		return wrap(err)
	}
	return nil
}
