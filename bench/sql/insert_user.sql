-- pgbench: what POST /api/v1/users asks PostgreSQL (one INSERT ... RETURNING,
-- the partial unique index on email deciding duplicates). The email is unique
-- per pgbench run (-D tag=...), client (:client_id) and transaction (:n, a
-- per-client counter that persists across transactions; -D n=0), plus a random part.
\set n :n + 1
\set r random(1, 999999)
\set age random(1, 150)
INSERT INTO users (email, name, age, active, created_at, updated_at, deleted_at) VALUES ('p' || :tag || '-' || :client_id || '-' || :n || '-' || :r || '@bench.test', 'Bench User', :age, true, now(), now(), NULL) RETURNING id, email, name, age, active, created_at, updated_at, deleted_at;
