-- Identity; see the PostgreSQL migration of the same version.
ALTER TABLE users ADD COLUMN password_hash TEXT CHECK (password_hash LIKE '$argon2id$%');
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin'));
ALTER TABLE users ADD COLUMN created_by TEXT;
ALTER TABLE users ADD COLUMN updated_by TEXT;
