package hdwallet

import (
	"crypto/pbkdf2"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/ethereum/go-ethereum/crypto"
)

const hardened = hdkeychain.HardenedKeyStart

const (
	bip32Vector1Seed = "000102030405060708090a0b0c0d0e0f"
	bip32Vector2Seed = "fffcf9f6f3f0edeae7e4e1dedbd8d5d2cfccc9c6c3c0bdbab7b4b1aeaba8a5a29f9c999693908d8a8784817e7b7875726f6c696663605d5a5754514e4b484542"
)

// TestBIP32Vectors checks the library wiring (hdkeychain with mainnet
// version bytes) against test vectors 1 and 2 of BIP-32 itself.
func TestBIP32Vectors(t *testing.T) {
	tests := []struct {
		name     string
		seed     string
		path     []uint32
		wantPub  string
		wantPriv string
	}{
		{"1 m", bip32Vector1Seed, nil,
			"xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDFdp6W1EGMcet8",
			"xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi"},
		{"1 m/0H", bip32Vector1Seed, []uint32{hardened},
			"xpub68Gmy5EdvgibQVfPdqkBBCHxA5htiqg55crXYuXoQRKfDBFA1WEjWgP6LHhwBZeNK1VTsfTFUHCdrfp1bgwQ9xv5ski8PX9rL2dZXvgGDnw",
			"xprv9uHRZZhk6KAJC1avXpDAp4MDc3sQKNxDiPvvkX8Br5ngLNv1TxvUxt4cV1rGL5hj6KCesnDYUhd7oWgT11eZG7XnxHrnYeSvkzY7d2bhkJ7"},
		{"1 m/0H/1", bip32Vector1Seed, []uint32{hardened, 1},
			"xpub6ASuArnXKPbfEwhqN6e3mwBcDTgzisQN1wXN9BJcM47sSikHjJf3UFHKkNAWbWMiGj7Wf5uMash7SyYq527Hqck2AxYysAA7xmALppuCkwQ",
			"xprv9wTYmMFdV23N2TdNG573QoEsfRrWKQgWeibmLntzniatZvR9BmLnvSxqu53Kw1UmYPxLgboyZQaXwTCg8MSY3H2EU4pWcQDnRnrVA1xe8fs"},
		{"1 m/0H/1/2H", bip32Vector1Seed, []uint32{hardened, 1, hardened + 2},
			"xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5uJh7n7epu4trkrX7x7DogT5Uv6fcLW5",
			"xprv9z4pot5VBttmtdRTWfWQmoH1taj2axGVzFqSb8C9xaxKymcFzXBDptWmT7FwuEzG3ryjH4ktypQSAewRiNMjANTtpgP4mLTj34bhnZX7UiM"},
		{"1 m/0H/1/2H/2", bip32Vector1Seed, []uint32{hardened, 1, hardened + 2, 2},
			"xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZACTj37sR62cfN7fe5JnJ7dh8zL4fiyLHV",
			"xprvA2JDeKCSNNZky6uBCviVfJSKyQ1mDYahRjijr5idH2WwLsEd4Hsb2Tyh8RfQMuPh7f7RtyzTtdrbdqqsunu5Mm3wDvUAKRHSC34sJ7in334"},
		{"1 m/0H/1/2H/2/1000000000", bip32Vector1Seed, []uint32{hardened, 1, hardened + 2, 2, 1000000000},
			"xpub6H1LXWLaKsWFhvm6RVpEL9P4KfRZSW7abD2ttkWP3SSQvnyA8FSVqNTEcYFgJS2UaFcxupHiYkro49S8yGasTvXEYBVPamhGW6cFJodrTHy",
			"xprvA41z7zogVVwxVSgdKUHDy1SKmdb533PjDz7J6N6mV6uS3ze1ai8FHa8kmHScGpWmj4WggLyQjgPie1rFSruoUihUZREPSL39UNdE3BBDu76"},
		{"2 m", bip32Vector2Seed, nil,
			"xpub661MyMwAqRbcFW31YEwpkMuc5THy2PSt5bDMsktWQcFF8syAmRUapSCGu8ED9W6oDMSgv6Zz8idoc4a6mr8BDzTJY47LJhkJ8UB7WEGuduB",
			"xprv9s21ZrQH143K31xYSDQpPDxsXRTUcvj2iNHm5NUtrGiGG5e2DtALGdso3pGz6ssrdK4PFmM8NSpSBHNqPqm55Qn3LqFtT2emdEXVYsCzC2U"},
		{"2 m/0", bip32Vector2Seed, []uint32{0},
			"xpub69H7F5d8KSRgmmdJg2KhpAK8SR3DjMwAdkxj3ZuxV27CprR9LgpeyGmXUbC6wb7ERfvrnKZjXoUmmDznezpbZb7ap6r1D3tgFxHmwMkQTPH",
			"xprv9vHkqa6EV4sPZHYqZznhT2NPtPCjKuDKGY38FBWLvgaDx45zo9WQRUT3dKYnjwih2yJD9mkrocEZXo1ex8G81dwSM1fwqWpWkeS3v86pgKt"},
		{"2 m/0/2147483647H", bip32Vector2Seed, []uint32{0, hardened + 2147483647},
			"xpub6ASAVgeehLbnwdqV6UKMHVzgqAG8Gr6riv3Fxxpj8ksbH9ebxaEyBLZ85ySDhKiLDBrQSARLq1uNRts8RuJiHjaDMBU4Zn9h8LZNnBC5y4a",
			"xprv9wSp6B7kry3Vj9m1zSnLvN3xH8RdsPP1Mh7fAaR7aRLcQMKTR2vidYEeEg2mUCTAwCd6vnxVrcjfy2kRgVsFawNzmjuHc2YmYRmagcEPdU9"},
		{"2 m/0/2147483647H/1", bip32Vector2Seed, []uint32{0, hardened + 2147483647, 1},
			"xpub6DF8uhdarytz3FWdA8TvFSvvAh8dP3283MY7p2V4SeE2wyWmG5mg5EwVvmdMVCQcoNJxGoWaU9DCWh89LojfZ537wTfunKau47EL2dhHKon",
			"xprv9zFnWC6h2cLgpmSA46vutJzBcfJ8yaJGg8cX1e5StJh45BBciYTRXSd25UEPVuesF9yog62tGAQtHjXajPPdbRCHuWS6T8XA2ECKADdw4Ef"},
		{"2 m/0/2147483647H/1/2147483646H", bip32Vector2Seed, []uint32{0, hardened + 2147483647, 1, hardened + 2147483646},
			"xpub6ERApfZwUNrhLCkDtcHTcxd75RbzS1ed54G1LkBUHQVHQKqhMkhgbmJbZRkrgZw4koxb5JaHWkY4ALHY2grBGRjaDMzQLcgJvLJuZZvRcEL",
			"xprvA1RpRA33e1JQ7ifknakTFpgNXPmW2YvmhqLQYMmrj4xJXXWYpDPS3xz7iAxn8L39njGVyuoseXzU6rcxFLJ8HFsTjSyQbLYnMpCqE2VbFWc"},
		{"2 m/0/2147483647H/1/2147483646H/2", bip32Vector2Seed, []uint32{0, hardened + 2147483647, 1, hardened + 2147483646, 2},
			"xpub6FnCn6nSzZAw5Tw7cgR9bi15UV96gLZhjDstkXXxvCLsUXBGXPdSnLFbdpq8p9HmGsApME5hQTZ3emM2rnY5agb9rXpVGyy3bdW6EEgAtqt",
			"xprvA2nrNbFZABcdryreWet9Ea4LvTJcGsqrMzxHx98MMrotbir7yrKCEXw7nadnHM8Dq38EGfSh6dqA9QWTyefMLEcBYJUuekgW4BYPJcr9E7j"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := hdkeychain.NewMaster(mustHex(t, tt.seed), &chaincfg.MainNetParams)
			if err != nil {
				t.Fatalf("NewMaster: %v", err)
			}
			for _, i := range tt.path {
				if key, err = key.Derive(i); err != nil {
					t.Fatalf("Derive(%d): %v", i, err)
				}
			}
			if got := key.String(); got != tt.wantPriv {
				t.Errorf("xprv = %s, want %s", got, tt.wantPriv)
			}
			pub, err := key.Neuter()
			if err != nil {
				t.Fatalf("Neuter: %v", err)
			}
			if got := pub.String(); got != tt.wantPub {
				t.Errorf("xpub = %s, want %s", got, tt.wantPub)
			}
		})
	}
}

