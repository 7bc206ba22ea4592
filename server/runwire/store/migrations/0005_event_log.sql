-- The event log across runs: every event gets a position in commit order
-- (events.pos), assigned by the writer's commit statement from the one-row
-- counter below. The counter row's lock is held from the UPDATE to the COMMIT,
-- so positions are taken in the order transactions commit and every
-- uncommitted position is above every committed one: a reader that has seen
-- position N can never later find a committed event below N (see
-- runwire/store/_log.py). Positions of events stored before this migration
-- are assigned in order of their runs' creation.
CREATE TABLE event_log_head (
    one             boolean PRIMARY KEY DEFAULT true CHECK (one),
    pos             bigint NOT NULL,     -- the newest position assigned by a committed writer
    pruned_through  bigint NOT NULL DEFAULT 0  -- retention deleted events at or below it
);

ALTER TABLE events ADD COLUMN pos bigint;

UPDATE events AS e SET pos = o.pos
FROM (
    SELECT e2.run_id, e2.seq,
           row_number() OVER (ORDER BY r.create_time, e2.run_id, e2.seq) AS pos
    FROM events e2 JOIN runs r USING (run_id)
) AS o
WHERE e.run_id = o.run_id AND e.seq = o.seq;

-- Events of a run row that no longer exists (none are expected) go last.
UPDATE events SET pos = s.base + s.n
FROM (
    SELECT run_id, seq, row_number() OVER (ORDER BY run_id, seq) AS n,
           (SELECT COALESCE(max(pos), 0) FROM events) AS base
    FROM events WHERE pos IS NULL
) AS s
WHERE events.run_id = s.run_id AND events.seq = s.seq;

ALTER TABLE events ALTER COLUMN pos SET NOT NULL;

INSERT INTO event_log_head (pos) SELECT COALESCE(max(pos), 0) FROM events;

-- Not unique: a unique index on a partitioned events table would have to
-- include the partition key; the writer's counter keeps positions distinct.
CREATE INDEX events_by_pos ON events (pos);
