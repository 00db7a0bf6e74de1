-- pgbench: what GET /api/v1/users/{id} asks PostgreSQL. -D users=N.
\set id random(1, :users)
SELECT id, email, name, age, active, created_at, updated_at, deleted_at FROM users WHERE id = :id AND deleted_at IS NULL;
