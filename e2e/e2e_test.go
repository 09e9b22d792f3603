package e2e

import (
	"context"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/shopspring/decimal"

	"github.com/settle-dev/settle/docs/finance"
	"github.com/settle-dev/settle/internal/anvil"
)

func evmDest(chainID int, token, to common.Address, amount string) map[string]any {
	d := map[string]any{"type": "evm", "address": to.Hex(), "chainId": chainID, "tokenAddress": token.Hex()}
	if amount != "" {
		d["amountUnits"] = amount
	}
	return d
}

// (a) An exact deposit on chain A ends succeeded with a delivery on chain B,
// whose hash and amount come from the indexed transfer.
//
// The merchant's webhook endpoint (HTTPS, signatures checked with the
// reference verifier) gets every status change of the session once, in
// sequence order, the last with the session as GET returns it.
func TestExactDepositSucceedsWithCrossChainDelivery(t *testing.T) {
	s := newStack(t, options{webhooks: true})
	dest := anvil.DevAddress(7)
	id, _, recv := s.session(evmDest(chainB, s.usdcB, dest, "10.00"), nil)
	before := s.balance(s.b, s.usdcB, dest)
	tx := s.pay(s.a, s.usdcA, recv, 10_000_000)

	sess := s.waitStatus(id, "processing", 20*time.Second)
	src := sess["paymentMethod"].(map[string]any)["source"].(map[string]any)
	if src["txHash"] != strings.ToLower(tx.Hex()) || src["sentUnits"] != "10" || src["chainId"] != float64(chainA) ||
		src["tokenSymbol"] != "USDC" || !strings.EqualFold(src["address"].(string), anvil.DevAddress(payerKey).Hex()) {
		t.Errorf("source = %v", src)
	}
	sess = s.waitStatus(id, "succeeded", 60*time.Second)
	delivery := sess["destination"].(map[string]any)["delivery"].(map[string]any)
	if delivery["receivedUnits"] != "10" {
		t.Errorf("delivery = %v", delivery)
	}
	receipt, err := s.b.Client().TransactionReceipt(context.Background(), common.HexToHash(delivery["txHash"].(string)))
	if err != nil || receipt.Status != 1 {
		t.Fatalf("delivery tx %v on chain B: %v %v", delivery["txHash"], receipt, err)
	}
	if got := new(big.Int).Sub(s.balance(s.b, s.usdcB, dest), before); got.Int64() != 10_000_000 {
		t.Errorf("destination received %s units, want 10000000", got)
	}
	if got := s.ledger(id, 2); strings.Join(got, "|") != "delivery 10000000|deposit 10000000" {
		t.Errorf("ledger = %q", got)
	}
	var status string
	var final bool
	if err := s.db.PG.QueryRow(context.Background(), `SELECT status, receipt_final FROM payouts WHERE session_id = $1 AND kind = 'delivery'`, id).
		Scan(&status, &final); err != nil || status != "confirmed" || !final {
		t.Errorf("delivery payout status %q receipt_final %v (%v), want confirmed and final", status, final, err)
	}

	evs := s.hooks.waitFor(t, id, "session.succeeded", 20*time.Second)
	checkEvents(t, evs, []string{"session.created", "session.waiting_payment", "session.processing", "session.succeeded"}, s.get(id))
}

