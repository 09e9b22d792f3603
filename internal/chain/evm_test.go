package chain

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/common"
)

// eip55Vectors are the checksummed addresses from the EIP-55 specification.
var eip55Vectors = []string{
	// All caps.
	"0x52908400098527886E0F7030069857D2E4169EE7",
	"0x8617E340B3D01FA5F11F306F4090FD50E238070D",
	// All lower.
	"0xde709f2102306220921060314715629080e2fb77",
	"0x27b1fdb04752bbc536007a920d24acb045561c26",
	// Normal.
	"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
	"0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
	"0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
	"0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
}

func TestParseEVMAddressSpecVectors(t *testing.T) {
	for _, s := range eip55Vectors {
		a, err := ParseEVMAddress(s)
		if err != nil {
			t.Errorf("ParseEVMAddress(%q) error: %v", s, err)
			continue
		}
		if want := mustDecodeHex(t, s[2:]); !bytes.Equal(a[:], want) {
			t.Errorf("ParseEVMAddress(%q) = %x, want %x", s, a, want)
		}
		// The all-caps and all-lower vectors are their own checksum form
		// only because of how their letters hash; every vector must
		// checksum to itself.
		if got := ChecksumAddress(a); got != s {
			t.Errorf("ChecksumAddress(%q) = %q, want %q", s, got, s)
		}
	}
}

func TestParseEVMAddress(t *testing.T) {
	const valid = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
	tests := []struct {
		name    string
		in      string
		wantErr error
	}{
		{"checksummed", valid, nil},
		{"all lowercase", strings.ToLower(valid), nil},
		{"all uppercase digits", "0x" + strings.ToUpper(valid[2:]), nil},
		{"digits only", "0x0000000000000000000000000000000000000000", nil},
		{"one letter flipped to upper", "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", ErrBadChecksum},
		{"one letter flipped to lower", "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed", ErrBadChecksum},
		{"last letter flipped", "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDB", ErrBadChecksum},
		{"checksum of another address", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d358", ErrBadChecksum},
		{"uppercase prefix", "0X" + valid[2:], ErrInvalidAddress},
		{"no prefix", valid[2:], ErrInvalidAddress},
		{"no prefix, 42 hex digits", "00" + valid[2:], ErrInvalidAddress},
		{"empty", "", ErrInvalidAddress},
		{"prefix only", "0x", ErrInvalidAddress},
		{"too short", valid[:41], ErrInvalidAddress},
		{"too long", valid + "0", ErrInvalidAddress},
		{"non-hex", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg", ErrInvalidAddress},
		{"leading space", " " + valid[:41], ErrInvalidAddress},
		{"trailing space", valid[:41] + " ", ErrInvalidAddress},
		{"32-byte word", "0x0000000000000000000000005aaeb6053f3e94c9b9a09f33669435e7ef1beaed", ErrInvalidAddress},
		{"ens name", "vitalik.eth", ErrInvalidAddress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseEVMAddress(tt.in)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("ParseEVMAddress(%q) error: %v", tt.in, err)
				}
				if want := mustDecodeHex(t, tt.in[2:]); !bytes.Equal(a[:], want) {
					t.Errorf("ParseEVMAddress(%q) = %x, want %x", tt.in, a, want)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ParseEVMAddress(%q) error = %v, want errors.Is %v", tt.in, err, tt.wantErr)
			}
			if !errors.Is(err, ErrInvalidAddress) {
				t.Errorf("ParseEVMAddress(%q) error = %v, does not match ErrInvalidAddress", tt.in, err)
			}
			if a != (common.Address{}) {
				t.Errorf("ParseEVMAddress(%q) returned non-zero address %x with an error", tt.in, a)
			}
		})
	}
}

