-- Idempotency keys (the IETF draft "The Idempotency-Key HTTP Header Field"):
-- one row per (token subject, key). A request claims its key here first; the
-- write it performs fills in the answer in its own transaction; a repeat with the
-- same fingerprint gets that answer again. Rows expire after 24 h and are pruned.
CREATE TABLE idempotency_keys (
    subject         TEXT        NOT NULL,
    idempotency_key TEXT        NOT NULL,
    -- SHA-256 of method, path and body: a repeat must be the same request.
    fingerprint     TEXT        NOT NULL,
    -- Which request holds the claim (a UUID), so only it completes or releases it.
    claim           TEXT        NOT NULL,
    -- NULL while the first request is still running.
    response_status INTEGER,
    response_body   TEXT,
    claimed_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (subject, idempotency_key)
);

CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