// bip39Seed computes a BIP-39 seed from a mnemonic with an empty passphrase.
// The mnemonics used here are ASCII, so NFKD normalisation is a no-op.
func bip39Seed(t *testing.T, mnemonic string) []byte {
	t.Helper()
	seed, err := pbkdf2.Key(sha512.New, mnemonic, []byte("mnemonic"), 2048, 64)
	if err != nil {
		t.Fatalf("pbkdf2: %v", err)
	}
	return seed
}

const abandonMnemonic = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"

// TestKnownEthereumAddress checks the whole path, seed to address, against
// the address every BIP-44 Ethereum wallet (MetaMask, Ledger, Trezor) shows
// first for the standard BIP-39 test mnemonic.
func TestKnownEthereumAddress(t *testing.T) {
	seed := bip39Seed(t, abandonMnemonic)
	// Guards the PBKDF2 parameters above, independently of derivation.
	const wantSeed = "5eb00bbddcf069084889a8ab9155568165f5c453ccb85e70811aaed6f6da5fc1" +
		"9a5ac40b389cd370d086206dec8aa6c43daea6690f20ad3d8d48b2d2ce9e38e4"
	if got := hex.EncodeToString(seed); got != wantSeed {
		t.Fatalf("BIP-39 seed = %s, want %s", got, wantSeed)
	}

	m, err := MasterFromSeed(seed)
	if err != nil {
		t.Fatalf("MasterFromSeed: %v", err)
	}
	xpub, err := m.AccountXPub()
	if err != nil {
		t.Fatalf("AccountXPub: %v", err)
	}
	r, err := ParseXPub(xpub)
	if err != nil {
		t.Fatalf("ParseXPub(AccountXPub()): %v", err)
	}

	tests := []struct {
		index uint32
		want  string
	}{
		{0, "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"},
		{1, "0x6Fac4D18c912343BF86fa7049364Dd4E424Ab9C0"},
		{2, "0xb6716976A3ebe8D39aCEB04372f22Ff8e6802D7A"},
	}
	for _, tt := range tests {
		addr, err := r.Address(tt.index)
		if err != nil {
			t.Fatalf("Address(%d): %v", tt.index, err)
		}
		if got := addr.Hex(); got != tt.want {
			t.Errorf("Address(%d) = %s, want %s", tt.index, got, tt.want)
		}
		key, err := m.PrivateKey(tt.index)
		if err != nil {
			t.Fatalf("PrivateKey(%d): %v", tt.index, err)
		}
		if got := crypto.PubkeyToAddress(key.PublicKey).Hex(); got != tt.want {
			t.Errorf("PrivateKey(%d) address = %s, want %s", tt.index, got, tt.want)
		}
	}
}

