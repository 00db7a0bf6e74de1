-- Idempotency keys; see the PostgreSQL migration of the same version.
CREATE TABLE idempotency_keys (
    subject         TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    fingerprint     TEXT    NOT NULL,
    claim           TEXT    NOT NULL,
    response_status INTEGER,
    response_body   TEXT,
    claimed_at      TEXT    NOT NULL,
    expires_at      TEXT    NOT NULL,
    PRIMARY KEY (subject, idempotency_key)
);

CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
