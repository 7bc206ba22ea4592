-- Runs, their event streams, and the leases replicas hold on them.
CREATE TABLE runs (
    run_id                text PRIMARY KEY,
    flow_name             text NOT NULL,
    flow_digest           text NOT NULL,
    flow                  jsonb NOT NULL,            -- proto3 JSON of runwire.v1.Flow
    inputs                jsonb NOT NULL,
    labels                jsonb NOT NULL DEFAULT '{}',
    request_id            text UNIQUE,
    request_digest        text,
    principal             text NOT NULL DEFAULT '',
    status                smallint NOT NULL,         -- runwire.v1.RunStatus number
    create_time           timestamptz NOT NULL DEFAULT now(),
    update_time           timestamptz NOT NULL DEFAULT now(),
    end_time              timestamptz,
    node_count            integer NOT NULL,
    succeeded_node_count  integer NOT NULL DEFAULT 0,
    failed_node_count     integer NOT NULL DEFAULT 0,
    skipped_node_count    integer NOT NULL DEFAULT 0,
    last_seq              bigint NOT NULL DEFAULT 0,
    error                 jsonb,                     -- {"reason", "message", "exit_code"}
    pause_requested       boolean NOT NULL DEFAULT false,
    cancel_requested      boolean NOT NULL DEFAULT false,
    control_principal     text NOT NULL DEFAULT '',
    control_reason        text NOT NULL DEFAULT '',
    owner_id              text,
    lease_expire_time     timestamptz
);

CREATE INDEX runs_by_create_time ON runs (create_time DESC, run_id DESC);
CREATE INDEX runs_by_labels ON runs USING gin (labels jsonb_path_ops);
CREATE INDEX runs_unfinished ON runs (lease_expire_time) WHERE end_time IS NULL;

-- One row per RunEvent, stored as its deterministic binary encoding so that
-- WatchRun can frame stored events without decoding them.
CREATE TABLE events (
    run_id  text NOT NULL,
    seq     bigint NOT NULL,
    kind    text NOT NULL,                           -- the oneof case, e.g. node_log
    event   bytea NOT NULL,
    PRIMARY KEY (run_id, seq)
);
