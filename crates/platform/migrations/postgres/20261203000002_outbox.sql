-- The transactional outbox: each state change writes its event here in the
-- same transaction; the relay publishes rows in `seq` order and marks them,
-- and prunes published rows after the retention period.
CREATE TABLE outbox (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     TEXT        NOT NULL UNIQUE,
    subject      TEXT        NOT NULL,
    event        TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ,
    attempts     INTEGER     NOT NULL DEFAULT 0
);

-- The relay's queue: small, because published rows leave it.
CREATE INDEX outbox_unpublished_idx ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
