-- Tamper-evident audit trail: hash chains (one per concurrent writer) and MACed checkpoints.
-- No column holds a resident ID or a blind index: `resident_tag` is a short keyed tag.

CREATE TABLE IF NOT EXISTS audit (
    id           BIGSERIAL PRIMARY KEY,  -- global append order, for paging
    chain        TEXT COLLATE "C" NOT NULL,
    seq          BIGINT NOT NULL,
    at           BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    operation    TEXT NOT NULL,
    namespace    TEXT NOT NULL,
    target       TEXT NOT NULL,
    resident_tag TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    detail       TEXT NOT NULL,
    prev_hash    BYTEA NOT NULL,
    hash         BYTEA NOT NULL,
    CONSTRAINT audit_position UNIQUE (chain, seq)
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at);

-- The tip of every chain; appends lock their chain's row until they commit.
CREATE TABLE IF NOT EXISTS audit_heads (
    chain TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    seq   BIGINT NOT NULL,
    hash  BYTEA NOT NULL
);

CREATE TABLE IF NOT EXISTS audit_checkpoints (
    id          BIGSERIAL PRIMARY KEY,
    chain       TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    kek_version INTEGER NOT NULL,
    mac         BYTEA NOT NULL
);
