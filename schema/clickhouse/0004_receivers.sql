-- Mirror of Postgres receivers, so finance can join transfers to sessions and
-- merchants inside ClickHouse. Postgres is the source of truth; the API
-- re-sends rows that failed to mirror, which is harmless (same key).
CREATE TABLE IF NOT EXISTS receivers (
    family            Enum8('evm' = 1, 'tron' = 2, 'solana' = 3),
    address           String,
    derivation_index  UInt64,
    session_id        String,
    merchant_id       String,
    created_at        DateTime,
    version           UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY family
ORDER BY (family, address)
