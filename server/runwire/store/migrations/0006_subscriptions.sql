-- Webhook subscriptions and their durable delivery state (SubscriptionService).
-- A subscription delivers the log entries after `delivered_pos` (a position of
-- the cross-run event log, 0005) that its filter selects. The batch in flight
-- is stored before its first POST, so a retry, by this replica or the one that
-- takes the lease over, sends the same body under the same webhook-id.
CREATE TABLE subscriptions (
    subscription_id        text PRIMARY KEY,
    target_url             text NOT NULL,
    filter                 bytea NOT NULL,            -- runwire.v1.RunEventsFilter, binary
    secret                 text NOT NULL,             -- whsec_<base64>
    start                  smallint NOT NULL,         -- runwire.v1.StreamStart number as asked
    state                  smallint NOT NULL,         -- runwire.v1.SubscriptionState number
    create_time            timestamptz NOT NULL DEFAULT now(),
    request_id             text UNIQUE,
    request_digest         text,
    principal              text NOT NULL DEFAULT '',
    delivered_pos          bigint NOT NULL,           -- log position after the last delivered event
    delivered_event_count  bigint NOT NULL DEFAULT 0,
    last_delivery_time     timestamptz,
    consecutive_failures   integer NOT NULL DEFAULT 0,
    last_error             text NOT NULL DEFAULT '',
    next_attempt_time      timestamptz NOT NULL DEFAULT now(),  -- backoff: no POST before it
    pending_id             text,                      -- webhook-id of the batch in flight
    pending_body           bytea,                     -- its exact body
    pending_through_pos    bigint,                    -- delivered_pos once it is acknowledged
    pending_event_count    integer,
    owner_id               text,                      -- the replica delivering it
    lease_expire_time      timestamptz
);

CREATE INDEX subscriptions_by_create_time ON subscriptions (create_time, subscription_id);
CREATE INDEX subscriptions_claimable ON subscriptions (lease_expire_time) WHERE state = 1;
