-- Orders; see the PostgreSQL migration of the same version for the reasoning.
CREATE TABLE orders (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id            INTEGER NOT NULL CHECK (user_id > 0),
    product_id         TEXT    NOT NULL CHECK (length(product_id) BETWEEN 1 AND 64),
    quantity           INTEGER NOT NULL CHECK (quantity >= 1),
    total_price_cents  INTEGER NOT NULL CHECK (total_price_cents >= 0),
    status             TEXT    NOT NULL CHECK (status IN ('pending', 'confirmed', 'shipped', 'delivered', 'cancelled')),
    user_verified      BOOLEAN NOT NULL,
    status_reason      TEXT,
    created_at         TEXT    NOT NULL,
    updated_at         TEXT    NOT NULL,
    deleted_at         TEXT
);

CREATE INDEX orders_live_created_at_id_idx ON orders (created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX orders_live_user_id_idx ON orders (user_id) WHERE deleted_at IS NULL;
CREATE INDEX orders_unverified_idx ON orders (id) WHERE NOT user_verified AND deleted_at IS NULL;
