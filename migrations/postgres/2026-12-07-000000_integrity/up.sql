-- Rows that grant power carry an HMAC under the deployment's integrity key, which is stored
-- only wrapped under a KEK: a database writer can edit them but cannot make them authentic.
-- The service fills the column for existing rows once, at its first start on this version.
ALTER TABLE credentials ADD COLUMN mac BYTEA;
ALTER TABLE masters ADD COLUMN mac BYTEA;
ALTER TABLE keks ADD COLUMN mac BYTEA;
-- Each chain's head too: a chain forged, rewritten or cut short after the newest checkpoint
-- cannot carry an authentic head.
ALTER TABLE audit_heads ADD COLUMN mac BYTEA;
-- And dual control's approvals: a forged one would let one operator carry out a shred.
ALTER TABLE approvals ADD COLUMN mac BYTEA;
-- The credential a rotation replaced, inside the successor's MACed row: dual control tells
-- one holder's rotated credentials apart from a second operator by this, not by
-- credential_successors, whose rows a writer could delete.
ALTER TABLE credentials ADD COLUMN rotated_from TEXT;
UPDATE credentials SET rotated_from =
    (SELECT s.id FROM credential_successors s WHERE s.successor = credentials.id);
CREATE TABLE IF NOT EXISTS integrity_key (
    id          INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    kek_version INTEGER NOT NULL,
    wrapped     BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Audit checkpoints chained: each MACs the digest of every chain's head at that moment, the
-- heads that moved since the previous one, and the previous checkpoint's digest. The newest
-- is also anchored in the keystore. `rollback_from` marks the first checkpoint after an
-- operator acknowledged a database rolled back from checkpoint N.
CREATE TABLE IF NOT EXISTS audit_manifests (
    counter       BIGINT PRIMARY KEY NOT NULL,
    at            BIGINT NOT NULL,
    prev          BYTEA NOT NULL,
    heads_digest  BYTEA NOT NULL,
    moved         BYTEA NOT NULL,
    rollback_from BIGINT,
    mac           BYTEA NOT NULL
);
-- Every chain's head as the newest checkpoint saw it (checked against its heads_digest).
CREATE TABLE IF NOT EXISTS audit_marks (
    chain TEXT PRIMARY KEY NOT NULL,
    seq   BIGINT NOT NULL,
    hash  BYTEA NOT NULL
);
