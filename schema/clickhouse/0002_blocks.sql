-- Every indexed block. The indexer checks each new block's parent hash against
-- the stored hash of its predecessor; an orphaned block gets a tombstone.
CREATE TABLE IF NOT EXISTS blocks (
    chain_id      UInt64,
    number        UInt64,
    hash          String,
    parent_hash   String,
    time          DateTime,
    transfers     UInt32,
    deleted       UInt8,
    version       UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY (chain_id, intDiv(number, 10000000))
ORDER BY (chain_id, number, hash)
