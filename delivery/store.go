package delivery

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/settle-dev/settle/delivery/driver"
)

// openCondition selects the payouts the executor still has work on:
// pending (to sign or fund), sent (to follow), and mined or reverted ones
// whose receipt is not final yet (to watch for a reorg), and payouts that
// need attention but have a signed transaction in flight (to follow it).
const openCondition = `(status IN ('pending', 'sent') OR (status IN ('mined', 'reverted') AND NOT receipt_final)
	OR (status = 'needs_attention' AND attention_sent))`

// listBatch bounds the payouts one pass looks at.
const listBatch = 1000

// activeCondition is the part of openCondition with work on every pass;
// the rest of the open payouts are only watched until final.
const activeCondition = `(status IN ('pending', 'sent') OR (status = 'needs_attention' AND attention_sent))`

// openPayout is a payout listOpen found.
type openPayout struct {
	id int64
	// active: there is work on every pass, not only a watch.
	active bool
}

// listOpen returns the open payouts on the given chains: active ones
// first, then those only watched until final, oldest first within each.
// Nothing is locked: each is claimed on its own later.
func listOpen(ctx context.Context, pg *pgxpool.Pool, chainIDs []int64) ([]openPayout, error) {
	rows, err := pg.Query(ctx, `SELECT id, `+activeCondition+` AS active FROM payouts
		WHERE chain_id = ANY($1) AND `+openCondition+` ORDER BY active DESC, id LIMIT $2`,
		chainIDs, listBatch)
	if err != nil {
		return nil, fmt.Errorf("listing open payouts: %w", err)
	}
	open, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (openPayout, error) {
		var o openPayout
		err := r.Scan(&o.id, &o.active)
		return o, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing open payouts: %w", err)
	}
	return open, nil
}

// row is a claimed payout.
type row struct {
	id        int64
	sessionID string
	kind      string
	chainID   uint64
	// token and to are addresses in the chain's own form, checked by its
	// driver (check).
	token  string
	to     string
	amount *big.Int
	// calldata is nil for a plain transfer.
	calldata []byte
	status   string

	// A call payout first funds its runner (fund_*), then executes it
	// (nonce, txHash, rawTx); runner is "" until it is funded.
	runner    string
	callGas   uint64
	fundNonce *int64
	fundHash  *string
	fundRaw   []byte
	// fundPrior are earlier signings of the funding's nonce (fee bumps);
	// fundAge is how long ago the newest was stored.
	fundPrior []string
	fundAge   time.Duration
	nonce     *int64
	txHash    *string
	rawTx     []byte
	prior     []string
	// receiptBlock and receiptHash locate the receipt of a mined or
	// reverted payout; receiptFinal is set once that block is final.
	receiptBlock *int64
	receiptHash  *string
	receiptFinal bool
	// attentionSent: needs attention, with the main transaction signed
	// and in flight (followed, never bumped).
	attentionSent bool
	// errMsg is the stored error (the revert reason of a reverted one).
	errMsg string
	// sentAge is how long ago the current signing was stored, by the
	// database clock, so executors on different hosts agree.
	sentAge time.Duration
}

// errNotClaimed means the payout is locked by another executor or no
// longer open.
var errNotClaimed = errors.New("payout not claimed")

// claim locks payout id if it is still open and nobody else holds it.
func claim(ctx context.Context, tx pgx.Tx, id int64) (*row, error) {
	const q = `SELECT id, session_id, kind, chain_id, token, to_address, amount::text, calldata, status,
		runner_address, coalesce(call_gas, 0), fund_nonce, fund_tx_hash, fund_raw_tx, fund_prior_tx_hashes,
		coalesce(extract(epoch FROM now() - fund_sent_at), 0)::float8, nonce, tx_hash, raw_tx, prior_tx_hashes,
		receipt_block_number, receipt_block_hash, receipt_final, attention_sent, coalesce(error, ''),
		coalesce(extract(epoch FROM now() - sent_at), 0)::float8
		FROM payouts WHERE id = $1 AND ` + openCondition + ` FOR UPDATE SKIP LOCKED`
	var (
		p                 row
		chainID           int64
		token, to, amount string
		calldata, runner  *string
		callGas           int64
		age, fundAge      float64
	)
	err := tx.QueryRow(ctx, q, id).Scan(&p.id, &p.sessionID, &p.kind, &chainID, &token, &to, &amount, &calldata, &p.status,
		&runner, &callGas, &p.fundNonce, &p.fundHash, &p.fundRaw, &p.fundPrior, &fundAge, &p.nonce, &p.txHash, &p.rawTx, &p.prior,
		&p.receiptBlock, &p.receiptHash, &p.receiptFinal, &p.attentionSent, &p.errMsg, &age)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errNotClaimed
	}
	if err != nil {
		return nil, fmt.Errorf("claiming payout %d: %w", id, err)
	}
	p.chainID = uint64(chainID)
	p.sentAge = time.Duration(age * float64(time.Second))
	p.fundAge = time.Duration(fundAge * float64(time.Second))
	p.token, p.to = token, to
	if runner != nil {
		p.runner = *runner
	}
	p.callGas = uint64(callGas)
	var ok bool
	if p.amount, ok = new(big.Int).SetString(amount, 10); !ok {
		return &p, fmt.Errorf("payout %d: amount %q is not an integer", id, amount)
	}
	if calldata != nil {
		if p.calldata, err = decodeHex(*calldata); err != nil {
			return &p, fmt.Errorf("payout %d: calldata is not 0x-hex: %w", id, err)
		}
	}
	return &p, nil
}

