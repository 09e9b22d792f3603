-- Indexes of the list endpoints (GET /v1/sessions, GET /api/payments), so
-- each filter reaches its rows without reading the merchant's other
-- sessions and a page costs the same at ten million sessions as at a
-- thousand. Pages are keyset-paginated on (created_at, id), newest first;
-- id breaks the ties of created_at, which has whole seconds.
--
-- This one replaces (merchant_id, created_at DESC), its prefix.
DROP INDEX sessions_merchant_created_idx;
CREATE INDEX sessions_merchant_list_idx ON sessions (merchant_id, created_at DESC, id DESC);
-- A status filter walks one range of this per stored status.
CREATE INDEX sessions_merchant_status_list_idx ON sessions (merchant_id, status, created_at DESC, id DESC);
-- The Payments API's list sees only payments: partial indexes, so a
-- merchant with many Sessions API sessions and few payments does not walk
-- past the former.
CREATE INDEX payments_merchant_list_idx ON sessions (merchant_id, created_at DESC, id DESC)
    WHERE payment_id IS NOT NULL;
CREATE INDEX payments_merchant_status_list_idx ON sessions (merchant_id, status, created_at DESC, id DESC)
    WHERE payment_id IS NOT NULL;
-- metadata[key]=value: containment on {"<merchant_id>": metadata}, so the
-- index finds the pair among this merchant's sessions only (orderId=1 is
-- in every merchant's metadata). jsonb_path_ops hashes whole paths, which
-- is all containment needs, and is smaller than the default opclass.
-- jsonb_set, unlike jsonb_build_object, is immutable and can be indexed.
CREATE INDEX sessions_metadata_idx ON sessions
    USING gin ((jsonb_set('{}'::jsonb, ARRAY[merchant_id], metadata)) jsonb_path_ops);
-- Deposit transaction hash. (The receiver address filter uses receivers'
-- UNIQUE (family, address), externalId the unique (merchant_id,
-- external_id) of 0011: EVM addresses and hashes are stored lowercase, so
-- no lower() index is needed.)
CREATE INDEX deposits_tx_hash_idx ON deposits (tx_hash);
