-- Indexed search (issue 13); see the PostgreSQL migration of the same version.
-- An FTS5 index with the trigram tokenizer (case-insensitive) over name and
-- email, kept in step with `users` by triggers. A search term of 3 or more
-- characters is looked up in it and the candidates are then held to the exact
-- rule (LOWER(...) LIKE); shorter terms use the LIKE filter alone.
CREATE VIRTUAL TABLE users_search USING fts5(
    name, email, content = 'users', content_rowid = 'id', tokenize = 'trigram'
);
INSERT INTO users_search (users_search) VALUES ('rebuild');

CREATE TRIGGER users_search_insert AFTER INSERT ON users BEGIN
    INSERT INTO users_search (rowid, name, email) VALUES (new.id, new.name, new.email);
END;

CREATE TRIGGER users_search_delete AFTER DELETE ON users BEGIN
    INSERT INTO users_search (users_search, rowid, name, email)
        VALUES ('delete', old.id, old.name, old.email);
END;

CREATE TRIGGER users_search_update AFTER UPDATE OF name, email ON users BEGIN
    INSERT INTO users_search (users_search, rowid, name, email)
        VALUES ('delete', old.id, old.name, old.email);
    INSERT INTO users_search (rowid, name, email) VALUES (new.id, new.name, new.email);
END;
