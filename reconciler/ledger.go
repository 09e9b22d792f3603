package reconciler

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/internal/store"
)

// entry is one ledger line: a decision about one transfer or payout.
type entry struct {
	EntryID     string
	Kind        string // deposit, exception, unapply, delivery, refund (operator: see delivery.Retry)
	Reason      string
	SessionID   string
	MerchantID  string
	ChainID     uint64
	Token       string
	Symbol      string
	Decimals    uint8
	From, To    string
	TxHash      string
	LogIndex    uint32
	BlockNumber uint64
	Amount      *big.Int
	EventTime   time.Time
}

// recordLedger writes an entry inside the transaction that made the
// decision; a replayed decision (same entry id) is a no-op. It is the one
// place an exception is recorded, so it is where deposit.exception is
// emitted: once per entry, in the same transaction.
func recordLedger(ctx context.Context, tx pgx.Tx, e entry) error {
	_, err := recordLedgerID(ctx, tx, e)
	return err
}

// recordLedgerID is recordLedger returning the entry's row id, 0 for a
// replay (the row was there already).
func recordLedgerID(ctx context.Context, tx pgx.Tx, e entry) (int64, error) {
	const q = `INSERT INTO ledger_entries (entry_id, kind, reason, session_id, merchant_id, chain_id, token, symbol, decimals,
		from_address, to_address, tx_hash, log_index, block_number, amount, event_time)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::numeric, $16)
		ON CONFLICT (entry_id) DO NOTHING RETURNING id, recorded_at`
	var id int64
	var at time.Time
	err := tx.QueryRow(ctx, q, e.EntryID, e.Kind, e.Reason, e.SessionID, e.MerchantID, int64(e.ChainID), e.Token, e.Symbol,
		int16(e.Decimals), e.From, e.To, e.TxHash, int32(e.LogIndex), int64(e.BlockNumber), e.Amount.String(), e.EventTime).Scan(&id, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("recording ledger entry %s: %w", e.EntryID, err)
	}
	if e.Kind == "exception" {
		if _, err := store.RecordEvent(ctx, tx, store.Change{SessionID: e.SessionID, Type: store.EventDepositException, LedgerEntryID: id, At: at}); err != nil {
			return 0, fmt.Errorf("ledger entry %s: %w", e.EntryID, err)
		}
	}
	return id, nil
}

