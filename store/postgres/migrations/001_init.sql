-- 001: conversations and their images, platform messages, jobs, usage and
-- claims: the same records as the bbolt store (see the package comment).

-- A conversation's chain of turns is one JSON array (bot.Turn objects,
-- oldest first), read and written whole as bbolt does; the row is the unit
-- of locking (SELECT ... FOR UPDATE) for every write to the conversation.
-- json, not jsonb: it keeps the text as written, including \u0000.
CREATE TABLE conversations (
    platform  text        NOT NULL,
    workspace text        NOT NULL,
    channel   text        NOT NULL,
    thread    text        NOT NULL,
    head      text        NOT NULL,
    turns     json        NOT NULL,
    updated   timestamptz NOT NULL,
    PRIMARY KEY (platform, workspace, channel, thread)
);
-- The retention sweep finds idle conversations by this index.
CREATE INDEX conversations_updated ON conversations (updated);

-- Image bytes, stored once per content. refs is the number of turns, across
-- every conversation, whose sha256 this is; the row exists exactly while it
-- is above zero.
CREATE TABLE images (
    sha256 text   PRIMARY KEY,
    data   bytea  NOT NULL,
    refs   bigint NOT NULL CHECK (refs >= 0)
);
-- PNG and JPEG bytes do not compress: keep them out of line without trying.
ALTER TABLE images ALTER COLUMN data SET STORAGE EXTERNAL;

-- Platform message -> turn. The key starts with platform and workspace, so
-- a lookup from one workspace never finds another's message; the row exists
-- exactly while msg_id is listed in the Messages of the turn it names.
CREATE TABLE messages (
    platform  text NOT NULL,
    workspace text NOT NULL,
    msg_id    text NOT NULL,
    channel   text NOT NULL,
    thread    text NOT NULL,
    turn      text NOT NULL,
    PRIMARY KEY (platform, workspace, msg_id)
);
CREATE INDEX messages_conversation ON messages (platform, workspace, channel, thread);

-- Jobs: data is the whole bot.Job as JSON; state, created and updated are
-- copies for the indexes.
CREATE TABLE jobs (
    id      text        PRIMARY KEY,
    state   text        NOT NULL,
    created timestamptz NOT NULL,
    updated timestamptz NOT NULL,
    data    json        NOT NULL
);
-- LiveJobs reads live jobs only, through this index; finished jobs (the
-- vast majority) are never scanned. The state list is bot.JobState.Live.
CREATE INDEX jobs_live ON jobs (created, id) WHERE state IN ('waiting', 'submitted', 'posting');
-- The retention sweep finds old finished jobs by this one.
CREATE INDEX jobs_finished ON jobs (updated) WHERE state NOT IN ('waiting', 'submitted', 'posting');

-- Usage per user per UTC day and per workspace per UTC month.
CREATE TABLE usage_day (
    platform  text             NOT NULL,
    workspace text             NOT NULL,
    user_id   text             NOT NULL,
    day       date             NOT NULL,
    images    bigint           NOT NULL,
    spend     double precision NOT NULL,
    PRIMARY KEY (platform, workspace, user_id, day)
);
CREATE TABLE usage_month (
    platform  text             NOT NULL,
    workspace text             NOT NULL,
    month     date             NOT NULL, -- the first day of the month
    images    bigint           NOT NULL,
    spend     double precision NOT NULL,
    PRIMARY KEY (platform, workspace, month)
);

-- Claims of events, commands and interactions: the first claimant acts.
CREATE TABLE claims (
    key     text        PRIMARY KEY,
    expires timestamptz NOT NULL
);
CREATE INDEX claims_expires ON claims (expires);