// (b) Calldata to a contract: a call that works succeeds with the merchant
// contract holding the amount; one that reverts bounces with a refund on the
// source chain.
func TestCalldataDeliveryAndBounce(t *testing.T) {
	s := newStack(t, options{})
	order := [32]byte{1}
	okData, err := anvil.MerchantDepositCalldata(s.usdcB, big.NewInt(5_000_000), order)
	if err != nil {
		t.Fatal(err)
	}
	badData, err := anvil.MerchantRevertCalldata(s.usdcB, big.NewInt(5_000_000), order)
	if err != nil {
		t.Fatal(err)
	}
	refundTo := anvil.DevAddress(8)
	good := evmDest(chainB, s.usdcB, s.merchant, "5")
	good["calldata"] = "0x" + common.Bytes2Hex(okData)
	bad := evmDest(chainB, s.usdcB, s.merchant, "5")
	bad["calldata"] = "0x" + common.Bytes2Hex(badData)
	idOK, _, recvOK := s.session(good, nil)
	idBad, _, recvBad := s.session(bad, map[string]any{"refundAddress": refundTo.Hex()})
	refundBefore := s.balance(s.a, s.usdcA, refundTo)
	s.pay(s.a, s.usdcA, recvOK, 5_000_000)
	s.pay(s.a, s.usdcA, recvBad, 5_000_000)

	// A revert re-mined after a reorg may succeed: the refund must wait
	// until the revert is final. Watch for a refund next to a revert that
	// is not final yet, in one snapshot, until the session bounced.
	early := make(chan int, 1)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch() // also when a wait below fails the test
	go func() {
		seen := 0
		defer func() { early <- seen }()
		for watchCtx.Err() == nil {
			var n int
			err := s.db.PG.QueryRow(watchCtx, `SELECT count(*) FROM payouts r JOIN payouts d ON d.session_id = r.session_id AND d.kind = 'delivery'
				WHERE r.session_id = $1 AND r.kind = 'refund' AND NOT d.receipt_final`, idBad).Scan(&n)
			if err == nil {
				seen += n
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	s.waitStatus(idOK, "succeeded", 60*time.Second)
	if paid, err := s.b.MerchantPaid(context.Background(), s.merchant, order); err != nil || paid.Int64() != 5_000_000 {
		t.Errorf("merchant contract paid %v (%v), want 5000000", paid, err)
	}
	sess := s.waitStatus(idBad, "bounced", 60*time.Second)
	stopWatch()
	if n := <-early; n != 0 {
		t.Errorf("a refund was scheduled while the delivery's revert was not final (%d observations)", n)
	}
	delivery := sess["destination"].(map[string]any)["delivery"].(map[string]any)
	receipt, err := s.a.Client().TransactionReceipt(context.Background(), common.HexToHash(delivery["txHash"].(string)))
	if err != nil || receipt.Status != 1 {
		t.Fatalf("refund tx %v on chain A: %v", delivery["txHash"], err)
	}
	if got := new(big.Int).Sub(s.balance(s.a, s.usdcA, refundTo), refundBefore); got.Int64() != 5_000_000 || delivery["receivedUnits"] != "5" {
		t.Errorf("refund address received %s (delivery %v), want 5000000", got, delivery)
	}
	if got := s.ledger(idBad, 2); strings.Join(got, "|") != "deposit 5000000|refund 5000000" {
		t.Errorf("bounced ledger = %q", got)
	}
}

// (c) No deposit: expired. A deposit after expiry: a late exception, not
// credited.
func TestExpiryAndLateDeposit(t *testing.T) {
	s := newStack(t, options{sessionTTL: 2 * time.Second})
	id, _, recv := s.session(evmDest(chainB, s.usdcB, anvil.DevAddress(7), "1"), nil)
	s.waitStatus(id, "expired", 30*time.Second)
	s.pay(s.a, s.usdcA, recv, 1_000_000)
	if got := s.ledger(id, 1); strings.Join(got, "|") != "exception late 1000000" {
		t.Errorf("ledger = %q", got)
	}
	time.Sleep(time.Second)
	if st := s.get(id)["status"]; st != "expired" {
		t.Errorf("late deposit changed the session to %v", st)
	}
	var payouts int
	if err := s.db.PG.QueryRow(context.Background(), `SELECT count(*) FROM payouts`).Scan(&payouts); err != nil || payouts != 0 {
		t.Errorf("payouts = %d (%v), want none", payouts, err)
	}
}

// (d) A token with the same symbol at another address is not credited.
func TestLookalikeTokenNotCredited(t *testing.T) {
	s := newStack(t, options{})
	id, _, recv := s.session(evmDest(chainB, s.usdcB, anvil.DevAddress(7), "3"), nil)
	s.pay(s.a, s.fakeA, recv, 3_000_000)
	if got := s.ledger(id, 1); strings.Join(got, "|") != "exception wrong_token 3000000" {
		t.Errorf("ledger = %q", got)
	}
	time.Sleep(time.Second)
	if st := s.get(id)["status"]; st != "waiting_payment" {
		t.Errorf("status %v after a look-alike token, want waiting_payment", st)
	}
}

// (e) Underpayment, overpayment and two deposits to one receiver.
func TestAmountRules(t *testing.T) {
	s := newStack(t, options{sessionTTL: 15 * time.Second})
	dest := anvil.DevAddress(7)
	refundTo := anvil.DevAddress(8)
	under, _, recvUnder := s.session(evmDest(chainB, s.usdcB, dest, "10"), map[string]any{"refundAddress": refundTo.Hex()})
	over, _, recvOver := s.session(evmDest(chainB, s.usdcB, dest, "10"), nil)
	two, _, recvTwo := s.session(evmDest(chainB, s.usdcB, dest, "10"), nil)
	open, _, recvOpen := s.session(evmDest(chainB, s.usdcB, dest, ""), nil)
	refundBefore := s.balance(s.a, s.usdcA, refundTo)
	destBefore := s.balance(s.b, s.usdcB, dest)

	s.pay(s.a, s.usdcA, recvUnder, 4_000_000)
	s.pay(s.a, s.usdcA, recvOver, 15_000_000)
	s.pay(s.a, s.usdcA, recvTwo, 6_000_000)
	s.pay(s.a, s.usdcA, recvTwo, 4_000_000)
	s.pay(s.a, s.usdcA, recvOpen, 7_250_000)
	// Underpaid: processing (waiting for a top-up) until the deadline.
	s.waitStatus(under, "processing", 10*time.Second)

	// Overpaid: the requested amount is delivered, the surplus recorded.
	sess := s.waitStatus(over, "succeeded", 60*time.Second)
	if d := sess["destination"].(map[string]any)["delivery"].(map[string]any); d["receivedUnits"] != "10" {
		t.Errorf("overpaid delivery = %v", d)
	}
	if got := s.ledger(over, 3); strings.Join(got, "|") != "delivery 10000000|deposit 15000000|exception overpaid 5000000" {
		t.Errorf("overpaid ledger = %q", got)
	}
	// Two deposits that add up to the amount: one delivery of the amount.
	s.waitStatus(two, "succeeded", 60*time.Second)
	if got := s.ledger(two, 3); strings.Join(got, "|") != "delivery 10000000|deposit 4000000|deposit 6000000" {
		t.Errorf("two-deposit ledger = %q", got)
	}
	// Open amount: whatever arrived is delivered.
	sess = s.waitStatus(open, "succeeded", 60*time.Second)
	if d := sess["destination"].(map[string]any)["delivery"].(map[string]any); d["receivedUnits"] != "7.25" {
		t.Errorf("open-amount delivery = %v", d)
	}
	// Underpaid, past the deadline: refunded in full.
	sess = s.waitStatus(under, "bounced", 60*time.Second)
	if got := new(big.Int).Sub(s.balance(s.a, s.usdcA, refundTo), refundBefore); got.Int64() != 4_000_000 {
		t.Errorf("underpaid refund = %s, want 4000000 (%v)", got, sess)
	}
	if got := new(big.Int).Sub(s.balance(s.b, s.usdcB, dest), destBefore); got.Int64() != 27_250_000 {
		t.Errorf("destination received %s, want 10 + 10 + 7.25 USDC", got)
	}
	var deliveries int
	if err := s.db.PG.QueryRow(context.Background(), `SELECT count(*) FROM payouts WHERE kind = 'delivery'`).Scan(&deliveries); err != nil || deliveries != 3 {
		t.Errorf("deliveries = %d (%v), want 3", deliveries, err)
	}
}

// (f) A deposit a reorg removes before it is final: the session goes back to
// waiting and never succeeds on it.
func TestReorgedDepositDoesNotSucceed(t *testing.T) {
	s := newStack(t, options{finalityDepth: 40})
	id, _, recv := s.session(evmDest(chainB, s.usdcB, anvil.DevAddress(7), "2"), nil)
	tx := s.pay(s.a, s.usdcA, recv, 2_000_000)
	s.waitStatus(id, "processing", 20*time.Second)
	ctx := context.Background()
	receipt, err := s.a.Client().TransactionReceipt(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	head, err := s.a.Client().BlockNumber(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.a.Reorg(ctx, int(head-receipt.BlockNumber.Uint64())+1); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(id, "waiting_payment", 30*time.Second)
	if got := s.ledger(id, 2); strings.Join(got, "|") != "deposit 2000000|unapply reorg 2000000" {
		t.Errorf("ledger = %q", got)
	}
	// Give finality every chance to (wrongly) happen.
	time.Sleep(10 * time.Second)
	if st := s.get(id)["status"]; st != "waiting_payment" {
		t.Fatalf("status %v after the reorg, want waiting_payment", st)
	}
	var payouts int
	if err := s.db.PG.QueryRow(ctx, `SELECT count(*) FROM payouts`).Scan(&payouts); err != nil || payouts != 0 {
		t.Errorf("payouts = %d (%v), want none", payouts, err)
	}
}

// PUT check with a txHash attributes the deposit at once, before any
// indexer has seen it; when the indexer catches up the same deposit is not
// applied again.
func TestCheckWithTxHashAttributesAtOnce(t *testing.T) {
	s := newStack(t, options{deferIndexers: true})
	id, secret, recv := s.session(evmDest(chainB, s.usdcB, anvil.DevAddress(7), "2"), nil)
	tx := s.pay(s.a, s.usdcA, recv, 2_000_000)
	time.Sleep(500 * time.Millisecond)
	if st := s.get(id)["status"]; st != "waiting_payment" {
		t.Fatalf("status %v with no indexer running, want waiting_payment", st)
	}
	code, out := s.do("PUT", "/v1/sessions/"+id+"/check", map[string]any{"clientSecret": secret, "txHash": tx.Hex()}, false)
	if code != 200 {
		t.Fatalf("check: %d %v", code, out)
	}
	sess := out["session"].(map[string]any)
	if sess["status"] != "processing" {
		t.Fatalf("check with txHash answered %v, want processing at once", sess["status"])
	}
	if src := sess["paymentMethod"].(map[string]any)["source"].(map[string]any); src["txHash"] != strings.ToLower(tx.Hex()) {
		t.Errorf("source = %v", src)
	}
	s.startIndexers()
	s.waitStatus(id, "succeeded", 60*time.Second)
	var deposits int
	if err := s.db.PG.QueryRow(context.Background(), `SELECT count(*) FROM deposits`).Scan(&deposits); err != nil || deposits != 1 {
		t.Errorf("deposits = %d (%v), want 1", deposits, err)
	}
}

// The README's finance queries, run against a real scenario: one exact
// deposit, one overpayment, one look-alike token.
func TestFinanceQueries(t *testing.T) {
	s := newStack(t, options{})
	dest := anvil.DevAddress(7)
	exact, _, recvExact := s.session(evmDest(chainB, s.usdcB, dest, "10"), nil)
	over, _, recvOver := s.session(evmDest(chainB, s.usdcB, dest, "10"), nil)
	fake, _, recvFake := s.session(evmDest(chainB, s.usdcB, dest, "10"), nil)
	s.pay(s.a, s.usdcA, recvExact, 10_000_000)
	s.pay(s.a, s.usdcA, recvOver, 12_500_000)
	fakeTx := s.pay(s.a, s.fakeA, recvFake, 9_000_000)
	s.waitStatus(exact, "succeeded", 60*time.Second)
	s.waitStatus(over, "succeeded", 60*time.Second)
	// The ledger reaches ClickHouse shortly after the decisions.
	s.ledger(exact, 2)
	s.ledger(over, 3)
	s.ledger(fake, 1)
	ctx := context.Background()

	rows, err := s.db.CH.Query(ctx, finance.VolumePerDay)
	if err != nil {
		t.Fatal(err)
	}
	var deposits uint64
	var units decimal.Decimal
	for rows.Next() {
		var day time.Time
		var merchant, symbol, token string
		var chainID, n uint64
		var u decimal.Decimal
		if err := rows.Scan(&day, &merchant, &chainID, &symbol, &token, &n, &u); err != nil {
			t.Fatal(err)
		}
		if chainID != chainA || symbol != "USDC" {
			t.Errorf("volume row for chain %d %s", chainID, symbol)
		}
		deposits += n
		units = units.Add(u)
	}
	rows.Close()
	if deposits != 2 || units.String() != "22500000" {
		t.Errorf("volume: %d deposits, %s units; want 2 and 22500000", deposits, units)
	}

	rows, err = s.db.CH.Query(ctx, finance.UnaccountedTransfers)
	if err != nil {
		t.Fatal(err)
	}
	var unaccounted []string
	for rows.Next() {
		var chainID, block uint64
		var tx, token, from, to, amount, session string
		var logIndex uint32
		if err := rows.Scan(&chainID, &block, &tx, &logIndex, &token, &from, &to, &amount, &session); err != nil {
			t.Fatal(err)
		}
		unaccounted = append(unaccounted, tx+" "+amount+" "+session)
	}
	rows.Close()
	if want := strings.ToLower(fakeTx.Hex()) + " 9000000 " + fake; len(unaccounted) != 1 || unaccounted[0] != want {
		t.Errorf("unaccounted = %q, want [%q]", unaccounted, want)
	}

	var id string
	var in, delivered, refunded, held, variance, swept, inReceiver, sweepGas decimal.Decimal
	var wrongToken int64
	err = s.db.CH.QueryRow(ctx, strings.ReplaceAll(finance.SessionStatement, "SESSION_ID", over)).
		Scan(&id, &in, &delivered, &refunded, &held, &variance, &swept, &inReceiver, &sweepGas, &wrongToken)
	if err != nil {
		t.Fatal(err)
	}
	e12 := decimal.New(1, 12)
	if !in.Equal(decimal.NewFromInt(12_500_000).Mul(e12)) || !delivered.Equal(decimal.NewFromInt(10_000_000).Mul(e12)) ||
		!refunded.IsZero() || !held.Equal(decimal.NewFromInt(2_500_000).Mul(e12)) || !variance.Equal(held) || wrongToken != 0 {
		t.Errorf("statement of the overpaid session: in %s delivered %s refunded %s held %s variance %s wrong-token transfers %d",
			in, delivered, refunded, held, variance, wrongToken)
	}
	// This stack does not sweep: everything deposited is still in the
	// receiver (TestSweepStatement covers a swept session).
	if !swept.IsZero() || !inReceiver.Equal(in) || !sweepGas.IsZero() {
		t.Errorf("statement of the unswept session: swept %s in receiver %s sweep gas %s", swept, inReceiver, sweepGas)
	}
	// The look-alike token is no money of the session's: counted apart.
	err = s.db.CH.QueryRow(ctx, strings.ReplaceAll(finance.SessionStatement, "SESSION_ID", fake)).
		Scan(&id, &in, &delivered, &refunded, &held, &variance, &swept, &inReceiver, &sweepGas, &wrongToken)
	if err != nil {
		t.Fatal(err)
	}
	if !in.IsZero() || !held.IsZero() || wrongToken != 1 {
		t.Errorf("statement of the look-alike token's session: in %s held %s wrong-token transfers %d, want 0, 0 and 1", in, held, wrongToken)
	}
}

// With finality from the nodes' "finalized" tag (anvil finalizes 64 blocks
// behind its head), nothing settles before the deposit's block is
// finalized, and everything does once it is.
func TestFinalizedTagFinality(t *testing.T) {
	s := newStack(t, options{finalizedTag: true})
	ctx := context.Background()
	// Start well past the first 64 blocks, so "finalized" is a real block.
	for _, n := range []*anvil.Node{s.a, s.b} {
		if err := n.Mine(ctx, 70); err != nil {
			t.Fatal(err)
		}
	}
	id, _, recv := s.session(evmDest(chainB, s.usdcB, anvil.DevAddress(7), "1"), nil)
	s.pay(s.a, s.usdcA, recv, 1_000_000)
	s.waitStatus(id, "processing", 20*time.Second)
	time.Sleep(3 * time.Second) // 15 blocks: final under a depth of 3, not under the tag
	var payouts int
	if err := s.db.PG.QueryRow(ctx, `SELECT count(*) FROM payouts`).Scan(&payouts); err != nil || payouts != 0 {
		t.Fatalf("a payout was scheduled before the deposit was finalized (%d, %v)", payouts, err)
	}
	if err := s.a.Mine(ctx, 70); err != nil {
		t.Fatal(err)
	}
	// The delivery is sent on chain B; finalize it there too.
	deadline := time.Now().Add(60 * time.Second)
	for s.get(id)["status"] != "succeeded" {
		if time.Now().After(deadline) {
			t.Fatalf("session %s did not succeed once its blocks were finalized: %v", id, s.get(id))
		}
		if err := s.b.Mine(ctx, 70); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
	}
}

// A delivery whose block a reorg removes before it is final is sent again
// as the same signed transaction: the destination is paid exactly once.
func TestReorgedDeliveryIsResentOnce(t *testing.T) {
	s := newStack(t, options{finalityDepth: 25})
	ctx := context.Background()
	dest := anvil.DevAddress(9)
	id, _, recv := s.session(evmDest(chainB, s.usdcB, dest, "3"), nil)
	s.pay(s.a, s.usdcA, recv, 3_000_000)
	var seenBlock int64
	var firstHash string
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := s.db.PG.QueryRow(ctx, `SELECT seen_block_number, seen_tx_hash FROM payouts WHERE session_id = $1 AND seen_block_number IS NOT NULL`, id).Scan(&seenBlock, &firstHash)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivery not seen on chain B: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	head, err := s.b.Client().BlockNumber(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.b.Reorg(ctx, int(head-uint64(seenBlock))+1); err != nil {
		t.Fatal(err)
	}
	sess := s.waitStatus(id, "succeeded", 90*time.Second)
	if got := s.balance(s.b, s.usdcB, dest).Int64(); got != 3_000_000 {
		t.Errorf("destination holds %d, want exactly 3000000", got)
	}
	delivery := sess["destination"].(map[string]any)["delivery"].(map[string]any)
	if delivery["txHash"] != firstHash {
		t.Errorf("delivered by %v, want the same signed transaction %s", delivery["txHash"], firstHash)
	}
	var live uint64
	treasury := strings.ToLower(crypto.PubkeyToAddress(s.treasury.PublicKey).Hex())
	if err := s.db.CH.QueryRow(ctx, `SELECT count() FROM transfers FINAL WHERE chain_id = ? AND from_address = ? AND deleted = 0`, uint64(chainB), treasury).Scan(&live); err != nil || live != 1 {
		t.Errorf("live treasury transfers on chain B = %d (%v), want 1", live, err)
	}
}
