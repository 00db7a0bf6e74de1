-- Identity: a password (argon2id PHC string; NULL until one is set, and such a
-- user cannot log in), a role, and who created and last changed the row (the
-- token's subject: a user id or a client id).
ALTER TABLE users ADD COLUMN password_hash TEXT CHECK (password_hash LIKE '$argon2id$%');
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin'));
ALTER TABLE users ADD COLUMN created_by TEXT;
ALTER TABLE users ADD COLUMN updated_by TEXT;