// decodeHex decodes 0x-prefixed hex; "0x" is empty, non-nil calldata,
// distinct from a plain transfer's nil.
func decodeHex(s string) ([]byte, error) {
	if len(s) < 2 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X') {
		return nil, errors.New("hex string without 0x prefix")
	}
	b, err := hex.DecodeString(s[2:])
	if err != nil {
		return nil, err
	}
	if b == nil {
		b = []byte{}
	}
	return b, nil
}

// check has the payout's driver check what the reconciler wrote: a
// malformed row is reported, not guessed at, since paying a misread
// address cannot be undone. Addresses come back in the form Postgres
// holds.
func (p *row) check(d Driver) error {
	var err error
	if p.token, err = d.Address(p.token); err != nil {
		return fmt.Errorf("payout %d: token: %w", p.id, err)
	}
	if p.to, err = d.Address(p.to); err != nil {
		return fmt.Errorf("payout %d: to_address: %w", p.id, err)
	}
	if p.runner != "" {
		if p.runner, err = d.Address(p.runner); err != nil {
			return fmt.Errorf("payout %d: runner_address: %w", p.id, err)
		}
	}
	if err := d.Amount(p.amount); err != nil {
		return fmt.Errorf("payout %d: %w", p.id, err)
	}
	return nil
}

// payout is what the driver is told of the payout.
func (p *row) payout() driver.Payout {
	return driver.Payout{ID: p.id, SessionID: p.sessionID, Kind: p.kind, Token: p.token, To: p.to, Amount: p.amount,
		Calldata: p.calldata, Runner: p.runner, CallGas: p.callGas}
}

// hasCalldata reports whether the payout runs a merchant call (fund a
// runner, then execute it) rather than a plain transfer.
func (p *row) hasCalldata() bool { return p.calldata != nil }

// recordError stores why the last attempt on payout id failed, without
// waiting for a lock another executor holds (it will record its own). A
// pending payout (nothing signed in flight) that has failed for longer
// than stuckAfter moves to needs_attention: a gas estimate that keeps
// failing, a treasury out of gas or tokens. It reports whether it did.
func recordError(ctx context.Context, pg *pgxpool.Pool, id int64, msg string, stuckAfter time.Duration) (bool, error) {
	var moved bool
	err := pg.QueryRow(ctx, `UPDATE payouts SET error = $2, failing_since = coalesce(failing_since, now()),
		status = CASE WHEN status = 'pending' AND failing_since < now() - make_interval(secs => $3) THEN 'needs_attention' ELSE status END
		WHERE id = (SELECT id FROM payouts WHERE id = $1 FOR UPDATE SKIP LOCKED)
		RETURNING status = 'needs_attention'`, id, msg, stuckAfter.Seconds()).Scan(&moved)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("recording error of payout %d: %w", id, err)
	}
	return moved, nil
}

// inFlight sums the amounts of token that other payouts have signed away
// but the chain may not show yet: sent transfers and signed runner
// fundings (a call payout is only sent once its funding is mined). Read
// under the nonce lock, it includes every signing committed before ours.
func inFlight(ctx context.Context, tx pgx.Tx, p *row) (*big.Int, error) {
	var sum string
	err := tx.QueryRow(ctx, `SELECT coalesce(sum(amount), 0)::text FROM payouts
		WHERE chain_id = $1 AND lower(token) = $2 AND id <> $3
		  AND ((status = 'sent' AND calldata IS NULL) OR (status = 'pending' AND fund_tx_hash IS NOT NULL))`,
		int64(p.chainID), strings.ToLower(p.token), p.id).Scan(&sum)
	if err != nil {
		return nil, fmt.Errorf("summing payouts in flight: %w", err)
	}
	v, ok := new(big.Int).SetString(sum, 10)
	if !ok {
		return nil, fmt.Errorf("summing payouts in flight: bad sum %q", sum)
	}
	return v, nil
}
