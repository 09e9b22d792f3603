DROP TABLE IF EXISTS outbox, payment_methods, receivers, sessions, api_keys, merchants;
DROP SEQUENCE IF EXISTS receiver_derivation_index_seq;
DROP TYPE IF EXISTS session_status;
