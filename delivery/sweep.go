package delivery

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/delivery/driver"
)

// Sweeping moves credited, final deposits from their receivers to the
// treasury, which pays every delivery and refund from its own float.
//
// A sweep never touches a deposit that is not final (it sums only final,
// credited deposits, so an exception or an unfinal top-up stays in the
// receiver), and it is crash-safe like a payout: the treasury's gas top-up
// and the receiver's transfer are each signed and stored before they are
// broadcast, and a restart re-broadcasts the stored bytes. One sweep per
// receiver and chain is open at a time, so the receiver's nonces never
// race; the treasury's are ordered by the driver like a payout's (EVM:
// treasury_nonces). The driver's Sweep signs both.

// sweepBatch bounds the receivers scheduled and the sweeps worked on per
// pass.
const sweepBatch = 200

// sweepPass schedules new sweeps and advances open ones on the given
// chains. Failures are logged and counted per sweep and retried next pass.
func (e *Executor) sweepPass(ctx context.Context, chainIDs []int64, seen map[string]bool) {
	if e.cfg.ReceiverKey == nil || len(chainIDs) == 0 {
		return
	}
	if err := e.scheduleSweeps(ctx, chainIDs); err != nil && ctx.Err() == nil {
		e.logger.WarnContext(ctx, "scheduling sweeps failed; will retry", "err", err)
	}
	rows, err := e.pg.Query(ctx, `SELECT id FROM sweeps WHERE chain_id = ANY($1) AND status IN ('pending', 'gas_sent', 'sent', 'mined')
		ORDER BY id LIMIT $2`, chainIDs, sweepBatch)
	if err != nil {
		e.logger.WarnContext(ctx, "listing sweeps failed; will retry", "err", err)
		return
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		e.logger.WarnContext(ctx, "listing sweeps failed; will retry", "err", err)
		return
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return
		}
		if err := e.stepSweep(ctx, id, seen); err != nil && ctx.Err() == nil {
			e.sweepMetrics.sweeps.WithLabelValues(outcomeError).Inc()
			e.logger.WarnContext(ctx, "sweep step failed; will retry", "sweep_id", id, "err", err)
			if _, rerr := e.pg.Exec(ctx, `UPDATE sweeps SET error = $2 WHERE id = (SELECT id FROM sweeps WHERE id = $1 FOR UPDATE SKIP LOCKED)`,
				id, e.redact(err.Error())); rerr != nil {
				e.logger.WarnContext(ctx, "recording sweep error failed", "sweep_id", id, "err", rerr)
			}
		}
	}
}