func TestParseEVMAddressChecksumMessage(t *testing.T) {
	_, err := ParseEVMAddress("0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
	if err == nil || !strings.Contains(err.Error(), "invalid EIP-55 checksum") {
		t.Errorf("error = %v, want it to say the checksum is invalid", err)
	}
}

func TestParseHexData(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		maxBytes int
		want     string // hex without prefix; ignored when wantErr is set
		wantErr  error
	}{
		{"empty", "0x", 0, "", nil},
		{"transfer selector", "0xa9059cbb", 4, "a9059cbb", nil},
		{"mixed case", "0xDeadBeef", 10, "deadbeef", nil},
		{"exactly max", "0x00ff", 2, "00ff", nil},
		{"over max", "0x00ff00", 2, "", ErrDataTooLong},
		{"non-empty with zero max", "0x00", 0, "", ErrDataTooLong},
		{"negative max", "0x00", -1, "", ErrDataTooLong},
		{"empty with negative max", "0x", -1, "", nil},
		{"odd length", "0xabc", 10, "", ErrInvalidHexData},
		{"no prefix", "a9059cbb", 10, "", ErrInvalidHexData},
		{"uppercase prefix", "0Xa9059cbb", 10, "", ErrInvalidHexData},
		{"empty string", "", 10, "", ErrInvalidHexData},
		{"just zero", "0", 10, "", ErrInvalidHexData},
		{"non-hex", "0xzz", 10, "", ErrInvalidHexData},
		{"space", "0x a9", 10, "", ErrInvalidHexData},
		{"double prefix", "0x0x00", 10, "", ErrInvalidHexData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHexData(tt.in, tt.maxBytes)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseHexData(%q, %d) = %x, %v; want errors.Is %v", tt.in, tt.maxBytes, got, err, tt.wantErr)
				}
				if !errors.Is(err, ErrInvalidHexData) {
					t.Errorf("ParseHexData(%q, %d) error = %v, does not match ErrInvalidHexData", tt.in, tt.maxBytes, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseHexData(%q, %d) error: %v", tt.in, tt.maxBytes, err)
			}
			if got == nil {
				t.Errorf("ParseHexData(%q, %d) = nil, want a non-nil slice", tt.in, tt.maxBytes)
			}
			if hex.EncodeToString(got) != tt.want {
				t.Errorf("ParseHexData(%q, %d) = %x, want %s", tt.in, tt.maxBytes, got, tt.want)
			}
		})
	}
}

func TestParseHexDataHugeInputRejectedByLength(t *testing.T) {
	// Invalid characters past the limit must not matter: the length check
	// comes first so huge inputs are never decoded.
	in := "0x" + strings.Repeat("zz", 1<<20)
	_, err := ParseHexData(in, 1024)
	if !errors.Is(err, ErrDataTooLong) {
		t.Errorf("error = %v, want ErrDataTooLong", err)
	}
}

func FuzzParseEVMAddress(f *testing.F) {
	for _, s := range eip55Vectors {
		f.Add(s)
		f.Add(strings.ToLower(s))
	}
	for _, s := range []string{
		"",
		"0x",
		"0X5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
		"0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
		"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe",
		"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAedd",
		"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseEVMAddress(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidAddress) {
				t.Fatalf("ParseEVMAddress(%q) error %v does not match ErrInvalidAddress", s, err)
			}
			return
		}
		if len(s) != 42 || !strings.HasPrefix(s, "0x") {
			t.Fatalf("ParseEVMAddress accepted %q", s)
		}
		raw, herr := hex.DecodeString(s[2:])
		if herr != nil || !bytes.Equal(raw, a[:]) {
			t.Fatalf("ParseEVMAddress(%q) = %x, want the input's 20 bytes", s, a)
		}
		sum := ChecksumAddress(a)
		b, err := ParseEVMAddress(sum)
		if err != nil {
			t.Fatalf("ChecksumAddress(%x) = %q does not re-parse: %v", a, sum, err)
		}
		if b != a {
			t.Fatalf("ChecksumAddress round trip: %x -> %q -> %x", a, sum, b)
		}
		if !strings.EqualFold(sum, s) {
			t.Fatalf("ChecksumAddress(ParseEVMAddress(%q)) = %q, differs beyond case", s, sum)
		}
		if _, err := ParseEVMAddress(strings.ToLower(s)); err != nil {
			t.Fatalf("lowercase form of accepted %q rejected: %v", s, err)
		}
	})
}

func mustDecodeHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
	return b
}
