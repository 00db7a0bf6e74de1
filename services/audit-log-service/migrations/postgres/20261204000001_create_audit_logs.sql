-- The audit log: one row per domain event, keyed by the event's id, so a
-- redelivered event is a no-op (INSERT ... ON CONFLICT (id) DO NOTHING).
-- actor_roles and payload are JSON text as received; query them with ::jsonb.
CREATE TABLE audit_logs (
    id            TEXT        PRIMARY KEY CHECK (length(id) = 36),
    action        TEXT        NOT NULL,
    actor_sub     TEXT        NOT NULL,
    actor_roles   TEXT        NOT NULL CHECK (actor_roles::json IS NOT NULL),
    resource_type TEXT        NOT NULL,
    resource_id   TEXT        NOT NULL,
    request_id    TEXT,
    occurred_at   TIMESTAMPTZ NOT NULL,
    payload       TEXT        NOT NULL CHECK (payload::json IS NOT NULL),
    recorded_at   TIMESTAMPTZ NOT NULL
);

-- Newest first, with the id as tie-breaker: the order of every listing and
-- the key of its cursor. Each filter leads an index in the same order, so a
-- filtered page is an index range scan too.
CREATE INDEX audit_logs_occurred_at_id_idx ON audit_logs (occurred_at DESC, id DESC);
CREATE INDEX audit_logs_actor_idx ON audit_logs (actor_sub, occurred_at DESC, id DESC);
CREATE INDEX audit_logs_action_idx ON audit_logs (action, occurred_at DESC, id DESC);
CREATE INDEX audit_logs_resource_idx ON audit_logs (resource_id, resource_type, occurred_at DESC, id DESC);

-- Append-only: no role may change or remove an entry, the owner included,
-- while this trigger is enabled. The service only ever inserts and reads.
--
-- Retention is a separate, privileged job, never the service: the table's
-- owner prunes in one transaction, whose exclusive lock means no other session
-- ever sees the trigger disabled. Run the service itself as another role, with
-- SELECT and INSERT on audit_logs (plus USAGE, CREATE on the schema and SELECT
-- on _sqlx_migrations for its start-up migration check), so it cannot do this:
--
--   BEGIN;
--   ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_append_only;
--   DELETE FROM audit_logs WHERE occurred_at < now() - interval '400 days';
--   ALTER TABLE audit_logs ENABLE TRIGGER audit_logs_append_only;
--   COMMIT;
CREATE FUNCTION audit_logs_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_logs_append_only
    BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_refuse_change();

-- TRUNCATE skips row triggers; refuse it as well.
CREATE TRIGGER audit_logs_no_truncate
    BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_refuse_change();