// scheduleSweeps creates a sweep for each receiver and token whose final,
// credited, unswept deposits reach the token's threshold, and ties those
// deposits to it in the same transaction.
func (e *Executor) scheduleSweeps(ctx context.Context, chainIDs []int64) error {
	rows, err := e.pg.Query(ctx, `SELECT d.chain_id, d.receiver_id, r.address, d.token, sum(d.amount)::text
		FROM deposits d JOIN receivers r ON r.id = d.receiver_id
		WHERE d.credited AND d.status = 'final' AND d.sweep_id IS NULL AND d.chain_id = ANY($1)
		  AND NOT EXISTS (SELECT 1 FROM sweeps s WHERE s.chain_id = d.chain_id AND s.receiver_id = d.receiver_id
		                  AND s.status NOT IN ('confirmed', 'needs_attention'))
		GROUP BY d.chain_id, d.receiver_id, r.address, d.token
		ORDER BY min(d.id) LIMIT $2`, chainIDs, sweepBatch)
	if err != nil {
		return fmt.Errorf("finding deposits to sweep: %w", err)
	}
	type candidate struct {
		chainID, receiverID int64
		address, token, sum string
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (candidate, error) {
		var c candidate
		err := r.Scan(&c.chainID, &c.receiverID, &c.address, &c.token, &c.sum)
		return c, err
	})
	if err != nil {
		return fmt.Errorf("finding deposits to sweep: %w", err)
	}
	for _, c := range list {
		sum, _ := new(big.Int).SetString(c.sum, 10)
		min, ok := e.sweepMin[uint64(c.chainID)][strings.ToLower(c.token)]
		if !ok || sum == nil || sum.Cmp(min) < 0 {
			continue // not swept (no threshold for the token), or dust: sweeping it would cost more than it moves
		}
		err := pgx.BeginFunc(ctx, e.pg, func(tx pgx.Tx) error {
			var id int64
			err := tx.QueryRow(ctx, `INSERT INTO sweeps (chain_id, receiver_id, receiver_address, token, amount)
				VALUES ($1, $2, $3, $4, $5::numeric)
				ON CONFLICT (chain_id, receiver_id) WHERE status NOT IN ('confirmed', 'needs_attention') DO NOTHING RETURNING id`,
				c.chainID, c.receiverID, c.address, c.token, c.sum).Scan(&id)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil // another executor scheduled it
			}
			if err != nil {
				return fmt.Errorf("creating sweep: %w", err)
			}
			// The deposits are re-read under their row locks: the sweep
			// moves exactly what it claims, even if one turned final since.
			var claimed string
			if err := tx.QueryRow(ctx, `WITH d AS (UPDATE deposits SET sweep_id = $1
					WHERE chain_id = $2 AND receiver_id = $3 AND token = $4 AND credited AND status = 'final' AND sweep_id IS NULL
					RETURNING amount)
				SELECT coalesce(sum(amount), 0)::text FROM d`, id, c.chainID, c.receiverID, c.token).Scan(&claimed); err != nil {
				return fmt.Errorf("claiming deposits for sweep %d: %w", id, err)
			}
			if claimed == "0" {
				return errNotClaimed // rolls back: another executor took them
			}
			if _, err := tx.Exec(ctx, `UPDATE sweeps SET amount = $2::numeric WHERE id = $1`, id, claimed); err != nil {
				return fmt.Errorf("storing sweep amount: %w", err)
			}
			e.sweepMetrics.sweeps.WithLabelValues("scheduled").Inc()
			e.logger.InfoContext(ctx, "sweep scheduled", "sweep_id", id, "chain_id", c.chainID, "receiver", c.address, "token", c.token, "amount", claimed)
			return nil
		})
		if err != nil && !errors.Is(err, errNotClaimed) {
			return err
		}
	}
	return nil
}

// sweepRow is a claimed sweep.
type sweepRow struct {
	id, chainID       int64
	receiver, token   string
	index             uint32
	sessionID         string
	merchantID        string
	amount, gasAmount *big.Int
	status            string
	gasNonce, nonce   *int64
	gasHash, txHash   *string
	gasRaw, rawTx     []byte
	receiptBlock      *int64
	receiptHash       *string
}

func claimSweep(ctx context.Context, tx pgx.Tx, id int64) (*sweepRow, error) {
	var s sweepRow
	var amount string
	var gasAmount *string
	var index int64
	err := tx.QueryRow(ctx, `SELECT s.id, s.chain_id, s.receiver_address, s.token, s.amount::text, s.gas_amount::text, s.status,
			s.gas_nonce, s.gas_tx_hash, s.gas_raw_tx, s.nonce, s.tx_hash, s.raw_tx, s.receipt_block_number, s.receipt_block_hash,
			r.derivation_index, r.session_id, r.merchant_id
		FROM sweeps s JOIN receivers r ON r.id = s.receiver_id
		WHERE s.id = $1 AND s.status IN ('pending', 'gas_sent', 'sent', 'mined') FOR UPDATE OF s SKIP LOCKED`, id).
		Scan(&s.id, &s.chainID, &s.receiver, &s.token, &amount, &gasAmount, &s.status, &s.gasNonce, &s.gasHash, &s.gasRaw,
			&s.nonce, &s.txHash, &s.rawTx, &s.receiptBlock, &s.receiptHash, &index, &s.sessionID, &s.merchantID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errNotClaimed
	}
	if err != nil {
		return nil, fmt.Errorf("claiming sweep %d: %w", id, err)
	}
	if index < 0 || index > 1<<31-1 {
		return nil, fmt.Errorf("sweep %d: malformed derivation index %d", id, index)
	}
	s.index = uint32(index)
	s.amount, _ = new(big.Int).SetString(amount, 10)
	if gasAmount != nil {
		s.gasAmount, _ = new(big.Int).SetString(*gasAmount, 10)
	}
	return &s, nil
}

