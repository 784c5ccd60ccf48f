-- zkvault storage, PostgreSQL. No column ever holds a resident ID or plaintext.
-- Timestamps are BIGINT unix milliseconds supplied by the application.
-- Text keys use COLLATE "C" so ordering and uniqueness are bytewise, as on SQLite.

CREATE TABLE IF NOT EXISTS keks (
    version      INTEGER PRIMARY KEY,
    state        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    retired_at   BIGINT NULL,
    destroyed_at BIGINT NULL
);

CREATE TABLE IF NOT EXISTS masters (
    namespace      TEXT COLLATE "C" NOT NULL,
    version        INTEGER NOT NULL,
    state          TEXT NOT NULL,
    compromised_at BIGINT NULL,
    kek_version    INTEGER NOT NULL,
    wrapped        BYTEA NULL,
    salt           BYTEA NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (namespace, version)
);

CREATE TABLE IF NOT EXISTS index_keys (
    namespace   TEXT COLLATE "C" PRIMARY KEY,
    kek_version INTEGER NOT NULL,
    wrapped     BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS records (
    id              BYTEA PRIMARY KEY NOT NULL CHECK (octet_length(id) = 16),
    namespace       TEXT COLLATE "C" NOT NULL,
    blind_index     BYTEA NOT NULL,
    name            TEXT COLLATE "C" NOT NULL,
    format          INTEGER NOT NULL,
    master_version  INTEGER NOT NULL,
    dek_nonce       BYTEA NOT NULL,
    wrapped_dek     BYTEA NOT NULL,
    body_nonce      BYTEA NOT NULL,
    body_ciphertext BYTEA NOT NULL,
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
    id          TEXT COLLATE "C" PRIMARY KEY,
    label       TEXT NOT NULL,
    roles       TEXT NOT NULL,
    namespaces  TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NULL,
    revoked_at  BIGINT NULL
);
