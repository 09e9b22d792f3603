package chain

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
)

// ErrInvalidAmount is matched (via errors.Is) by every error ParseUnits
// returns, so callers can map all malformed amounts to one client error.
var ErrInvalidAmount = errors.New("invalid amount")

// ErrTooManyDecimals is matched (via errors.Is) when an amount has more
// fraction digits than the token supports. It also matches ErrInvalidAmount.
// It is separate because rounding would silently change the amount a payer
// owes, so callers may want to tell the user exactly what went wrong.
var ErrTooManyDecimals = fmt.Errorf("%w: too many fraction digits", ErrInvalidAmount)

// MaxIntegerDigits bounds the whole-unit part of an amount accepted by
// ParseUnits. 78 digits is the width of the largest uint256, the widest
// integer any supported chain stores, so nothing longer can be legitimate
// and rejecting it early keeps big.Int work on hostile input bounded.
const MaxIntegerDigits = 78

// maxAmountLen is the longest string any decimals value could accept:
// integer digits, the dot, and up to 255 fraction digits.
const maxAmountLen = MaxIntegerDigits + 1 + math.MaxUint8

// maxUint256 is the largest smallest-unit value ParseUnits accepts; larger
// values could never be transferred on chain.
var maxUint256 = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))

func invalidAmount(s, reason string) error {
	return &chainError{kind: ErrInvalidAmount, msg: fmt.Sprintf("invalid amount %s: %s", quoteInput(s), reason)}
}

// ParseUnits converts a decimal string such as "10.5" into an integer
// number of smallest units for a token with the given number of decimals
// ("10.5" with 6 decimals is 10500000).
//
// The accepted grammar is deliberately narrow: ASCII digits with at most one
// '.', at least one digit on each side of the dot, no sign, exponent,
// whitespace or separators, and no leading zeros beyond a single "0" before
// the dot. Fraction digits beyond decimals are an error (ErrTooManyDecimals),
// never rounded. The result must fit in 256 bits.
//
// All errors match ErrInvalidAmount with errors.Is.
func ParseUnits(s string, decimals uint8) (*big.Int, error) {
	// Cheap length gate before any per-byte work. It is independent of
	// decimals so that moderately long fractions still get the more
	// helpful ErrTooManyDecimals message below.
	if len(s) > maxAmountLen {
		return nil, invalidAmount(s, "too long")
	}
	if s == "" {
		return nil, invalidAmount(s, "empty")
	}

	intPart, fracPart, hasDot := strings.Cut(s, ".")
	if !isDigits(intPart) || !isDigits(fracPart) {
		return nil, invalidAmount(s, "only digits and a single '.' are allowed")
	}
	if intPart == "" {
		return nil, invalidAmount(s, "missing digits before '.'")
	}
	if hasDot && fracPart == "" {
		return nil, invalidAmount(s, "missing digits after '.'")
	}
	if len(intPart) > 1 && intPart[0] == '0' {
		return nil, invalidAmount(s, "leading zeros are not allowed")
	}
	if len(intPart) > MaxIntegerDigits {
		return nil, invalidAmount(s, fmt.Sprintf("more than %d integer digits", MaxIntegerDigits))
	}
	if len(fracPart) > int(decimals) {
		return nil, &chainError{
			kind: ErrTooManyDecimals,
			msg: fmt.Sprintf("amount %s has %d fraction digits; token allows %d",
				quoteInput(s), len(fracPart), decimals),
		}
	}

	// Right-pad the fraction so the concatenation is already the value in
	// smallest units; this avoids any multiplication and any rounding.
	digits := intPart + fracPart + strings.Repeat("0", int(decimals)-len(fracPart))
	v, ok := new(big.Int).SetString(digits, 10)
	if !ok {
		// Unreachable given the checks above; kept so a future grammar
		// change cannot turn into a nil dereference.
		return nil, invalidAmount(s, "not a number")
	}
	if v.Cmp(maxUint256) > 0 {
		return nil, invalidAmount(s, "exceeds the largest on-chain amount (2^256-1 smallest units)")
	}
	return v, nil
}

// isDigits reports whether s consists only of ASCII digits. The empty string
// qualifies; callers check emptiness separately for clearer messages.
func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// FormatUnits renders an integer number of smallest units as a decimal
// string with the given number of decimals. It is the canonical inverse of
// ParseUnits: trailing zeros in the fraction are trimmed, and the dot is
// dropped when the fraction is zero (10000000 with 6 decimals is "10", not
// "10.000000"), so equal values always format identically. Negative values
// get a leading "-", which ParseUnits will not accept back. A nil v formats
// as "0".
func FormatUnits(v *big.Int, decimals uint8) string {
	if v == nil {
		return "0"
	}
	digits := new(big.Int).Abs(v).String()
	sign := ""
	if v.Sign() < 0 {
		sign = "-"
	}
	d := int(decimals)
	if d == 0 {
		return sign + digits
	}
	if len(digits) <= d {
		digits = strings.Repeat("0", d-len(digits)+1) + digits
	}
	intPart, fracPart := digits[:len(digits)-d], strings.TrimRight(digits[len(digits)-d:], "0")
	if fracPart == "" {
		return sign + intPart
	}
	return sign + intPart + "." + fracPart
}
