-- Dual control: an irreversible operation one operator asked for, waiting for a second one.
CREATE TABLE IF NOT EXISTS approvals (
    id           TEXT PRIMARY KEY NOT NULL,
    operation    TEXT NOT NULL,
    namespace    TEXT NOT NULL,
    version      BIGINT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    decided_by   TEXT,
    decided_at   BIGINT
);
