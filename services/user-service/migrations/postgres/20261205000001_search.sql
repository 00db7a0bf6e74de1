-- Indexed search (issue 13). `search` is a case-insensitive substring match on
-- lower(name) and lower(email); trigram GIN indexes on exactly those expressions
-- let PostgreSQL find the few matching rows of a selective term without reading
-- the table. Terms of fewer than 3 characters have no trigram: for them the
-- planner keeps walking the list index (newest first) and filtering, which stops
-- as soon as the page is full (see README, "Search").
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE INDEX users_live_name_trgm_idx ON users USING gin (lower(name) gin_trgm_ops) WHERE deleted_at IS NULL;
CREATE INDEX users_live_email_trgm_idx ON users USING gin (lower(email) gin_trgm_ops) WHERE deleted_at IS NULL;

-- Statistics on the searched expressions: a partial index gives the planner
-- none, and without them it cannot tell a term that matches one row from one
-- that matches every eighth, so it would pick the same plan for both.
CREATE STATISTICS users_lower_name_stats ON (lower(name)) FROM users;
CREATE STATISTICS users_lower_email_stats ON (lower(email)) FROM users;
ANALYZE users;
