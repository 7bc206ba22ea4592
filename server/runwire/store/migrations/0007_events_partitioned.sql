-- The events table, partitioned, so that retention drops whole partitions
-- instead of deleting rows (a DELETE of old events leaves dead tuples and
-- index bloat behind that only VACUUM FULL gives back).
--
-- The scheme: RANGE on run_id, one partition per UTC day of run creation.
-- Run ids are `run_` + a UUIDv7 in hex from this migration on (rpc/_service.py
-- via store/_partitions.py): its first 12 hex digits are the run's creation
-- time in milliseconds, so the ids of the runs created in one day form one
-- range, and every event of a run lands in its run's day. The writer and the
-- readers still address `events` by run_id only (a lookup by run_id is pruned
-- to one partition, and (run_id, seq) stays the primary key); nothing but
-- store/_partitions.py names a partition. Why not a time column: the writer
-- would have to carry each run's creation time into every insert, and a
-- partition by insert time would split a run's events over days, so no day
-- could be dropped while any run that wrote into it is kept.
--
-- events_default catches every other id: runs created before this migration
-- (random uuid4 ids), and a day whose partition is not there yet. So an
-- insert never fails; the server creates day partitions ahead of time and
-- moves rows of a new day's range out of the default when it creates one.
-- Retention deletes the events of pruned runs row by row only in the default
-- partition; a day partition is dropped once no run in its range is left.
--
-- The copy is generic: the new table is made LIKE the old one, so whatever
-- columns earlier migrations added come along with their defaults, sequences
-- and identities, and the old table's constraints, indexes and triggers are
-- made again from their definitions. Grants are not copied: the role that
-- migrates owns the new table, as it owned the old one.
DO $migration$
DECLARE
    cols text;
    r record;
    defs text[] := '{}';
    def text;
BEGIN
    CREATE TABLE events_partitioned (
        LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED
            INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMPRESSION INCLUDING COMMENTS
            INCLUDING STATISTICS
    ) PARTITION BY RANGE (run_id);
    CREATE TABLE events_default PARTITION OF events_partitioned DEFAULT;

    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
    FROM pg_attribute
    WHERE attrelid = 'events'::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
    EXECUTE format(
        'INSERT INTO events_partitioned (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM events',
        cols, cols);

    -- Serial columns: their sequences move to the new table (dropping the old
    -- one would drop them). Identity columns: the new table has its own
    -- sequence, which continues after the largest value copied.
    FOR r IN
        SELECT d.objid::regclass AS seq, a.attname, d.deptype
        FROM pg_depend d
        JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.refobjid = 'events'::regclass
          AND d.deptype IN ('a', 'i')
    LOOP
        IF r.deptype = 'a' THEN
            EXECUTE format('ALTER SEQUENCE %s OWNED BY events_partitioned.%I', r.seq, r.attname);
        ELSE
            EXECUTE format(
                'SELECT setval(pg_get_serial_sequence(%L, %L), COALESCE(max(%I), 0) + 1, false) FROM events_partitioned',
                'events_partitioned', r.attname, r.attname);
        END IF;
    END LOOP;

    -- Constraints (primary key, unique, exclusion), then the other indexes and
    -- the triggers, as they are defined on the old table. A unique index must
    -- include run_id on a partitioned table; one that does not fails here,
    -- loudly, rather than being made non-unique.
    FOR r IN
        SELECT conname, pg_get_constraintdef(oid) AS d FROM pg_constraint
        WHERE conrelid = 'events'::regclass AND contype IN ('p', 'u', 'x')
    LOOP
        defs := defs || format('ALTER TABLE events ADD CONSTRAINT %I %s', r.conname, r.d);
    END LOOP;
    FOR r IN
        SELECT pg_get_indexdef(indexrelid) AS d FROM pg_index
        WHERE indrelid = 'events'::regclass
          AND indexrelid NOT IN (SELECT conindid FROM pg_constraint WHERE conrelid = 'events'::regclass)
    LOOP
        defs := defs || r.d;
    END LOOP;
    FOR r IN
        SELECT pg_get_triggerdef(oid) AS d FROM pg_trigger
        WHERE tgrelid = 'events'::regclass AND NOT tgisinternal
    LOOP
        defs := defs || r.d;
    END LOOP;

    DROP TABLE events;
    ALTER TABLE events_partitioned RENAME TO events;
    FOREACH def IN ARRAY defs LOOP
        EXECUTE def;
    END LOOP;
END
$migration$;

-- Retention finds finished runs by their end.
CREATE INDEX runs_finished ON runs (end_time) WHERE end_time IS NOT NULL;
