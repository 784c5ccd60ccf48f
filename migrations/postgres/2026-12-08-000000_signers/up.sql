-- Signing keys (DESIGN.md "Signing (v1)"): one row per signer version. The private half is on
-- the token (token_id: its CKA_ID) or sealed under a KEK (kek_version, wrapped); the row holds
-- the public key and is MACed like every row that grants power: a database writer cannot
-- publish a key of its own, revive a compromised one or move one to another signer.
CREATE TABLE IF NOT EXISTS signer_keys (
    signer      TEXT NOT NULL,
    version     INTEGER NOT NULL,
    alg         TEXT NOT NULL,
    kid         TEXT NOT NULL,
    public_key  BYTEA NOT NULL,
    token_id    BYTEA,
    kek_version INTEGER,
    wrapped     BYTEA,
    state       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    activate_at BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    retire_at   BIGINT,
    certificate TEXT,
    mac         BYTEA,
    PRIMARY KEY (signer, version)
);
-- Signatures made per version, added up by each instance about once a second: statistics for
-- the signer overview, not a control (no MAC; the audit trail records each signature).
CREATE TABLE IF NOT EXISTS signer_usage (
    signer     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    signatures BIGINT NOT NULL,
    PRIMARY KEY (signer, version)
);
