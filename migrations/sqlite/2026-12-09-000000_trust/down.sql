DROP INDEX IF EXISTS audit_trust_share;
DROP TABLE IF EXISTS trust_expiry_warnings;
DROP TABLE IF EXISTS share_receipts;
DROP TABLE IF EXISTS trust_partners;
DROP TABLE IF EXISTS trust_crls;
DROP TABLE IF EXISTS trust_anchor_proposals;
DROP TABLE IF EXISTS trust_anchors;