// check has the sweep's driver check its addresses, which come back in
// the form Postgres holds.
func (s *sweepRow) check(d Driver) error {
	receiver, rerr := d.Address(s.receiver)
	token, terr := d.Address(s.token)
	if rerr != nil || terr != nil {
		return fmt.Errorf("sweep %d: malformed receiver %q or token %q", s.id, s.receiver, s.token)
	}
	s.receiver, s.token = receiver, token
	return nil
}

// stepSweep advances one sweep by one step in one Postgres transaction,
// and broadcasts what that step stored only after the commit.
func (e *Executor) stepSweep(parent context.Context, id int64, seen map[string]bool) error {
	ctx, cancel := context.WithTimeout(parent, rowTimeout)
	defer cancel()
	var send *driver.Tx
	var d Driver
	var outcome string
	err := pgx.BeginFunc(ctx, e.pg, func(tx pgx.Tx) error {
		s, err := claimSweep(ctx, tx, id)
		if err != nil {
			return err
		}
		var ok bool
		if d, ok = e.chains[uint64(s.chainID)]; !ok {
			return errNotClaimed
		}
		if err := s.check(d); err != nil {
			return err
		}
		send, outcome, err = e.sweepStep(ctx, tx, d, s, seen)
		return err
	})
	if errors.Is(err, errNotClaimed) {
		return nil
	}
	if err != nil {
		return err
	}
	if outcome != "" {
		e.sweepMetrics.sweeps.WithLabelValues(outcome).Inc()
		e.logger.InfoContext(ctx, "sweep "+outcome, "sweep_id", id)
	}
	if send != nil && !e.skipBroadcast {
		seen[send.Hash] = true
		e.markSent(send.Hash)
		if err := d.Broadcast(ctx, *send); err != nil && !errors.Is(err, driver.ErrNonceUsed) {
			return fmt.Errorf("broadcasting sweep transaction %s (the stored bytes will be sent again): %w", send.Hash, err)
		}
	}
	return nil
}

// sweepStep dispatches on the sweep's stage. It returns a transaction to
// broadcast after the commit, and the outcome to count.
func (e *Executor) sweepStep(ctx context.Context, tx pgx.Tx, d Driver, s *sweepRow, seen map[string]bool) (*driver.Tx, string, error) {
	switch s.status {
	case "pending":
		return e.signSweep(ctx, tx, d, s, true)
	case "gas_sent":
		gas := driver.Tx{From: d.Treasury(), Nonce: uint64(*s.gasNonce), Hash: *s.gasHash, Raw: s.gasRaw}
		in, err := d.Find(ctx, gas)
		switch {
		case errors.Is(err, driver.ErrNonceTaken) || (err == nil && in != nil && !in.Success):
			return nil, outcomeAttention, sweepAttention(ctx, tx, s.id, fmt.Sprintf("gas top-up %s did not succeed (nonce used elsewhere or reverted)", *s.gasHash))
		case err != nil:
			return nil, "", err
		case in == nil:
			return e.resend(gas, seen)
		}
		return e.signSweep(ctx, tx, d, s, false)
	case "sent":
		sent := driver.Tx{From: s.receiver, Nonce: uint64(*s.nonce), Hash: *s.txHash, Raw: s.rawTx}
		in, err := d.Find(ctx, sent)
		switch {
		case errors.Is(err, driver.ErrNonceTaken):
			return nil, outcomeAttention, sweepAttention(ctx, tx, s.id, fmt.Sprintf("receiver %s used nonce %d for another transaction", s.receiver, *s.nonce))
		case err != nil:
			return nil, "", err
		case in == nil:
			return e.resend(sent, seen)
		case !in.Success:
			// A token that refuses the receiver (paused, blacklisted):
			// the deposits stay in the receiver, tied to this sweep.
			return nil, outcomeAttention, sweepAttention(ctx, tx, s.id, fmt.Sprintf("sweep transfer %s reverted in block %d", in.Hash, in.Block))
		}
		if _, err := tx.Exec(ctx, `UPDATE sweeps SET status = 'mined', receipt_block_number = $2, receipt_block_hash = $3, error = NULL WHERE id = $1`,
			s.id, in.Block, in.BlockHash); err != nil {
			return nil, "", fmt.Errorf("marking sweep %d mined: %w", s.id, err)
		}
		return nil, outcomeMined, nil
	case "mined":
		return nil, "", e.sweepWatch(ctx, tx, d, s)
	}
	return nil, "", fmt.Errorf("sweep %d has status %q", s.id, s.status)
}

