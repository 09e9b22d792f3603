-- Merchants and their API keys. Keys are stored only as SHA-256 digests:
-- the plaintext is printed once at creation and never again.
CREATE TABLE merchants (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    merchant_id  text NOT NULL REFERENCES merchants (id),
    key_hash     bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    -- The first characters of the key, so an operator can tell keys apart
    -- without the hash.
    prefix       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX api_keys_merchant_idx ON api_keys (merchant_id);

CREATE TYPE session_status AS ENUM (
    'requires_payment_method', 'waiting_payment', 'processing',
    'succeeded', 'bounced', 'expired'
);

CREATE TABLE sessions (
    id                  text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    merchant_id         text NOT NULL REFERENCES merchants (id),
    status              session_status NOT NULL,
    -- Destination exactly as the merchant created it; amount_units keeps the
    -- merchant's decimal string, amount_raw the exact smallest-unit integer.
    dest_type           text NOT NULL CHECK (dest_type IN ('evm', 'solana')),
    dest_address        text NOT NULL,
    dest_chain_id       bigint,
    dest_chain_name     text NOT NULL,
    dest_token_address  text NOT NULL,
    dest_token_symbol   text NOT NULL,
    dest_token_decimals smallint NOT NULL,
    dest_amount_units   text,
    dest_amount_raw     numeric(78, 0) CHECK (dest_amount_raw >= 0),
    dest_calldata       text,
    delivery_tx_hash    text,
    delivery_received_units text,
    display             jsonb NOT NULL,
    metadata            jsonb,
    refund_address      text,
    client_secret       text NOT NULL,
    created_at          timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (expires_at > created_at)
);
CREATE INDEX sessions_merchant_created_idx ON sessions (merchant_id, created_at DESC);
-- The expiry loop only looks at sessions that can still expire.
CREATE INDEX sessions_open_expiry_idx ON sessions (expires_at)
    WHERE status IN ('requires_payment_method', 'waiting_payment');

-- Receiver addresses are derived from the master key at a BIP-32 index drawn
-- from this sequence. A sequence never hands out the same value twice, even
-- across crashes and concurrent transactions, so an address is never reused;
-- a gap (a rolled-back transaction) only wastes an index.
CREATE SEQUENCE receiver_derivation_index_seq AS bigint MINVALUE 0 START 0 MAXVALUE 2147483647 NO CYCLE;

CREATE TABLE receivers (
    id                bigserial PRIMARY KEY,
    family            text NOT NULL CHECK (family IN ('evm', 'tron', 'solana')),
    -- Canonical text form: lowercase 0x-hex for EVM, base58 for Tron/Solana.
    address           text NOT NULL,
    derivation_index  bigint NOT NULL,
    session_id        text NOT NULL REFERENCES sessions (id),
    merchant_id       text NOT NULL REFERENCES merchants (id),
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- Set once the row is in ClickHouse's receivers table; the mirror loop
    -- retries rows where it is still null.
    mirrored_at       timestamptz,
    UNIQUE (family, address),
    UNIQUE (family, derivation_index)
);
CREATE INDEX receivers_unmirrored_idx ON receivers (id) WHERE mirrored_at IS NULL;

CREATE TABLE payment_methods (
    id           bigserial PRIMARY KEY,
    session_id   text NOT NULL REFERENCES sessions (id),
    type         text NOT NULL CHECK (type IN ('evm', 'tron', 'solana', 'fiat')),
    receiver_id  bigint REFERENCES receivers (id),
    fiat_method  text,
    created_at   timestamptz NOT NULL,
    -- Detected deposit (filled by the reconciler).
    source       jsonb
);
CREATE INDEX payment_methods_session_idx ON payment_methods (session_id, id DESC);

-- Every state change a merchant can observe is written here in the same
-- transaction as the change; webhook delivery reads from it.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    merchant_id  text NOT NULL REFERENCES merchants (id),
    topic        text NOT NULL,
    subject_id   text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX outbox_undelivered_idx ON outbox (id) WHERE delivered_at IS NULL;
