-- Operator actions on payouts (`settle payouts retry|abandon`): the
-- Postgres ledger_entries of kind operator, with who acted and why. They
-- move no money, so they have no amount. They sit beside ledger rather than
-- in it because ledger.kind is ledger's partition key, and ClickHouse 18.16
-- refuses any ALTER of a partition key column, even one that only adds an
-- Enum value. A session's whole history:
--   SELECT toString(kind), reason, entry_id, event_time FROM ledger FINAL WHERE session_id = 'S'
--   UNION ALL SELECT 'operator', reason, entry_id, event_time FROM ledger_operator FINAL WHERE session_id = 'S'
CREATE TABLE IF NOT EXISTS ledger_operator (
    entry_id     String,
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
    operator     String,
    note         String,
    event_time   DateTime,
    recorded_at  DateTime
) ENGINE = ReplacingMergeTree()
ORDER BY entry_id
