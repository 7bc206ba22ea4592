-- Fan-out items each have their own confirmation gate: the item is part of a
-- gate's key. -1 is the node's own gate (every gate before fan-out).
ALTER TABLE gates ADD COLUMN item_index integer NOT NULL DEFAULT -1;
ALTER TABLE gates DROP CONSTRAINT gates_pkey;
ALTER TABLE gates ADD PRIMARY KEY (run_id, node_id, iteration, kind, item_index);
