-- Rows that grant power carry an HMAC under the deployment's integrity key, which is stored
-- only wrapped under a KEK: a database writer can edit them but cannot make them authentic.
-- The service fills the column for existing rows once, at its first start on this version.
ALTER TABLE credentials ADD COLUMN mac BLOB;
ALTER TABLE masters ADD COLUMN mac BLOB;
ALTER TABLE keks ADD COLUMN mac BLOB;
CREATE TABLE IF NOT EXISTS integrity_key (
    id          INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    kek_version INTEGER NOT NULL,
    wrapped     BLOB NOT NULL,
    created_at  BIGINT NOT NULL
);
