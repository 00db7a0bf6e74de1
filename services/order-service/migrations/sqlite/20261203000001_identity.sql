-- Who created and last changed each order: the token's subject (a user id or a
-- client id); NULL for rows from before identity existed.
ALTER TABLE orders ADD COLUMN created_by TEXT;
ALTER TABLE orders ADD COLUMN updated_by TEXT;
