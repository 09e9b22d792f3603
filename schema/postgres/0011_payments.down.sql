DROP TABLE idempotency_keys;
DROP INDEX sessions_merchant_external_id_idx;
ALTER TABLE sessions DROP COLUMN checkout, DROP COLUMN external_id, DROP COLUMN payment_id;
