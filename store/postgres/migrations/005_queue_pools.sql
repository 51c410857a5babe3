-- 005: slot pools per model (issue 13). Slots is the account's limit of
-- active tasks; a job also counts against its model's pool (BFL: 24 per
-- account, flux-kontext-max 6 of them), '' for the account's only.
-- queue_pools records a pool slowed down after a 429: none of its jobs
-- starts before slow_until (by the database's clock).
ALTER TABLE queue_jobs ADD COLUMN pool text NOT NULL DEFAULT '';
CREATE TABLE queue_pools (
    pool       text        PRIMARY KEY,
    slow_until timestamptz NOT NULL
);
