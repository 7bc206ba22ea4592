-- An AI node's visit may hold several tool calls, one after another, each at
-- its own confirmation gate: the call is part of a gate's key. call_index
-- counts the visit's held tool calls from 1 (the engine's run state folds the
-- same count); -1 is a gate that holds no tool call. tool_call_id is the
-- model's id, by which ConfirmAction names a call; context_json is what the
-- engine needs to go on after the decision on another server without asking
-- the model again (the conversation as it crossed the boundary, and the
-- turn's remaining calls).
ALTER TABLE gates ADD COLUMN call_index integer NOT NULL DEFAULT -1;
ALTER TABLE gates ADD COLUMN tool_call_id text NOT NULL DEFAULT '';
ALTER TABLE gates ADD COLUMN context_json text NOT NULL DEFAULT '';
ALTER TABLE gates DROP CONSTRAINT gates_pkey;
ALTER TABLE gates ADD PRIMARY KEY (run_id, node_id, iteration, kind, item_index, call_index);
