-- The successor a rotation issued for a credential. The primary key makes a second rotation of
-- the same credential fail in the transaction that would record it: one successor at most.
CREATE TABLE IF NOT EXISTS credential_successors (
    id        TEXT PRIMARY KEY NOT NULL,
    successor TEXT NOT NULL
);
