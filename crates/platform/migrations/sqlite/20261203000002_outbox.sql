-- The transactional outbox; see the PostgreSQL migration of the same version.
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT    NOT NULL UNIQUE,
    subject      TEXT    NOT NULL,
    event        TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    published_at TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX outbox_unpublished_idx ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
