-- The audit log; see the PostgreSQL migration of the same version for the reasoning.
-- Timestamps are RFC 3339 text in UTC (as sqlx writes them), which sorts in time order.
CREATE TABLE audit_logs (
    id            TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    action        TEXT NOT NULL,
    actor_sub     TEXT NOT NULL,
    actor_roles   TEXT NOT NULL CHECK (json_valid(actor_roles)),
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    request_id    TEXT,
    occurred_at   TEXT NOT NULL,
    payload       TEXT NOT NULL CHECK (json_valid(payload)),
    recorded_at   TEXT NOT NULL
);

CREATE INDEX audit_logs_occurred_at_id_idx ON audit_logs (occurred_at DESC, id DESC);
CREATE INDEX audit_logs_actor_idx ON audit_logs (actor_sub, occurred_at DESC, id DESC);
CREATE INDEX audit_logs_action_idx ON audit_logs (action, occurred_at DESC, id DESC);
CREATE INDEX audit_logs_resource_idx ON audit_logs (resource_id, resource_type, occurred_at DESC, id DESC);

-- Append-only. Retention on SQLite (a single process owns the file): with the
-- service stopped, in one transaction drop these triggers, delete the old rows
-- and create the triggers again from this file.
CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs
BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only: UPDATE refused');
END;

CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs
BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only: DELETE refused');
END;
