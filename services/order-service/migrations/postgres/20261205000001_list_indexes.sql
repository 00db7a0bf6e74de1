-- Lists at scale (issue 13): each filter of GET /api/v1/orders has an index in
-- the list's order (newest first, id as tie-breaker) over live rows, so a page
-- is read straight off the index however many orders there are. Orders of one
-- user is the most common query; its index also serves every other lookup by
-- user_id, so the plain user_id index goes.
CREATE INDEX orders_live_user_created_at_id_idx ON orders (user_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
DROP INDEX orders_live_user_id_idx;
CREATE INDEX orders_live_status_created_at_id_idx ON orders (status, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX orders_live_product_created_at_id_idx ON orders (product_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
