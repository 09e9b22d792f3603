package delivery

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/jackc/pgx/v5"
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
// race; the treasury's come from treasury_nonces like a payout's.

// sweepBatch bounds the receivers scheduled and the sweeps worked on per
// pass.
const sweepBatch = 200

// transferGasFloor is the least gas a sweep's transfer is given, whatever
// the estimate says (a receiver that cannot pay a re-send is stuck).
const transferGasFloor = 65_000

// sweepPass schedules new sweeps and advances open ones on the given
// chains. Failures are logged and counted per sweep and retried next pass.
func (e *Executor) sweepPass(ctx context.Context, chainIDs []int64, seen map[common.Hash]bool) {
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
		min, ok := e.cfg.SweepMin[uint64(c.chainID)][common.HexToAddress(c.token)]
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
	receiver, token   common.Address
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
	var receiver, token, amount string
	var gasAmount *string
	var index int64
	err := tx.QueryRow(ctx, `SELECT s.id, s.chain_id, s.receiver_address, s.token, s.amount::text, s.gas_amount::text, s.status,
			s.gas_nonce, s.gas_tx_hash, s.gas_raw_tx, s.nonce, s.tx_hash, s.raw_tx, s.receipt_block_number, s.receipt_block_hash,
			r.derivation_index, r.session_id, r.merchant_id
		FROM sweeps s JOIN receivers r ON r.id = s.receiver_id
		WHERE s.id = $1 AND s.status IN ('pending', 'gas_sent', 'sent', 'mined') FOR UPDATE OF s SKIP LOCKED`, id).
		Scan(&s.id, &s.chainID, &receiver, &token, &amount, &gasAmount, &s.status, &s.gasNonce, &s.gasHash, &s.gasRaw,
			&s.nonce, &s.txHash, &s.rawTx, &s.receiptBlock, &s.receiptHash, &index, &s.sessionID, &s.merchantID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errNotClaimed
	}
	if err != nil {
		return nil, fmt.Errorf("claiming sweep %d: %w", id, err)
	}
	if !common.IsHexAddress(receiver) || !common.IsHexAddress(token) || index < 0 || index > 1<<31-1 {
		return nil, fmt.Errorf("sweep %d: malformed receiver %q, token %q or index %d", id, receiver, token, index)
	}
	s.receiver, s.token, s.index = common.HexToAddress(receiver), common.HexToAddress(token), uint32(index)
	s.amount, _ = new(big.Int).SetString(amount, 10)
	if gasAmount != nil {
		s.gasAmount, _ = new(big.Int).SetString(*gasAmount, 10)
	}
	return &s, nil
}

