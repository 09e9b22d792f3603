-- Every token transfer of every indexed chain, one row per (chain, block hash,
-- tx hash, log index) and version. Re-inserting a batch writes identical rows
-- (same key, same content), so FINAL results never change. A reorg writes a
-- tombstone: the same key with a higher version and deleted = 1.
-- Addresses and hashes are in their chain's canonical text form (lowercase
-- 0x-hex on EVM, base58 on Tron and Solana) so analysts can paste them.
-- amount_raw always holds the exact decimal value; amount is the same value as
-- a number (computed by the server from amount_raw) while amount_overflow = 0,
-- and 0 for the few (spam) amounts beyond Decimal(38, 0).
-- The partition is a function of the sorting key: merges never cross
-- partitions, so a tombstone always meets the row it replaces.
CREATE TABLE IF NOT EXISTS transfers (
    chain_id         UInt64,
    block_number     UInt64,
    block_hash       String,
    block_time       DateTime,
    tx_hash          String,
    log_index        UInt32,
    token            String,
    from_address     String,
    to_address       String,
    amount_raw       String,
    amount_overflow  UInt8,
    amount           Decimal(38, 0) DEFAULT toDecimal128(if(amount_overflow = 0, amount_raw, '0'), 0),
    deleted          UInt8,
    version          UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY (chain_id, intDiv(block_number, 10000000))
ORDER BY (chain_id, block_number, block_hash, tx_hash, log_index)
