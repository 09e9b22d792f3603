-- Sweeps move credited, final deposits from their receivers to the
-- treasury: the treasury tops up the receiver's gas (gas_*; skipped when
-- the receiver already holds enough), then the receiver transfers the
-- token (nonce, tx_hash, raw_tx). Like a payout, every transaction is
-- signed and stored before it is broadcast, and re-broadcast byte for byte.
-- At most one open sweep per receiver and chain, so the receiver's nonces
-- never race.
CREATE TABLE sweeps (
    id               bigserial PRIMARY KEY,
    chain_id         bigint NOT NULL,
    receiver_id      bigint NOT NULL REFERENCES receivers (id),
    receiver_address text NOT NULL,
    token            text NOT NULL,
    amount           numeric(78, 0) NOT NULL CHECK (amount > 0),
    -- pending: to top up or sign; gas_sent: top-up signed and sent;
    -- sent: the receiver's transfer signed and sent; mined: its receipt
    -- succeeded (watched until final); confirmed: final, on the ledger;
    -- needs_attention: the reason is in error.
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'gas_sent', 'sent', 'mined', 'confirmed', 'needs_attention')),
    gas_amount       numeric(78, 0),
    gas_nonce        bigint,
    gas_tx_hash      text,
    gas_raw_tx       bytea,
    nonce            bigint,
    tx_hash          text,
    raw_tx           bytea,
    receipt_block_number bigint,
    receipt_block_hash   text,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    confirmed_at     timestamptz
);
CREATE UNIQUE INDEX sweeps_open_receiver_idx ON sweeps (chain_id, receiver_id)
    WHERE status NOT IN ('confirmed', 'needs_attention');
CREATE INDEX sweeps_open_idx ON sweeps (chain_id) WHERE status NOT IN ('confirmed', 'needs_attention');
-- The sweep that moved a deposit; NULL while it sits in its receiver.
ALTER TABLE deposits ADD COLUMN sweep_id bigint REFERENCES sweeps (id);
CREATE INDEX deposits_unswept_idx ON deposits (chain_id, receiver_id)
    WHERE credited AND status = 'final' AND sweep_id IS NULL;
ALTER TABLE ledger_entries
    DROP CONSTRAINT ledger_entries_kind_check,
    ADD CONSTRAINT ledger_entries_kind_check
        CHECK (kind IN ('deposit', 'exception', 'unapply', 'delivery', 'refund', 'operator', 'sweep', 'sweep_gas'));