// stepSweep advances one sweep by one step in one Postgres transaction,
// and broadcasts what that step stored only after the commit.
func (e *Executor) stepSweep(parent context.Context, id int64, seen map[common.Hash]bool) error {
	ctx, cancel := context.WithTimeout(parent, rowTimeout)
	defer cancel()
	var send *types.Transaction
	var c *chain
	var outcome string
	err := pgx.BeginFunc(ctx, e.pg, func(tx pgx.Tx) error {
		s, err := claimSweep(ctx, tx, id)
		if err != nil {
			return err
		}
		var ok bool
		if c, ok = e.chains[uint64(s.chainID)]; !ok {
			return errNotClaimed
		}
		send, outcome, err = e.sweepStep(ctx, tx, c, s, seen)
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
		seen[send.Hash()] = true
		e.markSent(send.Hash())
		if err := c.client.SendTransaction(ctx, send); err != nil && !benignSendError(err) && !nonceTooLow(err) {
			return fmt.Errorf("broadcasting sweep transaction %s (the stored bytes will be sent again): %w", send.Hash().Hex(), err)
		}
	}
	return nil
}

// sweepStep dispatches on the sweep's stage. It returns a transaction to
// broadcast after the commit, and the outcome to count.
func (e *Executor) sweepStep(ctx context.Context, tx pgx.Tx, c *chain, s *sweepRow, seen map[common.Hash]bool) (*types.Transaction, string, error) {
	switch s.status {
	case "pending":
		return e.sweepFundGas(ctx, tx, c, s)
	case "gas_sent":
		r, _, stolen, err := c.lookup(ctx, e.from, uint64(*s.gasNonce), []common.Hash{common.HexToHash(*s.gasHash)})
		switch {
		case err != nil:
			return nil, "", err
		case stolen || (r != nil && r.Status != types.ReceiptStatusSuccessful):
			return nil, outcomeAttention, sweepAttention(ctx, tx, s.id, fmt.Sprintf("gas top-up %s did not succeed (nonce used elsewhere or reverted)", *s.gasHash))
		case r == nil:
			return e.resend(s.gasRaw, seen)
		}
		return e.signSweep(ctx, tx, c, s)
	case "sent":
		r, _, stolen, err := c.lookup(ctx, s.receiver, uint64(*s.nonce), []common.Hash{common.HexToHash(*s.txHash)})
		switch {
		case err != nil:
			return nil, "", err
		case stolen:
			return nil, outcomeAttention, sweepAttention(ctx, tx, s.id, fmt.Sprintf("receiver %s used nonce %d for another transaction", s.receiver.Hex(), *s.nonce))
		case r == nil:
			return e.resend(s.rawTx, seen)
		case r.Status != types.ReceiptStatusSuccessful:
			// A token that refuses the receiver (paused, blacklisted):
			// the deposits stay in the receiver, tied to this sweep.
			return nil, outcomeAttention, sweepAttention(ctx, tx, s.id, fmt.Sprintf("sweep transfer %s reverted in block %s", r.TxHash.Hex(), r.BlockNumber))
		}
		if _, err := tx.Exec(ctx, `UPDATE sweeps SET status = 'mined', receipt_block_number = $2, receipt_block_hash = $3, error = NULL WHERE id = $1`,
			s.id, r.BlockNumber.Int64(), r.BlockHash.Hex()); err != nil {
			return nil, "", fmt.Errorf("marking sweep %d mined: %w", s.id, err)
		}
		return nil, outcomeMined, nil
	case "mined":
		return nil, "", e.sweepWatch(ctx, tx, c, s)
	}
	return nil, "", fmt.Errorf("sweep %d has status %q", s.id, s.status)
}

// resend queues stored bytes for re-broadcast if RebroadcastAfter passed.
func (e *Executor) resend(raw []byte, seen map[common.Hash]bool) (*types.Transaction, string, error) {
	t, err := decodeTx(raw)
	if err != nil {
		return nil, "", err
	}
	if !e.dueForRebroadcast(t.Hash(), seen) {
		return nil, "", nil
	}
	return t, "", nil
}

// sweepFees are the fees and gas of a receiver's transfer.
func (e *Executor) sweepFees(ctx context.Context, c *chain, s *sweepRow) (fees, uint64, error) {
	gas, err := c.estimate(ctx, s.receiver, s.token, transferData(e.from, s.amount))
	if err != nil {
		return fees{}, 0, fmt.Errorf("estimating sweep transfer: %w", err)
	}
	f, err := c.currentFees(ctx)
	if err != nil {
		return fees{}, 0, err
	}
	return f, max(gas, transferGasFloor), nil
}

// sweepFundGas tops up the receiver's gas from the treasury with what the
// transfer may cost at the current fee cap, less what it holds; a receiver
// that holds enough is swept at once.
func (e *Executor) sweepFundGas(ctx context.Context, tx pgx.Tx, c *chain, s *sweepRow) (*types.Transaction, string, error) {
	f, gas, err := e.sweepFees(ctx, c, s)
	if err != nil {
		return nil, "", err
	}
	bal, err := c.client.BalanceAt(ctx, s.receiver, nil)
	if err != nil {
		return nil, "", fmt.Errorf("reading gas balance of receiver %s: %w", s.receiver.Hex(), err)
	}
	need := new(big.Int).Mul(f.cap, new(big.Int).SetUint64(gas))
	if bal.Cmp(need) >= 0 {
		return e.signSweep(ctx, tx, c, s)
	}
	top := new(big.Int).Sub(need, bal)
	nonce, err := e.takeNonce(ctx, tx, c, nil)
	if err != nil {
		return nil, "", err
	}
	t, err := e.signValueTx(c, e.key, nonce, s.receiver, top, 21_000, f)
	if err != nil {
		return nil, "", err
	}
	raw, err := encodeTx(t)
	if err != nil {
		return nil, "", err
	}
	if _, err := tx.Exec(ctx, `UPDATE sweeps SET status = 'gas_sent', gas_amount = $2::numeric, gas_nonce = $3, gas_tx_hash = $4, gas_raw_tx = $5, error = NULL
		WHERE id = $1`, s.id, top.String(), int64(nonce), t.Hash().Hex(), raw); err != nil {
		return nil, "", fmt.Errorf("storing sweep gas top-up: %w", err)
	}
	return t, "gas_signed", nil
}

// signSweep signs and stores the receiver's transfer of the sweep's
// amount to the treasury, with fees the receiver's gas balance covers.
func (e *Executor) signSweep(ctx context.Context, tx pgx.Tx, c *chain, s *sweepRow) (*types.Transaction, string, error) {
	f, gas, err := e.sweepFees(ctx, c, s)
	if err != nil {
		return nil, "", err
	}
	bal, err := c.client.BalanceAt(ctx, s.receiver, nil)
	if err != nil {
		return nil, "", fmt.Errorf("reading gas balance of receiver %s: %w", s.receiver.Hex(), err)
	}
	// Fees may have risen since the top-up: pay what the receiver holds.
	if afford := new(big.Int).Div(bal, new(big.Int).SetUint64(gas)); afford.Cmp(f.cap) < 0 {
		f.cap = afford
		if f.tip.Cmp(f.cap) > 0 {
			f.tip = new(big.Int).Set(f.cap)
		}
	}
	key, err := e.cfg.ReceiverKey(s.index)
	if err != nil {
		return nil, "", fmt.Errorf("deriving receiver %d: %w", s.index, err)
	}
	if got := crypto.PubkeyToAddress(key.PublicKey); got != s.receiver {
		return nil, outcomeAttention, sweepAttention(ctx, tx, s.id, fmt.Sprintf("receiver index %d derives %s, not %s: wrong master seed?", s.index, got.Hex(), s.receiver.Hex()))
	}
	// Receivers sign nothing but sweeps, one open at a time: the chain's
	// pending nonce is theirs alone.
	nonce, err := c.client.PendingNonceAt(ctx, s.receiver)
	if err != nil {
		return nil, "", fmt.Errorf("getting nonce of receiver %s: %w", s.receiver.Hex(), err)
	}
	t, err := types.SignNewTx(key, c.signer, &types.DynamicFeeTx{ChainID: new(big.Int).SetUint64(c.id), Nonce: nonce,
		GasTipCap: f.tip, GasFeeCap: f.cap, Gas: gas, To: &s.token, Data: transferData(e.from, s.amount)})
	if err != nil {
		return nil, "", fmt.Errorf("signing sweep: %w", err)
	}
	raw, err := encodeTx(t)
	if err != nil {
		return nil, "", err
	}
	if _, err := tx.Exec(ctx, `UPDATE sweeps SET status = 'sent', nonce = $2, tx_hash = $3, raw_tx = $4, error = NULL WHERE id = $1`,
		s.id, int64(nonce), t.Hash().Hex(), raw); err != nil {
		return nil, "", fmt.Errorf("storing signed sweep: %w", err)
	}
	return t, outcomeSigned, nil
}

// sweepWatch confirms a mined sweep once its block is final, writing the
// sweep and sweep_gas ledger entries; a reorg that removed its block sends
// it back to be re-broadcast.
func (e *Executor) sweepWatch(ctx context.Context, tx pgx.Tx, c *chain, s *sweepRow) error {
	if s.receiptBlock == nil || s.receiptHash == nil {
		return fmt.Errorf("sweep %d is mined without a receipt block", s.id)
	}
	live, err := c.blockHash(ctx, uint64(*s.receiptBlock))
	if err != nil {
		return err
	}
	if live != common.HexToHash(*s.receiptHash) {
		_, err := tx.Exec(ctx, `UPDATE sweeps SET status = 'sent', receipt_block_number = NULL, receipt_block_hash = NULL WHERE id = $1`, s.id)
		if err == nil {
			e.sweepMetrics.sweeps.WithLabelValues(outcomeReorged).Inc()
		}
		return err
	}
	final, err := c.finalized(ctx)
	if err != nil || uint64(*s.receiptBlock) > final {
		return err
	}
	h, err := c.client.HeaderByNumber(ctx, big.NewInt(*s.receiptBlock))
	if err != nil {
		return fmt.Errorf("reading block %d: %w", *s.receiptBlock, err)
	}
	at := time.Unix(int64(h.Time), 0).UTC()
	tok := e.token(uint64(s.chainID), s.token)
	entries := []ledgerLine{{
		entryID: fmt.Sprintf("sweep:%d", s.id), kind: "sweep", sessionID: s.sessionID, merchantID: s.merchantID,
		chainID: s.chainID, token: hexAddr(s.token), symbol: tok.Symbol, decimals: tok.Decimals, from: hexAddr(s.receiver),
		to: hexAddr(e.from), txHash: *s.txHash, block: *s.receiptBlock, amount: s.amount, at: at,
	}}
	if s.gasAmount != nil && s.gasHash != nil {
		entries = append(entries, ledgerLine{
			entryID: fmt.Sprintf("sweep_gas:%d", s.id), kind: "sweep_gas", sessionID: s.sessionID, merchantID: s.merchantID,
			chainID: s.chainID, token: hexAddr(common.Address{}), symbol: "native", decimals: 18, from: hexAddr(e.from),
			to: hexAddr(s.receiver), txHash: *s.gasHash, amount: s.gasAmount, at: at,
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
	e.logger.InfoContext(ctx, "sweep final", "sweep_id", s.id, "chain_id", s.chainID, "receiver", hexAddr(s.receiver),
		"amount", s.amount.String(), "tx_hash", *s.txHash)
	return nil
}

func sweepAttention(ctx context.Context, tx pgx.Tx, id int64, reason string) error {
	if _, err := tx.Exec(ctx, `UPDATE sweeps SET status = 'needs_attention', error = $2 WHERE id = $1`, id, reason); err != nil {
		return fmt.Errorf("moving sweep %d to needs_attention: %w", id, err)
	}
	return nil
}

// signValueTx signs a plain coin transfer.
func (e *Executor) signValueTx(c *chain, key *ecdsa.PrivateKey, nonce uint64, to common.Address, value *big.Int, gas uint64, f fees) (*types.Transaction, error) {
	t, err := types.SignNewTx(key, c.signer, &types.DynamicFeeTx{ChainID: new(big.Int).SetUint64(c.id), Nonce: nonce,
		GasTipCap: f.tip, GasFeeCap: f.cap, Gas: gas, To: &to, Value: value})
	if err != nil {
		return nil, fmt.Errorf("signing transfer of %s wei to %s: %w", value, to.Hex(), err)
	}
	return t, nil
}

// token returns the configured token, or a bare one for an unlisted
// address.
func (e *Executor) token(chainID uint64, addr common.Address) Token {
	for _, t := range e.cfg.Tokens[chainID] {
		if t.Address == addr {
			return t
		}
	}
	return Token{Address: addr, Symbol: strings.ToLower(addr.Hex())}
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
