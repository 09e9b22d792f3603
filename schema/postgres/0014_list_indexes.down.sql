DROP INDEX deposits_tx_hash_idx;
DROP INDEX sessions_metadata_idx;
DROP INDEX payments_merchant_status_list_idx;
DROP INDEX payments_merchant_list_idx;
DROP INDEX sessions_merchant_status_list_idx;
DROP INDEX sessions_merchant_list_idx;
CREATE INDEX sessions_merchant_created_idx ON sessions (merchant_id, created_at DESC);