func TestPrivateKeyMatchesReceiverAddress(t *testing.T) {
	m, err := MasterFromSeed(mustHex(t, bip32Vector2Seed))
	if err != nil {
		t.Fatalf("MasterFromSeed: %v", err)
	}
	xpub, err := m.AccountXPub()
	if err != nil {
		t.Fatalf("AccountXPub: %v", err)
	}
	r, err := ParseXPub(xpub)
	if err != nil {
		t.Fatalf("ParseXPub: %v", err)
	}
	seen := map[string]uint32{}
	for _, i := range []uint32{0, 1, 2, 3, 42, 1000, 65535, 1 << 30, MaxIndex} {
		addr, err := r.Address(i)
		if err != nil {
			t.Fatalf("Address(%d): %v", i, err)
		}
		key, err := m.PrivateKey(i)
		if err != nil {
			t.Fatalf("PrivateKey(%d): %v", i, err)
		}
		if got := crypto.PubkeyToAddress(key.PublicKey); got != addr {
			t.Errorf("index %d: PrivateKey address %s, Receivers address %s", i, got.Hex(), addr.Hex())
		}
		if prev, dup := seen[addr.Hex()]; dup {
			t.Errorf("indexes %d and %d share address %s", prev, i, addr.Hex())
		}
		seen[addr.Hex()] = i
	}
}

