package delivery

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// This file is the operator's side of needs_attention (`settle payouts
// list|retry|abandon`). Each action runs in one Postgres transaction under
// the payout's row lock, so it cannot race an executor or another
// operator, and writes a ledger entry of kind operator (amount 0: no money
// moves) with who acted and why.

// AttentionPayout is a payout parked in needs_attention.
type AttentionPayout struct {
	ID        int64
	SessionID string
	Kind      string // delivery or refund
	ChainID   uint64
	Token     string
	To        string
	Amount    *big.Int
	Status    string
	// Error is why the executor parked it.
	Error string
	// InFlight: its signed transaction may still be mined, and the
	// executor keeps following it (but signs nothing new for it).
	InFlight bool
	// Runner and FundTxHash are set once a call payout's runner is funded;
	// TxHash once its main transaction (transfer or execute) is signed.
	Runner     string
	FundTxHash string
	TxHash     string
	CreatedAt  time.Time
	// Age is how long ago the payout was created, by the database clock.
	Age time.Duration
}

// ListAttention returns every payout in needs_attention, oldest first.
func ListAttention(ctx context.Context, pg *pgxpool.Pool) ([]AttentionPayout, error) {
	rows, err := pg.Query(ctx, `SELECT id, session_id, kind, chain_id, token, to_address, amount::text, status,
		coalesce(error, ''), attention_sent, coalesce(runner_address, ''), coalesce(fund_tx_hash, ''), coalesce(tx_hash, ''),
		created_at, extract(epoch FROM now() - created_at)::float8
		FROM payouts WHERE status = 'needs_attention' ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("listing payouts that need attention: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AttentionPayout, error) {
		var (
			p       AttentionPayout
			chainID int64
			amount  string
			age     float64
		)
		if err := r.Scan(&p.ID, &p.SessionID, &p.Kind, &chainID, &p.Token, &p.To, &amount, &p.Status,
			&p.Error, &p.InFlight, &p.Runner, &p.FundTxHash, &p.TxHash, &p.CreatedAt, &age); err != nil {
			return p, err
		}
		p.ChainID = uint64(chainID)
		p.Age = time.Duration(age * float64(time.Second))
		var ok bool
		if p.Amount, ok = new(big.Int).SetString(amount, 10); !ok {
			return p, fmt.Errorf("payout %d: amount %q is not an integer", p.ID, amount)
		}
		return p, nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing payouts that need attention: %w", err)
	}
	return list, nil
}

// Errors of Retry and Abandon; the returned errors wrap them with detail.
var (
	// ErrNoPayout: there is no payout with that id.
	ErrNoPayout = errors.New("no such payout")
	// ErrNotParked: the payout is not in needs_attention, so the executor
	// (or nobody) owns it; an operator may not touch it.
	ErrNotParked = errors.New("payout does not need attention")
	// ErrTransferSigned: a plain transfer is signed already; a retry could
	// pay twice.
	ErrTransferSigned = errors.New("plain transfer already signed")
)

// Retry hands a parked payout back to the executor, which resumes where it
// stopped:
//
//   - a payout whose signed transaction is in flight (InFlight) goes back
//     to 'sent': the executor follows and bumps that same nonce again (e.g.
//     after the chain's fee ceiling was raised); nothing new is signed.
//   - otherwise it goes back to 'pending'. Nothing signed yet: it is signed
//     afresh. A call payout whose runner is funded follows the funding and
//     signs a new execute; that is safe even after an execute was mined and
//     reverted, because the runner can be deployed only once, so a second
//     execute of the same runner can never pay again.
//
// A plain transfer that is signed and not in flight is refused
// (ErrTransferSigned): a retry would sign a second transfer under a new
// nonce while nothing here proves the first can never be mined. Check the
// treasury's transactions on chain, then Abandon it and settle by hand.
func Retry(ctx context.Context, pg *pgxpool.Pool, id int64, operator, note string) error {
	return act(ctx, pg, id, operator, note, "retry", func(ctx context.Context, tx pgx.Tx, p *parked) error {
		if p.inFlight {
			// A funding in flight goes back to pending, whose follow
			// bumps it; a main transaction to sent.
			_, err := tx.Exec(ctx, `UPDATE payouts SET status = CASE WHEN tx_hash IS NULL THEN 'pending' ELSE 'sent' END,
				attention_sent = false, error = NULL, failing_since = NULL WHERE id = $1`, id)
			return err
		}
		if !p.calldata && p.txHash != "" {
			return fmt.Errorf("payout %d: %w as %s (nonce %s): a retry would sign a second transfer under a new nonce, and nothing here proves "+
				"that one can never be mined; check the treasury's transactions on chain %d, then `settle payouts abandon` it and settle the session by hand",
				id, ErrTransferSigned, p.txHash, p.nonce, p.chainID)
		}
		// failing_since restarts: the executor's StuckAfter counts from
		// the retry, not from the failures that parked it. A call payout
		// parked at its funding (reverted, or its nonce taken) is funded
		// afresh: that funding moved nothing, and should a reorg revive it
		// after all, it lands at the runner before the execute (nonce
		// order), which returns any excess to the treasury.
		_, err := tx.Exec(ctx, `UPDATE payouts SET status = 'pending', error = NULL, failing_since = NULL,
			fund_nonce = CASE WHEN tx_hash IS NULL THEN NULL ELSE fund_nonce END,
			fund_tx_hash = CASE WHEN tx_hash IS NULL THEN NULL ELSE fund_tx_hash END,
			fund_raw_tx = CASE WHEN tx_hash IS NULL THEN NULL ELSE fund_raw_tx END,
			fund_prior_tx_hashes = CASE WHEN tx_hash IS NULL THEN '{}' ELSE fund_prior_tx_hashes END
			WHERE id = $1`, id)
		return err
	})
}

// Abandon takes a parked payout out of the executor's hands for good: it
// becomes 'abandoned', which the executor never looks at again. Its
// session is left as it is (processing): the operator settles it by hand,
// e.g. pays or refunds outside settle. The error that parked it stays on
// the row. An in-flight transaction is no longer followed or re-broadcast:
// it may still be mined, and until its nonce is used it holds back every
// later payout of the treasury on that chain.
func Abandon(ctx context.Context, pg *pgxpool.Pool, id int64, operator, note string) error {
	return act(ctx, pg, id, operator, note, "abandon", func(ctx context.Context, tx pgx.Tx, _ *parked) error {
		_, err := tx.Exec(ctx, `UPDATE payouts SET status = 'abandoned' WHERE id = $1`, id)
		return err
	})
}

// parked is what an action reads of the payout it locked.
type parked struct {
	sessionID, kind, status string
	chainID                 int64
	token, to, from         string
	calldata, inFlight      bool
	txHash, nonce           string
	merchantID, symbol      string
	decimals                int16
}

// act locks payout id, checks that it needs attention, applies update and
// records the action in the ledger, all in one transaction.
func act(ctx context.Context, pg *pgxpool.Pool, id int64, operator, note, action string,
	update func(context.Context, pgx.Tx, *parked) error) error {
	operator, note = strings.TrimSpace(operator), strings.TrimSpace(note)
	if operator == "" || note == "" {
		return fmt.Errorf("%s payout %d: an operator name and a note are required", action, id)
	}
	return pgx.BeginFunc(ctx, pg, func(tx pgx.Tx) error {
		// Waits for an executor working on the payout (an in-flight one
		// is still claimed), then reads the row as it left it. The
		// session's token is the delivery's; a refund's may differ.
		var p parked
		err := tx.QueryRow(ctx, `SELECT p.session_id, p.kind, p.status, p.chain_id, p.token, p.to_address, coalesce(p.from_address, ''),
			p.calldata IS NOT NULL, p.attention_sent, coalesce(p.tx_hash, ''), coalesce(p.nonce::text, '?'), s.merchant_id,
			CASE WHEN p.chain_id = s.dest_chain_id AND lower(p.token) = lower(s.dest_token_address) THEN s.dest_token_symbol ELSE '' END,
			CASE WHEN p.chain_id = s.dest_chain_id AND lower(p.token) = lower(s.dest_token_address) THEN s.dest_token_decimals ELSE 0::smallint END
			FROM payouts p JOIN sessions s ON s.id = p.session_id WHERE p.id = $1 FOR UPDATE OF p`, id).
			Scan(&p.sessionID, &p.kind, &p.status, &p.chainID, &p.token, &p.to, &p.from, &p.calldata, &p.inFlight,
				&p.txHash, &p.nonce, &p.merchantID, &p.symbol, &p.decimals)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%s payout %d: %w", action, id, ErrNoPayout)
		}
		if err != nil {
			return fmt.Errorf("%s payout %d: locking it: %w", action, id, err)
		}
		if p.status != "needs_attention" {
			return fmt.Errorf("%s payout %d: it is %s: %w (only needs_attention payouts can be retried or abandoned)",
				action, id, p.status, ErrNotParked)
		}
		if err := update(ctx, tx, &p); err != nil {
			if errors.Is(err, ErrTransferSigned) {
				return err
			}
			return fmt.Errorf("%s payout %d: %w", action, id, err)
		}
		// The columns of reconciler's recordLedger, plus operator and
		// note. Each action is its own entry, so no ON CONFLICT: a clash
		// fails the action rather than leave it unrecorded.
		entryID := fmt.Sprintf("operator:%s:%d:%d", action, id, time.Now().UnixNano())
		if _, err := tx.Exec(ctx, `INSERT INTO ledger_entries (entry_id, kind, reason, session_id, merchant_id, chain_id, token, symbol, decimals,
			from_address, to_address, tx_hash, log_index, block_number, amount, event_time, operator, note)
			VALUES ($1, 'operator', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, 0, 0, now(), $12, $13)`,
			entryID, "payout_"+action, p.sessionID, p.merchantID, p.chainID, p.token, p.symbol, p.decimals,
			p.from, p.to, p.txHash, operator, note); err != nil {
			return fmt.Errorf("%s payout %d: recording ledger entry: %w", action, id, err)
		}
		return nil
	})
}