// resend queues stored bytes for re-broadcast if RebroadcastAfter passed.
func (e *Executor) resend(t driver.Tx, seen map[string]bool) (*driver.Tx, string, error) {
	if len(t.Raw) == 0 {
		return nil, "", errors.New("stored transaction is empty")
	}
	if !e.dueForRebroadcast(t.Hash, seen) {
		return nil, "", nil
	}
	return &t, "", nil
}

// signSweep stores the driver's next signing for sweep s: with topUp, the
// treasury's gas top-up of the receiver when it needs one (gas_sent),
// else the receiver's transfer to the treasury (sent).
func (e *Executor) signSweep(ctx context.Context, tx pgx.Tx, d Driver, s *sweepRow, topUp bool) (*driver.Tx, string, error) {
	st, err := d.Sweep(ctx, tx, driver.Sweep{ID: s.id, Receiver: s.receiver, Token: s.token, Index: s.index, Amount: s.amount}, topUp)
	var ae *driver.AttentionError
	if errors.As(err, &ae) {
		return nil, outcomeAttention, sweepAttention(ctx, tx, s.id, ae.Reason)
	}
	if err != nil {
		return nil, "", err
	}
	if st.GasAmount != nil {
		if _, err := tx.Exec(ctx, `UPDATE sweeps SET status = 'gas_sent', gas_amount = $2::numeric, gas_nonce = $3, gas_tx_hash = $4, gas_raw_tx = $5, error = NULL
			WHERE id = $1`, s.id, st.GasAmount.String(), int64(st.Nonce), st.Hash, st.Raw); err != nil {
			return nil, "", fmt.Errorf("storing sweep gas top-up: %w", err)
		}
		return &st.Tx, "gas_signed", nil
	}
	if _, err := tx.Exec(ctx, `UPDATE sweeps SET status = 'sent', nonce = $2, tx_hash = $3, raw_tx = $4, error = NULL WHERE id = $1`,
		s.id, int64(st.Nonce), st.Hash, st.Raw); err != nil {
		return nil, "", fmt.Errorf("storing signed sweep: %w", err)
	}
	return &st.Tx, outcomeSigned, nil
}

