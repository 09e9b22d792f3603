// Package finance holds the finance team's ClickHouse queries (the README
// shows them) so tests can run them against real data on every ClickHouse
// version settle supports.
package finance

import _ "embed"

// Queries over the ledger, transfers and receivers tables.
var (
	//go:embed volume_per_day.sql
	VolumePerDay string
	//go:embed unaccounted_transfers.sql
	UnaccountedTransfers string
	//go:embed session_statement.sql
	SessionStatement string
)
