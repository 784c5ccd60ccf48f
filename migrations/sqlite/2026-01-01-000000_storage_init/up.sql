-- zkvault storage, SQLite. No column ever holds a resident ID or plaintext.
-- Timestamps are BIGINT unix milliseconds supplied by the application.
-- SQLite compares TEXT bytewise (BINARY collation), matching COLLATE "C" on PostgreSQL.

CREATE TABLE IF NOT EXISTS keks (
    version      INTEGER PRIMARY KEY NOT NULL,
    state        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    retired_at   BIGINT NULL,
    destroyed_at BIGINT NULL
);

CREATE TABLE IF NOT EXISTS masters (
    namespace      TEXT NOT NULL,
    version        INTEGER NOT NULL,
    state          TEXT NOT NULL,
    compromised_at BIGINT NULL,
    kek_version    INTEGER NOT NULL,
    wrapped        BLOB NULL,
    salt           BLOB NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (namespace, version)
);

CREATE TABLE IF NOT EXISTS index_keys (
    namespace   TEXT PRIMARY KEY NOT NULL,
    kek_version INTEGER NOT NULL,
    wrapped     BLOB NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS records (
    id              BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16),
    namespace       TEXT NOT NULL,
    blind_index     BLOB NOT NULL,
    name            TEXT NOT NULL,
    format          INTEGER NOT NULL,
    master_version  INTEGER NOT NULL,
    dek_nonce       BLOB NOT NULL,
    wrapped_dek     BLOB NOT NULL,
    body_nonce      BLOB NOT NULL,
    body_ciphertext BLOB NOT NULL,
    content_type    TEXT NOT NULL,
    plaintext_len   BIGINT NOT NULL,
    revision        BIGINT NOT NULL,
    etag            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    CONSTRAINT records_resident_name UNIQUE (namespace, blind_index, name)
);

CREATE INDEX IF NOT EXISTS records_by_master ON records (namespace, master_version);

CREATE TABLE IF NOT EXISTS credentials (
    id          TEXT PRIMARY KEY NOT NULL,
    label       TEXT NOT NULL,
    roles       TEXT NOT NULL,
    namespaces  TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NULL,
    revoked_at  BIGINT NULL
);
