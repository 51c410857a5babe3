-- 003: a running job whose prediction is final gives its slot back before
-- it ends (kontext.WithSlotRelease): it still counts against its user's
-- running cap and holds its serial until it is released.
ALTER TABLE queue_jobs ADD COLUMN slot_free boolean NOT NULL DEFAULT false;
