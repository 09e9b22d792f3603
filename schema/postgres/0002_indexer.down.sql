DROP TABLE IF EXISTS indexer_orphans, indexer_blocks, indexer_cursors;
DROP SEQUENCE IF EXISTS clickhouse_version_seq;