// TestAccountXPubIsReceiversBranch pins AccountXPub to m/44'/60'/0'/0 as
// derived independently with hdkeychain.
func TestAccountXPubIsReceiversBranch(t *testing.T) {
	seed := mustHex(t, bip32Vector1Seed)
	key, err := hdkeychain.NewMaster(seed, &chaincfg.MainNetParams)
	if err != nil {
		t.Fatalf("NewMaster: %v", err)
	}
	for _, i := range []uint32{hardened + 44, hardened + 60, hardened, 0} {
		if key, err = key.Derive(i); err != nil {
			t.Fatalf("Derive: %v", err)
		}
	}
	pub, err := key.Neuter()
	if err != nil {
		t.Fatalf("Neuter: %v", err)
	}
	m, err := MasterFromSeed(seed)
	if err != nil {
		t.Fatalf("MasterFromSeed: %v", err)
	}
	got, err := m.AccountXPub()
	if err != nil {
		t.Fatalf("AccountXPub: %v", err)
	}
	if want := pub.String(); got != want {
		t.Errorf("AccountXPub() = %s, want %s", got, want)
	}
	if !strings.HasPrefix(got, "xpub") {
		t.Errorf("AccountXPub() = %s, want an xpub", got)
	}
}

func TestParseXPubRejects(t *testing.T) {
	seed := mustHex(t, bip32Vector1Seed)
	root, err := hdkeychain.NewMaster(seed, &chaincfg.MainNetParams)
	if err != nil {
		t.Fatalf("NewMaster: %v", err)
	}
	derive := func(k *hdkeychain.ExtendedKey, path ...uint32) *hdkeychain.ExtendedKey {
		t.Helper()
		for _, i := range path {
			if k, err = k.Derive(i); err != nil {
				t.Fatalf("Derive: %v", err)
			}
		}
		return k
	}
	neuter := func(k *hdkeychain.ExtendedKey) string {
		t.Helper()
		pub, err := k.Neuter()
		if err != nil {
			t.Fatalf("Neuter: %v", err)
		}
		return pub.String()
	}
	branch := derive(root, hardened+44, hardened+60, hardened, 0)
	account := derive(root, hardened+44, hardened+60, hardened)
	change := derive(root, hardened+44, hardened+60, hardened, 1)
	testnet := derive(root, hardened+44, hardened+60, hardened, 0)
	testnet.SetNet(&chaincfg.TestNet3Params)

	validXPub := neuter(branch)
	tests := []struct {
		name    string
		in      string
		wantErr error // nil means any error
	}{
		{"master xprv", root.String(), ErrPrivateKey},
		{"receivers branch xprv", branch.String(), ErrPrivateKey},
		{"bip32 vector xprv", "xprvA2JDeKCSNNZky6uBCviVfJSKyQ1mDYahRjijr5idH2WwLsEd4Hsb2Tyh8RfQMuPh7f7RtyzTtdrbdqqsunu5Mm3wDvUAKRHSC34sJ7in334", ErrPrivateKey},
		{"testnet tprv", testnet.String(), ErrPrivateKey},
		{"master xpub", neuter(root), ErrWrongBranch},
		{"account-level xpub", neuter(account), ErrWrongBranch},
		{"change branch xpub", neuter(change), ErrWrongBranch},
		{"receiver leaf xpub", neuter(derive(branch, 0)), ErrWrongBranch},
		{"testnet tpub", neuter(testnet), nil},
		{"empty", "", hdkeychain.ErrInvalidKeyLen},
		{"garbage", "not an xpub", nil},
		{"trailing newline", validXPub + "\n", nil},
		{"bad checksum", validXPub[:len(validXPub)-1] + flipBase58(validXPub[len(validXPub)-1]), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseXPub(tt.in)
			if err == nil {
				t.Fatalf("ParseXPub accepted %q", tt.in)
			}
			if r != nil {
				t.Errorf("ParseXPub returned a Receivers with an error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("ParseXPub error = %v, want errors.Is %v", err, tt.wantErr)
			}
			if tt.in != "" && strings.Contains(err.Error(), tt.in) {
				t.Errorf("error %q echoes the input, which may be a secret", err)
			}
		})
	}
	if _, err := ParseXPub(validXPub); err != nil {
		t.Errorf("ParseXPub(valid) error: %v", err)
	}
}

