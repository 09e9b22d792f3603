-- The reconciler's progress per chain: the last block whose transfers it
-- attributed, and that block's hash, to notice when a reorg replaced it.
CREATE TABLE reconciler_cursors (
    chain_id    bigint PRIMARY KEY,
    number      bigint NOT NULL,
    hash        text NOT NULL,
    -- Time of that block: the expiry loop only expires sessions whose
    -- deadline every chain's reconciler has passed, so a deposit made in
    -- time is never lost to an expiry persisted before it was attributed.
    block_time  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every transfer that reached one of our receivers, under its natural key,
-- so it is applied exactly once whatever restarts or concurrent reconcilers
-- do. credited says whether it counts toward its session; when it does not,
-- exception says why (wrong_token, late, after_session_finished, ...).
-- A deposit a reorg removed before it was final becomes orphaned and stops
-- counting.
CREATE TYPE deposit_status AS ENUM ('seen', 'final', 'orphaned');

CREATE TABLE deposits (
    id            bigserial PRIMARY KEY,
    chain_id      bigint NOT NULL,
    block_number  bigint NOT NULL,
    block_hash    text NOT NULL,
    block_time    timestamptz NOT NULL,
    tx_hash       text NOT NULL,
    log_index     integer NOT NULL,
    token         text NOT NULL,
    from_address  text NOT NULL,
    to_address    text NOT NULL,
    amount        numeric(78, 0) NOT NULL CHECK (amount >= 0),
    receiver_id   bigint NOT NULL REFERENCES receivers (id),
    session_id    text NOT NULL REFERENCES sessions (id),
    status        deposit_status NOT NULL DEFAULT 'seen',
    credited      boolean NOT NULL,
    exception     text,
    seen_at       timestamptz NOT NULL DEFAULT now(),
    final_at      timestamptz,
    orphaned_at   timestamptz,
    UNIQUE (chain_id, block_hash, tx_hash, log_index),
    CHECK (credited = (exception IS NULL))
);
CREATE INDEX deposits_session_idx ON deposits (session_id);
CREATE INDEX deposits_pending_idx ON deposits (chain_id, block_number) WHERE status = 'seen';

-- Outgoing transfers from the treasury: the delivery to the merchant's
-- destination, or the refund of a bounced session. At most one of each per
-- session. The signed transaction is stored before it is broadcast, so a
-- restart re-broadcasts the same bytes instead of paying twice.
CREATE TABLE payouts (
    id             bigserial PRIMARY KEY,
    session_id     text NOT NULL REFERENCES sessions (id),
    kind           text NOT NULL CHECK (kind IN ('delivery', 'refund')),
    chain_id       bigint NOT NULL,
    token          text NOT NULL,
    to_address     text NOT NULL,
    amount         numeric(78, 0) NOT NULL CHECK (amount > 0),
    calldata       text,
    -- pending: to sign; sent: signed, stored and broadcast; mined: its
    -- receipt succeeded; reverted: its receipt failed; confirmed: the
    -- indexer saw the transfer and it is final.
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'sent', 'mined', 'reverted', 'confirmed')),
    from_address   text,
    -- With calldata the treasury first approves the destination contract
    -- (approve_*), then calls it (nonce, tx_hash, raw_tx).
    approve_nonce   bigint,
    approve_tx_hash text,
    approve_raw_tx  bytea,
    nonce          bigint,
    tx_hash        text,
    raw_tx         bytea,
    -- Hashes of earlier signings of the same nonce (fee bumps of a stuck
    -- transaction): any of them may be the one that gets mined.
    prior_tx_hashes text[] NOT NULL DEFAULT '{}',
    -- After a reverted call, the approval is revoked (approve 0) so the
    -- destination can never pull the amount later, when it is refunded.
    revoke_nonce    bigint,
    revoke_tx_hash  text,
    revoke_raw_tx   bytea,
    -- The transfer the indexer saw for the mined transaction, and what it
    -- delivered; confirmed once that block is final.
    seen_tx_hash      text,
    seen_block_number bigint,
    seen_block_hash   text,
    seen_block_time   timestamptz,
    received       numeric(78, 0),
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    confirmed_at   timestamptz,
    UNIQUE (session_id, kind)
);
CREATE INDEX payouts_open_idx ON payouts (chain_id) WHERE status IN ('pending', 'sent');
-- Reverted calls whose approval still has to be revoked.
CREATE INDEX payouts_revoke_idx ON payouts (chain_id)
    WHERE status = 'reverted' AND calldata IS NOT NULL AND (revoke_tx_hash IS NULL OR revoke_raw_tx IS NOT NULL);

-- The next nonce of each treasury account per chain, taken under a row lock
-- so concurrent executors never sign two transactions with one nonce.
CREATE TABLE treasury_nonces (
    chain_id    bigint NOT NULL,
    address     text NOT NULL,
    next_nonce  bigint NOT NULL,
    PRIMARY KEY (chain_id, address)
);

-- Ledger entries are written here in the same transaction as the decision
-- they record, then copied to ClickHouse's ledger table (the copy may repeat:
-- entry_id is the key there). Postgres keeps them too.
CREATE TABLE ledger_entries (
    id            bigserial PRIMARY KEY,
    entry_id      text NOT NULL UNIQUE,
    kind          text NOT NULL CHECK (kind IN ('deposit', 'exception', 'unapply', 'delivery', 'refund')),
    reason        text NOT NULL DEFAULT '',
    session_id    text NOT NULL,
    merchant_id   text NOT NULL,
    chain_id      bigint NOT NULL,
    token         text NOT NULL,
    symbol        text NOT NULL,
    decimals      smallint NOT NULL,
    from_address  text NOT NULL,
    to_address    text NOT NULL,
    tx_hash       text NOT NULL,
    log_index     integer NOT NULL DEFAULT 0,
    block_number  bigint NOT NULL DEFAULT 0,
    amount        numeric(78, 0) NOT NULL,
    event_time    timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    copied_at     timestamptz
);
CREATE INDEX ledger_entries_uncopied_idx ON ledger_entries (id) WHERE copied_at IS NULL;
