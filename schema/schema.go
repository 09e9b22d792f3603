// Package schema holds the numbered, embedded migrations for Postgres and
// ClickHouse and the runner that applies them.
//
// Postgres migrations are NNNN_name.up.sql (with a .down.sql beside them for
// operators); each runs in its own transaction. ClickHouse has no
// transactions, so each ClickHouse file holds exactly one idempotent statement
// (CREATE … IF NOT EXISTS) and must run unchanged on ClickHouse 18.16 and on
// current releases.
package schema

import "embed"

//go:embed postgres/*.sql
var postgresFS embed.FS

//go:embed clickhouse/*.sql
var clickhouseFS embed.FS