func TestIndexOutOfRange(t *testing.T) {
	m, err := MasterFromSeed(mustHex(t, bip32Vector1Seed))
	if err != nil {
		t.Fatalf("MasterFromSeed: %v", err)
	}
	xpub, err := m.AccountXPub()
	if err != nil {
		t.Fatalf("AccountXPub: %v", err)
	}
	r, err := ParseXPub(xpub)
	if err != nil {
		t.Fatalf("ParseXPub: %v", err)
	}
	for _, i := range []uint32{MaxIndex + 1, 1 << 31, 1<<31 + 1, math.MaxUint32} {
		if _, err := r.Address(i); !errors.Is(err, ErrIndexOutOfRange) {
			t.Errorf("Address(%d) error = %v, want ErrIndexOutOfRange", i, err)
		}
		if _, err := m.PrivateKey(i); !errors.Is(err, ErrIndexOutOfRange) {
			t.Errorf("PrivateKey(%d) error = %v, want ErrIndexOutOfRange", i, err)
		}
	}
}

func TestMasterFromSeedLength(t *testing.T) {
	tests := []struct {
		n    int
		okay bool
	}{
		{0, false}, {15, false}, {16, true}, {32, true}, {64, true}, {65, false},
	}
	for _, tt := range tests {
		seed := make([]byte, tt.n)
		for i := range seed {
			seed[i] = byte(i + 1)
		}
		_, err := MasterFromSeed(seed)
		if (err == nil) != tt.okay {
			t.Errorf("MasterFromSeed(%d bytes) error = %v, want ok=%v", tt.n, err, tt.okay)
		}
	}
}

func TestNewSeed(t *testing.T) {
	a, err := NewSeed()
	if err != nil {
		t.Fatalf("NewSeed: %v", err)
	}
	b, err := NewSeed()
	if err != nil {
		t.Fatalf("NewSeed: %v", err)
	}
	if len(a) != SeedLen || len(b) != SeedLen {
		t.Fatalf("NewSeed lengths %d, %d; want %d", len(a), len(b), SeedLen)
	}
	if string(a) == string(b) {
		t.Error("two NewSeed calls returned the same seed")
	}
	if _, err := MasterFromSeed(a); err != nil {
		t.Errorf("MasterFromSeed(NewSeed()): %v", err)
	}
}

// TestConcurrentUse is meant to be run with -race; it also checks that
// concurrent derivation gives the same answers as sequential derivation.
func TestConcurrentUse(t *testing.T) {
	m, err := MasterFromSeed(mustHex(t, bip32Vector2Seed))
	if err != nil {
		t.Fatalf("MasterFromSeed: %v", err)
	}
	xpub, err := m.AccountXPub()
	if err != nil {
		t.Fatalf("AccountXPub: %v", err)
	}
	r, err := ParseXPub(xpub)
	if err != nil {
		t.Fatalf("ParseXPub: %v", err)
	}
	const n = 16
	want := make([]string, n)
	for i := range want {
		a, err := r.Address(uint32(i))
		if err != nil {
			t.Fatalf("Address(%d): %v", i, err)
		}
		want[i] = a.Hex()
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				a, err := r.Address(uint32(i))
				if err != nil || a.Hex() != want[i] {
					t.Errorf("concurrent Address(%d) = %s, %v; want %s", i, a.Hex(), err, want[i])
				}
				k, err := m.PrivateKey(uint32(i))
				if err != nil || crypto.PubkeyToAddress(k.PublicKey).Hex() != want[i] {
					t.Errorf("concurrent PrivateKey(%d) mismatch (err %v)", i, err)
				}
				if _, err := m.AccountXPub(); err != nil {
					t.Errorf("concurrent AccountXPub: %v", err)
				}
			}
		}()
	}
	wg.Wait()
}

// flipBase58 returns a different base58 character than c.
func flipBase58(c byte) string {
	if c == '1' {
		return "2"
	}
	return "1"
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
	return b
}

func TestTreasuryKeyIsItsOwnAccount(t *testing.T) {
	m, err := MasterFromSeed(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	k1, err := m.TreasuryKey()
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := m.TreasuryKey()
	treasury := crypto.PubkeyToAddress(k1.PublicKey)
	if treasury != crypto.PubkeyToAddress(k2.PublicKey) {
		t.Fatal("treasury key is not deterministic")
	}
	for i := uint32(0); i < 50; i++ {
		r, err := m.PrivateKey(i)
		if err != nil {
			t.Fatal(err)
		}
		if crypto.PubkeyToAddress(r.PublicKey) == treasury {
			t.Fatalf("treasury equals receiver %d", i)
		}
	}
}
