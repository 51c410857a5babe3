-- 002: the shared fair queue (queue.go). A row is a job that holds or waits
-- for one of the API key's slots, across every replica; it is deleted when
-- the job gives its slot back or is cancelled while waiting.
CREATE TABLE queue_jobs (
    id          text        PRIMARY KEY,
    user_id     text        NOT NULL,
    serial      text        NOT NULL, -- a conversation: one job at a time, in order; '' for none
    seq         bigserial   NOT NULL, -- submission order, across replicas
    state       text        NOT NULL CHECK (state IN ('waiting', 'running')),
    owner       text,                 -- the replica running it
    lease_until timestamptz,          -- the owner's lease, by the database's clock
    cancel      boolean     NOT NULL DEFAULT false, -- cancel asked while running
    submitted   timestamptz NOT NULL DEFAULT now(),
    started     timestamptz
);
CREATE INDEX queue_jobs_owner ON queue_jobs (owner) WHERE state = 'running';

-- Round-robin between users: last_served is the value of queue_turns when
-- the user was last given a slot. The row goes when the user has no job
-- left, so a returning user is served at the next slot, as in kontext.Queue.
CREATE TABLE queue_users (
    user_id     text   PRIMARY KEY,
    last_served bigint NOT NULL
);
CREATE SEQUENCE queue_turns;
