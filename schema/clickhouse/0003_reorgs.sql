-- One row per reorg an indexer handled: where the chains forked, how deep, and
-- the hashes of the old and new head at the fork's first block.
CREATE TABLE IF NOT EXISTS reorgs (
    chain_id      UInt64,
    detected_at   DateTime,
    fork_number   UInt64,
    depth         UInt32,
    old_hash      String,
    new_hash      String
) ENGINE = ReplacingMergeTree()
PARTITION BY chain_id
ORDER BY (chain_id, fork_number, old_hash, new_hash)
