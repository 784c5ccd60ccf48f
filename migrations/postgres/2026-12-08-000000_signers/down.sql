DROP TABLE IF EXISTS signer_usage;
DROP TABLE IF EXISTS signer_keys;
