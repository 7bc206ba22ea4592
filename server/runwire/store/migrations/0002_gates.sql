-- Human gates: a destructive action awaiting confirmation, an approval node,
-- a held model answer. A gate is decided once; the first decision stands.
CREATE TABLE gates (
    run_id        text NOT NULL,
    node_id       text NOT NULL,
    iteration     integer NOT NULL,
    kind          smallint NOT NULL,                 -- runwire.v1.GateKind number
    message       text NOT NULL,
    create_time   timestamptz NOT NULL DEFAULT now(),
    expire_time   timestamptz,
    decision      smallint,                          -- runwire.v1.GateDecision number; NULL while pending
    principal     text NOT NULL DEFAULT '',
    comment       text NOT NULL DEFAULT '',
    output_json   text NOT NULL DEFAULT '',
    resolve_time  timestamptz,
    PRIMARY KEY (run_id, node_id, iteration, kind)
);

CREATE INDEX gates_pending ON gates (run_id) WHERE decision IS NULL;
