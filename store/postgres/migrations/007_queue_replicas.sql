-- 007: the replicas running the shared queue (Queue.Work), as the database
-- knows them: each renews its row with its leases (seen_until, by the
-- database's clock) and deletes it when it stops; a row past seen_until
-- is a replica that died. The count of live rows sets each replica's fair
-- share of the slots, which bounds how many slots a replica keeps for
-- itself when it gives one back (Queue.FreeSlotNext).
CREATE TABLE queue_replicas (
    replica    text        PRIMARY KEY,
    seen_until timestamptz NOT NULL
);
