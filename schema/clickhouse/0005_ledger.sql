-- Every attribution decision, so finance can see why a session is in its
-- state: deposit (credited), exception (not credited, with its reason),
-- unapply (a reorg removed a deposit), delivery and refund (payouts seen
-- final on chain). entry_id is deterministic per decision, so a replayed
-- decision collapses into the same row.
CREATE TABLE IF NOT EXISTS ledger (
    entry_id     String,
    kind         Enum8('deposit' = 1, 'exception' = 2, 'unapply' = 3, 'delivery' = 4, 'refund' = 5),
    reason       String,
    session_id   String,
    merchant_id  String,
    chain_id     UInt64,
    token        String,
    symbol       String,
    decimals     UInt8,
    from_address String,
    to_address   String,
    tx_hash      String,
    log_index    UInt32,
    block_number UInt64,
    amount_raw   String,
    amount       Decimal(38, 0) DEFAULT toDecimal128(if(length(amount_raw) <= 38, amount_raw, '0'), 0),
    -- event_time is the block time of the transfer the entry is about.
    event_time   DateTime,
    day          Date DEFAULT toDate(event_time),
    recorded_at  DateTime
) ENGINE = ReplacingMergeTree()
PARTITION BY kind
ORDER BY (kind, entry_id)
