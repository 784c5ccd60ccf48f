-- Partner and device trust (DESIGN.md "Partner and device trust (v1)"). Anchors, CRLs and
-- partner certificates decide who may receive residents' records, so their rows are MACed like
-- credentials: a database writer cannot add an anchor or a partner of its own, swap a partner's
-- certificate or lift a revocation (revocations are also recorded in the keystore).
CREATE TABLE IF NOT EXISTS trust_anchors (
    domain     TEXT PRIMARY KEY NOT NULL,
    pem        TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    mac        BYTEA
);
-- An anchor replacement waiting for its second operator (dual control), MACed with the
-- approval's id: what the approver carries out is exactly what was requested.
CREATE TABLE IF NOT EXISTS trust_anchor_proposals (
    approval   TEXT PRIMARY KEY NOT NULL,
    domain     TEXT NOT NULL,
    pem        TEXT NOT NULL,
    mac        BYTEA
);
-- One CRL per issuing CA of a domain (issuer: SHA-256 of the DER of the CA's Name, hex).
CREATE TABLE IF NOT EXISTS trust_crls (
    domain      TEXT NOT NULL,
    issuer      TEXT NOT NULL,
    der         BYTEA NOT NULL,
    this_update BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    mac         BYTEA,
    PRIMARY KEY (domain, issuer)
);
-- Each certificate registered for a partner id is a new version; shares use the newest.
CREATE TABLE IF NOT EXISTS trust_partners (
    domain         TEXT NOT NULL,
    partner_id     TEXT NOT NULL,
    version        INTEGER NOT NULL,
    chain          TEXT NOT NULL,
    thumbprint     TEXT NOT NULL,
    key_desc       TEXT NOT NULL,
    not_before     BIGINT NOT NULL,
    not_after      BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    revoked_reason TEXT,
    revoked_at     BIGINT,
    mac            BYTEA,
    PRIMARY KEY (domain, partner_id, version)
);
-- One row per share: what went to which certificate, for whom (the resident's keyed audit
-- tag, never the ID) and when. Statistics for exposure reports; the audit trail's
-- trust.share entries, which are hash-chained, are the record.
CREATE TABLE IF NOT EXISTS share_receipts (
    jti          TEXT PRIMARY KEY NOT NULL,
    domain       TEXT NOT NULL,
    partner_id   TEXT NOT NULL,
    version      INTEGER NOT NULL,
    thumbprint   TEXT NOT NULL,
    namespace    TEXT NOT NULL,
    resident_tag TEXT NOT NULL,
    record_name  TEXT NOT NULL,
    revision     BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS share_receipts_partner ON share_receipts (domain, partner_id, version);
CREATE INDEX IF NOT EXISTS share_receipts_resident ON share_receipts (namespace, resident_tag);
-- Expiry warnings given, so each threshold is audited once across instances.
CREATE TABLE IF NOT EXISTS trust_expiry_warnings (
    domain     TEXT NOT NULL,
    partner_id TEXT NOT NULL,
    version    INTEGER NOT NULL,
    days       INTEGER NOT NULL,
    PRIMARY KEY (domain, partner_id, version, days)
);
-- The exposure report counts the audit trail's share entries per certificate version.
CREATE INDEX IF NOT EXISTS audit_trust_share ON audit (target) WHERE operation = 'trust.share';
