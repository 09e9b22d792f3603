-- Sweeps of receivers into the treasury (Postgres ledger_entries of kind
-- sweep and sweep_gas): money moving between settle's own addresses, not a
-- decision about a session, so it sits beside ledger (whose kind enum, its
-- partition key, ClickHouse 18.16 cannot extend; see 0006). sweep: token
-- units from a receiver to the treasury; sweep_gas: native coin (wei) the
-- treasury sent the receiver to pay for it. A session's funds still in
-- its receiver: deposited (ledger) minus swept (here).
CREATE TABLE IF NOT EXISTS ledger_sweeps (
    entry_id     String,
    kind         Enum8('sweep' = 1, 'sweep_gas' = 2),
    session_id   String,
    merchant_id  String,
    chain_id     UInt64,
    token        String,
    symbol       String,
    decimals     UInt8,
    from_address String,
    to_address   String,
    tx_hash      String,
    block_number UInt64,
    amount_raw   String,
    amount       Decimal(38, 0) DEFAULT toDecimal128(if(length(amount_raw) <= 38, amount_raw, '0'), 0),
    event_time   DateTime,
    day          Date DEFAULT toDate(event_time),
    recorded_at  DateTime
) ENGINE = ReplacingMergeTree()
PARTITION BY kind
ORDER BY (kind, entry_id)
