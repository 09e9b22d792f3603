package chain

import (
	"errors"
	"math/big"
	"strings"
	"testing"
)

func TestParseUnits(t *testing.T) {
	tests := []struct {
		in       string
		decimals uint8
		want     string // smallest units in base 10; empty means an error is expected
		wantErr  error
	}{
		{"10", 6, "10000000", nil},
		{"10.5", 6, "10500000", nil},
		{"0.000001", 6, "1", nil},
		{"10.00", 6, "10000000", nil},
		{"0", 6, "0", nil},
		{"0.0", 6, "0", nil},
		{"0.10", 6, "100000", nil},
		{"0.5", 6, "500000", nil},
		{"1.123456", 6, "1123456", nil},
		{"123", 0, "123", nil},
		{"1.5", 18, "1500000000000000000", nil},
		{"0." + strings.Repeat("0", 254) + "1", 255, "1", nil},
		{"1", 76, "1" + strings.Repeat("0", 76), nil},
		{strings.Repeat("9", 77), 0, strings.Repeat("9", 77), nil},
		// 2^256-1 is the largest value that fits on chain.
		{"115792089237316195423570985008687907853269984665640564039457584007913129639935", 0,
			"115792089237316195423570985008687907853269984665640564039457584007913129639935", nil},

		{"1.1234567", 6, "", ErrTooManyDecimals},
		{"0.1", 0, "", ErrTooManyDecimals},
		{"1." + strings.Repeat("0", 19), 18, "", ErrTooManyDecimals},
		{"", 6, "", ErrInvalidAmount},
		{".5", 6, "", ErrInvalidAmount},
		{"5.", 6, "", ErrInvalidAmount},
		{".", 6, "", ErrInvalidAmount},
		{"1.2.3", 6, "", ErrInvalidAmount},
		{"007", 6, "", ErrInvalidAmount},
		{"00", 6, "", ErrInvalidAmount},
		{"00.5", 6, "", ErrInvalidAmount},
		{"01.5", 6, "", ErrInvalidAmount},
		{"-1", 6, "", ErrInvalidAmount},
		{"+1", 6, "", ErrInvalidAmount},
		{"1e6", 6, "", ErrInvalidAmount},
		{"1E6", 6, "", ErrInvalidAmount},
		{" 1", 6, "", ErrInvalidAmount},
		{"1 ", 6, "", ErrInvalidAmount},
		{"1_000", 6, "", ErrInvalidAmount},
		{"1,000", 6, "", ErrInvalidAmount},
		{"1,5", 6, "", ErrInvalidAmount},
		{"0x10", 6, "", ErrInvalidAmount},
		{"NaN", 6, "", ErrInvalidAmount},
		{"Inf", 6, "", ErrInvalidAmount},
		{"\uff11", 6, "", ErrInvalidAmount}, // fullwidth digit one
		{"\u0663", 6, "", ErrInvalidAmount}, // Arabic-Indic digit three
		{"1\x00", 6, "", ErrInvalidAmount},
		{strings.Repeat("1", 79), 0, "", ErrInvalidAmount},
		{strings.Repeat("1", 10000), 6, "", ErrInvalidAmount},
		// 2^256 does not fit on chain.
		{"115792089237316195423570985008687907853269984665640564039457584007913129639936", 0, "", ErrInvalidAmount},
		{"1" + strings.Repeat("0", 60), 18, "", ErrInvalidAmount},
		{"1", 255, "", ErrInvalidAmount},
	}
	for _, tt := range tests {
		got, err := ParseUnits(tt.in, tt.decimals)
		if tt.wantErr != nil {
			if err == nil {
				t.Errorf("ParseUnits(%q, %d) = %v, want error %v", tt.in, tt.decimals, got, tt.wantErr)
				continue
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("ParseUnits(%q, %d) error = %v, want errors.Is %v", tt.in, tt.decimals, err, tt.wantErr)
			}
			if !errors.Is(err, ErrInvalidAmount) {
				t.Errorf("ParseUnits(%q, %d) error = %v, does not match ErrInvalidAmount", tt.in, tt.decimals, err)
			}
			if got != nil {
				t.Errorf("ParseUnits(%q, %d) returned value %v alongside error", tt.in, tt.decimals, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseUnits(%q, %d) error: %v", tt.in, tt.decimals, err)
			continue
		}
		if got.String() != tt.want {
			t.Errorf("ParseUnits(%q, %d) = %s, want %s", tt.in, tt.decimals, got, tt.want)
		}
	}
}

func TestParseUnitsErrorMessages(t *testing.T) {
	tests := []struct {
		in       string
		decimals uint8
		want     string
	}{
		{"1.1234567", 6, `amount "1.1234567" has 7 fraction digits; token allows 6`},
		{"007", 6, `invalid amount "007": leading zeros are not allowed`},
		{"1e6", 6, `invalid amount "1e6": only digits and a single '.' are allowed`},
		{"", 6, `invalid amount "": empty`},
	}
	for _, tt := range tests {
		_, err := ParseUnits(tt.in, tt.decimals)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ParseUnits(%q, %d) error = %v, want %q", tt.in, tt.decimals, err, tt.want)
		}
	}
}

func TestParseUnitsLongInputMessageIsBounded(t *testing.T) {
	_, err := ParseUnits(strings.Repeat("9", 1<<20), 6)
	if err == nil {
		t.Fatal("ParseUnits accepted a 1 MiB amount")
	}
	if len(err.Error()) > 200 {
		t.Errorf("error message is %d bytes; want it truncated", len(err.Error()))
	}
}

func TestFormatUnits(t *testing.T) {
	tests := []struct {
		v        string
		decimals uint8
		want     string
	}{
		{"10500000", 6, "10.5"},
		{"10000000", 6, "10"},
		{"1", 6, "0.000001"},
		{"0", 6, "0"},
		{"0", 0, "0"},
		{"123", 0, "123"},
		{"100000", 6, "0.1"},
		{"999999", 6, "0.999999"},
		{"1000000", 6, "1"},
		{"1123456", 6, "1.123456"},
		{"1500000000000000000", 18, "1.5"},
		{"-10500000", 6, "-10.5"},
		{"-1", 6, "-0.000001"},
		{"-5", 0, "-5"},
		{"1", 255, "0." + strings.Repeat("0", 254) + "1"},
	}
	for _, tt := range tests {
		v, ok := new(big.Int).SetString(tt.v, 10)
		if !ok {
			t.Fatalf("bad test value %q", tt.v)
		}
		if got := FormatUnits(v, tt.decimals); got != tt.want {
			t.Errorf("FormatUnits(%s, %d) = %q, want %q", tt.v, tt.decimals, got, tt.want)
		}
	}
	if got := FormatUnits(nil, 6); got != "0" {
		t.Errorf("FormatUnits(nil, 6) = %q, want \"0\"", got)
	}
}

func TestFormatUnitsDoesNotMutate(t *testing.T) {
	v := big.NewInt(-42)
	FormatUnits(v, 2)
	if v.Int64() != -42 {
		t.Errorf("FormatUnits changed its argument to %v", v)
	}
}

func FuzzParseUnits(f *testing.F) {
	seeds := []struct {
		s string
		d uint8
	}{
		{"10", 6}, {"10.5", 6}, {"0.000001", 6}, {"10.00", 6}, {"0", 0},
		{"1.1234567", 6}, {".5", 6}, {"5.", 6}, {"007", 6}, {"-1", 6},
		{"1e6", 6}, {"1_000", 6}, {"0.10", 18}, {strings.Repeat("9", 78), 0},
		{"115792089237316195423570985008687907853269984665640564039457584007913129639935", 0},
	}
	for _, s := range seeds {
		f.Add(s.s, s.d)
	}
	f.Fuzz(func(t *testing.T, s string, decimals uint8) {
		v, err := ParseUnits(s, decimals)
		if err != nil {
			if !errors.Is(err, ErrInvalidAmount) {
				t.Fatalf("ParseUnits(%q, %d) error %v does not match ErrInvalidAmount", s, decimals, err)
			}
			if v != nil {
				t.Fatalf("ParseUnits(%q, %d) returned %v with error", s, decimals, v)
			}
			return
		}
		if v.Sign() < 0 {
			t.Fatalf("ParseUnits(%q, %d) = %v, negative", s, decimals, v)
		}
		formatted := FormatUnits(v, decimals)
		back, err := ParseUnits(formatted, decimals)
		if err != nil {
			t.Fatalf("FormatUnits(ParseUnits(%q, %d)) = %q does not parse: %v", s, decimals, formatted, err)
		}
		if back.Cmp(v) != 0 {
			t.Fatalf("round trip of %q with %d decimals: %v -> %q -> %v", s, decimals, v, formatted, back)
		}
		// A string without trailing fraction zeros is already canonical,
		// so formatting must reproduce it byte for byte.
		if !strings.Contains(s, ".") || !strings.HasSuffix(s, "0") {
			if formatted != s {
				t.Fatalf("FormatUnits(ParseUnits(%q, %d)) = %q, want the input back", s, decimals, formatted)
			}
		}
		if again := FormatUnits(back, decimals); again != formatted {
			t.Fatalf("FormatUnits is not stable: %q then %q", formatted, again)
		}
	})
}
