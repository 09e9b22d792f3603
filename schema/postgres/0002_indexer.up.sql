-- Indexer progress per chain. The cursor is the last block whose transfers
-- ClickHouse has accepted; it only ever moves after the write it covers.
CREATE TABLE indexer_cursors (
    chain_id    bigint PRIMARY KEY,
    number      bigint NOT NULL,
    hash        text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The hashes of the most recent blocks (up to the chain's maximum reorg
-- depth), to find the fork point when a new block's parent does not match.
CREATE TABLE indexer_blocks (
    chain_id     bigint NOT NULL,
    number       bigint NOT NULL,
    hash         text NOT NULL,
    parent_hash  text NOT NULL,
    PRIMARY KEY (chain_id, number)
);

-- Blocks a reorg orphaned whose ClickHouse rows still need tombstones. They
-- are recorded in the same transaction that moves the cursor back, so a crash
-- between the two steps can neither leave orphaned rows live nor lose them.
CREATE TABLE indexer_orphans (
    chain_id  bigint NOT NULL,
    number    bigint NOT NULL,
    hash      text NOT NULL,
    PRIMARY KEY (chain_id, number, hash)
);

-- Row versions for ClickHouse's ReplacingMergeTree tables: strictly
-- increasing across restarts, processes and clock changes, so a tombstone
-- always outranks the row it deletes and a re-index outranks the tombstone.
CREATE SEQUENCE clickhouse_version_seq AS bigint START 1;
