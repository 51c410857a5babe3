-- 003: per-workspace settings (settings.go): an admin's overrides of the
-- environment's limits, allowed channels and default model, one row per
-- workspace, as a bot.WorkspaceSettings JSON object (json keeps the
-- difference between a null and an empty channel list). No row: none.
CREATE TABLE workspace_settings (
    platform  text        NOT NULL,
    workspace text        NOT NULL,
    settings  json        NOT NULL,
    updated   timestamptz NOT NULL,
    PRIMARY KEY (platform, workspace)
);
