package evm

import (
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/math"
	"github.com/ethereum/go-ethereum/crypto"
)

// ERC-20 method selectors, the first four bytes of the Keccak-256 of each
// signature.
var (
	transferSelector  = selector("transfer(address,uint256)")
	approveSelector   = selector("approve(address,uint256)")
	balanceOfSelector = selector("balanceOf(address)")
)

func selector(sig string) []byte { return crypto.Keccak256([]byte(sig))[:4] }

func addressWord(a common.Address) []byte { return common.LeftPadBytes(a.Bytes(), 32) }

// uintWord encodes v as a uint256; v must be in range (checkAmount).
func uintWord(v *big.Int) []byte { return math.U256Bytes(new(big.Int).Set(v)) }

// checkAmount rejects amounts no uint256 can hold: numeric(78, 0) admits
// values up to 10^78, above 2^256.
func checkAmount(v *big.Int) error {
	if v.Sign() <= 0 || v.BitLen() > 256 {
		return fmt.Errorf("amount %s is not a positive uint256", v)
	}
	return nil
}

func transferData(to common.Address, amount *big.Int) []byte {
	return concat(transferSelector, addressWord(to), uintWord(amount))
}

func approveData(spender common.Address, amount *big.Int) []byte {
	return concat(approveSelector, addressWord(spender), uintWord(amount))
}

func balanceOfData(owner common.Address) []byte {
	return concat(balanceOfSelector, addressWord(owner))
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
