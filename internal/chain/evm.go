package chain

import (
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/ethereum/go-ethereum/common"
)

// ErrInvalidAddress is matched (via errors.Is) by every error
// ParseEVMAddress returns.
var ErrInvalidAddress = errors.New("invalid address")

// ErrBadChecksum is matched (via errors.Is) when a mixed-case address fails
// its EIP-55 checksum. It also matches ErrInvalidAddress. It is separate
// because a bad checksum usually means a mistyped address, and telling the
// user so is the whole point of EIP-55.
var ErrBadChecksum = fmt.Errorf("%w: bad EIP-55 checksum", ErrInvalidAddress)

// ErrInvalidHexData is matched (via errors.Is) by every error ParseHexData
// returns.
var ErrInvalidHexData = errors.New("invalid hex data")

// ErrDataTooLong is matched (via errors.Is) when hex data decodes to more
// bytes than allowed. It also matches ErrInvalidHexData.
var ErrDataTooLong = fmt.Errorf("%w: too long", ErrInvalidHexData)

// ParseEVMAddress parses a "0x"-prefixed, 40-hex-digit EVM address.
//
// Hex letters that are all lowercase or all uppercase carry no checksum and
// are accepted as is. Mixed case is taken as an EIP-55 checksum and must be
// valid (ErrBadChecksum otherwise): accepting a wrong checksum would defeat
// the typo protection the sender opted into. The "0X" prefix is rejected
// because no wallet emits it and accepting it only widens the input space.
//
// All errors match ErrInvalidAddress with errors.Is.
func ParseEVMAddress(s string) (common.Address, error) {
	var a common.Address
	if len(s) != 2+2*common.AddressLength || s[0] != '0' || s[1] != 'x' {
		return a, &chainError{ErrInvalidAddress,
			fmt.Sprintf("invalid address %s: want 0x followed by 40 hex digits", quoteInput(s))}
	}
	digits := s[2:]
	if _, err := hex.Decode(a[:], []byte(digits)); err != nil {
		return common.Address{}, &chainError{ErrInvalidAddress,
			fmt.Sprintf("invalid address %s: want 0x followed by 40 hex digits", quoteInput(s))}
	}
	var lower, upper bool
	for i := 0; i < len(digits); i++ {
		switch c := digits[i]; {
		case c >= 'a' && c <= 'f':
			lower = true
		case c >= 'A' && c <= 'F':
			upper = true
		}
	}
	if lower && upper && a.Hex() != s {
		return common.Address{}, &chainError{ErrBadChecksum,
			fmt.Sprintf("address %s has an invalid EIP-55 checksum (mistyped?)", quoteInput(s))}
	}
	return a, nil
}

// ChecksumAddress returns the EIP-55 mixed-case form of a, the form to show
// to people and to return from the API.
func ChecksumAddress(a common.Address) string {
	return a.Hex()
}

// ParseHexData decodes "0x"-prefixed, even-length hex such as EVM call data.
// "0x" alone is valid and yields an empty, non-nil slice. Data decoding to
// more than maxBytes bytes is rejected (ErrDataTooLong) before any decoding
// work is done. A negative maxBytes rejects everything but "0x".
//
// All errors match ErrInvalidHexData with errors.Is.
func ParseHexData(s string, maxBytes int) ([]byte, error) {
	if len(s) < 2 || s[0] != '0' || s[1] != 'x' {
		return nil, &chainError{ErrInvalidHexData,
			fmt.Sprintf("invalid hex data %s: want 0x prefix", quoteInput(s))}
	}
	digits := s[2:]
	if len(digits)%2 != 0 {
		return nil, &chainError{ErrInvalidHexData,
			fmt.Sprintf("invalid hex data %s: odd number of hex digits", quoteInput(s))}
	}
	if n := len(digits) / 2; n > max(maxBytes, 0) {
		return nil, &chainError{ErrDataTooLong,
			fmt.Sprintf("hex data is %d bytes; at most %d allowed", n, max(maxBytes, 0))}
	}
	out := make([]byte, len(digits)/2)
	if _, err := hex.Decode(out, []byte(digits)); err != nil {
		return nil, &chainError{ErrInvalidHexData,
			fmt.Sprintf("invalid hex data %s: %v", quoteInput(s), err)}
	}
	return out, nil
}