// CopyLedger copies ledger entries not yet in ClickHouse, oldest first,
// and reports whether more are waiting. Postgres marks an entry copied only
// after ClickHouse accepted it; a repeated copy collapses on entry_id.
// Operator actions (kind operator) go to ledger_operator and sweeps (sweep,
// sweep_gas) to ledger_sweeps: ClickHouse 18.16 cannot add a kind to
// ledger, whose partition key it is.
func (r *Reconciler) CopyLedger(ctx context.Context) (bool, error) {
	const limit = 5000
	const q = `SELECT id, entry_id, kind, reason, session_id, merchant_id, chain_id, token, symbol, decimals,
		from_address, to_address, tx_hash, log_index, block_number, amount::text, event_time, recorded_at, operator, note
		FROM ledger_entries WHERE copied_at IS NULL ORDER BY id LIMIT $1`
	rows, err := r.cfg.Postgres.Query(ctx, q, limit)
	if err != nil {
		return false, fmt.Errorf("reading ledger entries: %w", err)
	}
	type row struct {
		id                                                      int64
		entryID, kind, reason, session, merchant, token, symbol string
		chainID                                                 int64
		decimals                                                int16
		from, to, tx, amount                                    string
		logIndex                                                int32
		block                                                   int64
		eventTime, recordedAt                                   time.Time
		operator, note                                          string
	}
	var list []row
	for rows.Next() {
		var x row
		if err := rows.Scan(&x.id, &x.entryID, &x.kind, &x.reason, &x.session, &x.merchant, &x.chainID, &x.token, &x.symbol, &x.decimals,
			&x.from, &x.to, &x.tx, &x.logIndex, &x.block, &x.amount, &x.eventTime, &x.recordedAt, &x.operator, &x.note); err != nil {
			rows.Close()
			return false, fmt.Errorf("reading ledger entries: %w", err)
		}
		list = append(list, x)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(list) == 0 {
		return false, err
	}
	var decisions, actions, sweeps []row
	for _, x := range list {
		switch x.kind {
		case "operator":
			actions = append(actions, x)
		case "sweep", "sweep_gas":
			sweeps = append(sweeps, x)
		default:
			decisions = append(decisions, x)
		}
	}
	if len(sweeps) > 0 {
		batch, err := r.cfg.ClickHouse.PrepareBatch(ctx, `INSERT INTO ledger_sweeps (entry_id, kind, session_id, merchant_id, chain_id,
			token, symbol, decimals, from_address, to_address, tx_hash, block_number, amount_raw, event_time, recorded_at)`)
		if err != nil {
			return false, fmt.Errorf("preparing sweep ledger copy: %w", err)
		}
		defer batch.Abort()
		for _, x := range sweeps {
			if err := batch.Append(x.entryID, x.kind, x.session, x.merchant, uint64(x.chainID), x.token, x.symbol,
				uint8(x.decimals), x.from, x.to, x.tx, uint64(x.block), x.amount, x.eventTime, x.recordedAt); err != nil {
				return false, fmt.Errorf("appending ledger entry %s: %w", x.entryID, err)
			}
		}
		if err := batch.Send(); err != nil {
			return false, fmt.Errorf("copying %d sweep ledger entries: %w", len(sweeps), err)
		}
	}
	if len(decisions) > 0 {
		batch, err := r.cfg.ClickHouse.PrepareBatch(ctx, `INSERT INTO ledger (entry_id, kind, reason, session_id, merchant_id, chain_id,
			token, symbol, decimals, from_address, to_address, tx_hash, log_index, block_number, amount_raw, event_time, recorded_at)`)
		if err != nil {
			return false, fmt.Errorf("preparing ledger copy: %w", err)
		}
		defer batch.Abort()
		for _, x := range decisions {
			if err := batch.Append(x.entryID, x.kind, x.reason, x.session, x.merchant, uint64(x.chainID), x.token, x.symbol,
				uint8(x.decimals), x.from, x.to, x.tx, uint32(x.logIndex), uint64(x.block), x.amount, x.eventTime, x.recordedAt); err != nil {
				return false, fmt.Errorf("appending ledger entry %s: %w", x.entryID, err)
			}
		}
		if err := batch.Send(); err != nil {
			return false, fmt.Errorf("copying %d ledger entries: %w", len(decisions), err)
		}
	}
	if len(actions) > 0 {
		batch, err := r.cfg.ClickHouse.PrepareBatch(ctx, `INSERT INTO ledger_operator (entry_id, reason, session_id, merchant_id, chain_id,
			token, symbol, decimals, from_address, to_address, tx_hash, operator, note, event_time, recorded_at)`)
		if err != nil {
			return false, fmt.Errorf("preparing operator ledger copy: %w", err)
		}
		defer batch.Abort()
		for _, x := range actions {
			if err := batch.Append(x.entryID, x.reason, x.session, x.merchant, uint64(x.chainID), x.token, x.symbol,
				uint8(x.decimals), x.from, x.to, x.tx, x.operator, x.note, x.eventTime, x.recordedAt); err != nil {
				return false, fmt.Errorf("appending ledger entry %s: %w", x.entryID, err)
			}
		}
		// Sent after ledger's batch: if this one fails, the next copy
		// sends both again, and ledger collapses the repeat.
		if err := batch.Send(); err != nil {
			return false, fmt.Errorf("copying %d operator ledger entries: %w", len(actions), err)
		}
	}
	ids := make([]int64, len(list))
	for i, x := range list {
		ids[i] = x.id
	}
	if _, err := r.cfg.Postgres.Exec(ctx, `UPDATE ledger_entries SET copied_at = now() WHERE id = ANY($1)`, ids); err != nil {
		return false, fmt.Errorf("marking ledger entries copied: %w", err)
	}
	return len(list) == limit, nil
}
