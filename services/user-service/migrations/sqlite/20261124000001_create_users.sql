-- Users; see the PostgreSQL migration of the same version for the reasoning.
-- Timestamps are RFC 3339 text in UTC, which sorts chronologically.
CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    email       TEXT    NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    name        TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 400),
    age         INTEGER NOT NULL CHECK (age BETWEEN 1 AND 150),
    active      BOOLEAN NOT NULL DEFAULT 1,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    deleted_at  TEXT
);

CREATE UNIQUE INDEX users_email_live_key ON users (email) WHERE deleted_at IS NULL;

CREATE INDEX users_live_created_at_id_idx ON users (created_at DESC, id DESC) WHERE deleted_at IS NULL;