// sweepWatch confirms a mined sweep once its block is final, writing the
// sweep and sweep_gas ledger entries; a reorg that removed its block sends
// it back to be re-broadcast.
func (e *Executor) sweepWatch(ctx context.Context, tx pgx.Tx, d Driver, s *sweepRow) error {
	if s.receiptBlock == nil || s.receiptHash == nil {
		return fmt.Errorf("sweep %d is mined without a receipt block", s.id)
	}
	live, err := d.Block(ctx, uint64(*s.receiptBlock))
	if err != nil {
		return err
	}
	if live.Hash == "" || !strings.EqualFold(live.Hash, *s.receiptHash) {
		_, err := tx.Exec(ctx, `UPDATE sweeps SET status = 'sent', receipt_block_number = NULL, receipt_block_hash = NULL WHERE id = $1`, s.id)
		if err == nil {
			e.sweepMetrics.sweeps.WithLabelValues(outcomeReorged).Inc()
		}
		return err
	}
	final, err := d.Finalized(ctx)
	if err != nil || uint64(*s.receiptBlock) > final {
		return err
	}
	at := time.Unix(live.Time, 0).UTC()
	tok := e.token(uint64(s.chainID), s.token)
	entries := []ledgerLine{{
		entryID: fmt.Sprintf("sweep:%d", s.id), kind: "sweep", sessionID: s.sessionID, merchantID: s.merchantID,
		chainID: s.chainID, token: s.token, symbol: tok.Symbol, decimals: tok.Decimals, from: s.receiver,
		to: d.Treasury(), txHash: *s.txHash, block: *s.receiptBlock, amount: s.amount, at: at,
	}}
	if s.gasAmount != nil && s.gasHash != nil {
		native := d.Native()
		entries = append(entries, ledgerLine{
			entryID: fmt.Sprintf("sweep_gas:%d", s.id), kind: "sweep_gas", sessionID: s.sessionID, merchantID: s.merchantID,
			chainID: s.chainID, token: native.Address, symbol: native.Symbol, decimals: native.Decimals, from: d.Treasury(),
			to: s.receiver, txHash: *s.gasHash, amount: s.gasAmount, at: at,
		})
	}
	for _, l := range entries {
		if err := insertLedger(ctx, tx, l); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE sweeps SET status = 'confirmed', confirmed_at = now() WHERE id = $1`, s.id); err != nil {
		return fmt.Errorf("confirming sweep %d: %w", s.id, err)
	}
	e.sweepMetrics.sweeps.WithLabelValues("confirmed").Inc()
	if s.gasAmount != nil {
		f, _ := new(big.Float).SetInt(s.gasAmount).Float64()
		e.sweepMetrics.sweepGas.WithLabelValues(fmt.Sprint(s.chainID)).Add(f)
	}
	e.logger.InfoContext(ctx, "sweep final", "sweep_id", s.id, "chain_id", s.chainID, "receiver", s.receiver,
		"amount", s.amount.String(), "tx_hash", *s.txHash)
	return nil
}

func sweepAttention(ctx context.Context, tx pgx.Tx, id int64, reason string) error {
	if _, err := tx.Exec(ctx, `UPDATE sweeps SET status = 'needs_attention', error = $2 WHERE id = $1`, id, reason); err != nil {
		return fmt.Errorf("moving sweep %d to needs_attention: %w", id, err)
	}
	return nil
}

// token returns the configured token, or a bare one for an unlisted
// address.
func (e *Executor) token(chainID uint64, addr string) driver.Token {
	for _, t := range e.tokens[chainID] {
		if t.Address == addr {
			return t
		}
	}
	return driver.Token{Address: addr, Symbol: addr}
}

// ledgerLine is a ledger_entries row written by the executor (the
// reconciler writes the rest, with the same columns).
type ledgerLine struct {
	entryID, kind, reason, sessionID, merchantID string
	chainID                                      int64
	token, symbol                                string
	decimals                                     uint8
	from, to, txHash                             string
	block                                        int64
	amount                                       *big.Int
	at                                           time.Time
}

func insertLedger(ctx context.Context, tx pgx.Tx, l ledgerLine) error {
	if _, err := tx.Exec(ctx, `INSERT INTO ledger_entries (entry_id, kind, reason, session_id, merchant_id, chain_id, token, symbol, decimals,
		from_address, to_address, tx_hash, block_number, amount, event_time)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::numeric, $15) ON CONFLICT (entry_id) DO NOTHING`,
		l.entryID, l.kind, l.reason, l.sessionID, l.merchantID, l.chainID, l.token, l.symbol, int16(l.decimals),
		l.from, l.to, l.txHash, l.block, l.amount.String(), l.at); err != nil {
		return fmt.Errorf("recording ledger entry %s: %w", l.entryID, err)
	}
	return nil
}
