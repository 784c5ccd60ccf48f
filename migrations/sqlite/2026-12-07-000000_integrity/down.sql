DROP TABLE audit_marks;
DROP TABLE audit_manifests;
DROP TABLE integrity_key;
ALTER TABLE approvals DROP COLUMN mac;
ALTER TABLE audit_heads DROP COLUMN mac;
ALTER TABLE keks DROP COLUMN mac;
ALTER TABLE masters DROP COLUMN mac;
ALTER TABLE credentials DROP COLUMN mac;
ALTER TABLE credentials DROP COLUMN rotated_from;
