package delivery

import (
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// The drain from issue 7: a session whose destination is the token itself,
// with calldata transfer(0x…dead, 500000e6), paid 1 unit. The treasury must
// lose at most the payout's 1 unit, whatever the calldata says.
func TestDrainByTokenTransferCalldata(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	e, _ := f.executor(nil)
	dead := common.HexToAddress("0x000000000000000000000000000000000000dEaD")
	steal := transferData(dead, big.NewInt(500_000_000_000))
	before := f.balance(f.treasury)
	id := f.addPayout(f.token, 1, steal)
	f.runUntil(e, 30*time.Second, f.status(id))
	if got := f.balance(dead); got.Sign() != 0 {
		t.Errorf("0x…dead received %s units from the treasury's call", got)
	}
	if lost := new(big.Int).Sub(before, f.balance(f.treasury)); lost.Cmp(big.NewInt(1)) > 0 {
		t.Errorf("treasury lost %s units for a payout of 1", lost)
	}
}
