-- Which keystore holds each KEK version (e.g. "pkcs11:zkvault:<serial>", "soft:<file id>").
-- Versions are unique for the deployment's life across keystores; this column lets
-- `keys list` name the keystore and lets a start refuse a keystore whose versions collide.
ALTER TABLE keks ADD COLUMN keystore TEXT NOT NULL DEFAULT '';
