-- A payment (the Payments API) is a session seen through another API: the
-- same receivers, deposits, payouts, ledger and expiry, so there is one
-- lifecycle and one state machine. These columns hold only what the
-- Payments API adds: its public id, the merchant's externalId, and what the
-- hosted checkout page shows (logo, items, preferred chains and tokens,
-- payment options, redirect URI).
ALTER TABLE sessions
    ADD COLUMN payment_id  text UNIQUE CHECK (payment_id ~ '^[1-9A-HJ-NP-Za-km-z]{32,44}$'),
    ADD COLUMN external_id text CHECK (external_id IS NULL OR payment_id IS NOT NULL),
    ADD COLUMN checkout    jsonb;
-- Repeating a create with one externalId returns the first payment: this
-- index is what makes that hold under concurrent creates (NULLs are
-- distinct, so payments without an externalId never collide).
CREATE UNIQUE INDEX sessions_merchant_external_id_idx ON sessions (merchant_id, external_id);

-- Idempotency-Key: the first response to a POST is stored and replayed for
-- 24 hours. scope is whoever authenticated the request (a merchant, or a
-- session's client secret), so one merchant's keys never meet another's.
-- The row is inserted in the same transaction as the request's effect, so a
-- crash leaves either both or neither, and a concurrent request with the
-- same key waits on the row instead of doing the work again.
CREATE TABLE idempotency_keys (
    scope         text NOT NULL,
    key           text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash  bytea NOT NULL CHECK (length(request_hash) = 32),
    status        integer NOT NULL,
    content_type  text NOT NULL,
    body          bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
