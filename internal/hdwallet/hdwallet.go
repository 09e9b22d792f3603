// Package hdwallet derives settle's per-payment receiver addresses from one
// BIP-32 (secp256k1) seed along the BIP-44 Ethereum path
// m/44'/60'/0'/0/i.
//
// The package is split along the trust boundary: Master holds the private
// seed and is only for the offline or signing side (setup, sweeping), while
// Receivers holds nothing but the extended public key of m/44'/60'/0'/0, so
// the internet-facing API process can hand out fresh addresses without ever
// being able to spend from them.
package hdwallet

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// SeedLen is the length in bytes of seeds made by NewSeed (256 bits, the
// BIP-32 recommendation).
const SeedLen = 32

// MaxIndex is the largest receiver index. Indexes at or above 2^31 would be
// hardened children, which cannot be derived from an xpub.
const MaxIndex = hdkeychain.HardenedKeyStart - 1

// receiversPath is m/44'/60'/0'/0: BIP-44 purpose, SLIP-44 coin type 60
// (Ethereum), account 0, external chain. The three hardened levels mean a
// leaked receiver private key plus the xpub cannot reveal keys outside this
// branch.
var receiversPath = []uint32{
	hdkeychain.HardenedKeyStart + 44,
	hdkeychain.HardenedKeyStart + 60,
	hdkeychain.HardenedKeyStart + 0,
	0,
}

// ErrIndexOutOfRange is returned (wrapped) for a receiver index above
// MaxIndex.
var ErrIndexOutOfRange = errors.New("receiver index out of range")

// ErrPrivateKey is returned (wrapped) when ParseXPub is given an extended
// private key. Refusing it keeps spending keys out of the API process even
// if someone pastes the wrong string into its configuration.
var ErrPrivateKey = errors.New("extended private key given where an xpub is required")

// ErrWrongBranch is returned (wrapped) when ParseXPub is given a valid xpub
// that is not the receivers branch m/44'/60'/0'/0. The common mistake is the
// account-level xpub (m/44'/60'/0', which wallets export), which would
// silently produce addresses no standard wallet shows for this seed.
var ErrWrongBranch = errors.New("xpub is not for the receivers branch m/44'/60'/0'/0")

// NewSeed returns SeedLen bytes from crypto/rand for MasterFromSeed.
func NewSeed() ([]byte, error) {
	seed := make([]byte, SeedLen)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("reading random seed: %w", err)
	}
	return seed, nil
}

// Master holds the private root key derived from a seed. It can produce the
// receivers xpub for the API and the private key of any receiver for
// sweeping. It is safe for concurrent use.
type Master struct {
	// mu serialises derivation because hdkeychain lazily caches the
	// public key inside private ExtendedKeys, which is a write.
	mu sync.Mutex
	// root is kept, though only branch is used today, so that sibling
	// branches (change addresses, other coin types) can be added without
	// changing how a Master is built or what it is given.
	root   *hdkeychain.ExtendedKey
	branch *hdkeychain.ExtendedKey // private key of m/44'/60'/0'/0
}

// MasterFromSeed builds the BIP-32 root from seed (16 to 64 bytes; a
// BIP-39 mnemonic's 64-byte seed works too) and pre-derives the receivers
// branch.
func MasterFromSeed(seed []byte) (*Master, error) {
	root, err := hdkeychain.NewMaster(seed, &chaincfg.MainNetParams)
	if err != nil {
		return nil, fmt.Errorf("creating master key: %w", err)
	}
	branch := root
	for _, i := range receiversPath {
		// A derivation error here means an invalid child (odds below
		// 2^-127) on a fixed path; there is no sensible fallback, so
		// the seed is simply unusable.
		if branch, err = branch.Derive(i); err != nil {
			return nil, fmt.Errorf("deriving m/44'/60'/0'/0: %w", err)
		}
	}
	return &Master{root: root, branch: branch}, nil
}

// AccountXPub returns the serialized extended public key ("xpub...") of the
// receivers branch m/44'/60'/0'/0. This string is all that ParseXPub, and so
// the API process, needs.
func (m *Master) AccountXPub() (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pub, err := m.branch.Neuter()
	if err != nil {
		return "", fmt.Errorf("neutering receivers branch: %w", err)
	}
	return pub.String(), nil
}

// PrivateKey returns the private key of receiver index, at
// m/44'/60'/0'/0/index, in the form go-ethereum signs with. Its address
// equals the one Receivers.Address returns for the same index.
func (m *Master) PrivateKey(index uint32) (*ecdsa.PrivateKey, error) {
	if index > MaxIndex {
		return nil, fmt.Errorf("deriving receiver %d: %w", index, ErrIndexOutOfRange)
	}
	m.mu.Lock()
	child, err := m.branch.Derive(index)
	m.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("deriving receiver %d: %w", index, err)
	}
	defer child.Zero()
	priv, err := child.ECPrivKey()
	if err != nil {
		return nil, fmt.Errorf("deriving receiver %d: %w", index, err)
	}
	raw := priv.Serialize()
	defer clear(raw)
	priv.Zero()
	key, err := crypto.ToECDSA(raw)
	if err != nil {
		return nil, fmt.Errorf("converting receiver %d key: %w", index, err)
	}
	return key, nil
}

// TreasuryKey returns the private key of the treasury account, at
// m/44'/60'/1'/0/0: a separate account from the receivers, so no receiver
// index can ever collide with it. The treasury pays deliveries and refunds
// on every EVM chain.
func (m *Master) TreasuryKey() (*ecdsa.PrivateKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := m.root
	var err error
	for _, i := range []uint32{hdkeychain.HardenedKeyStart + 44, hdkeychain.HardenedKeyStart + 60, hdkeychain.HardenedKeyStart + 1, 0, 0} {
		if k, err = k.Derive(i); err != nil {
			return nil, fmt.Errorf("deriving treasury key: %w", err)
		}
	}
	defer k.Zero()
	priv, err := k.ECPrivKey()
	if err != nil {
		return nil, fmt.Errorf("deriving treasury key: %w", err)
	}
	raw := priv.Serialize()
	defer clear(raw)
	priv.Zero()
	key, err := crypto.ToECDSA(raw)
	if err != nil {
		return nil, fmt.Errorf("converting treasury key: %w", err)
	}
	return key, nil
}

// Receivers derives receiver addresses from the public receivers branch
// only. It holds no private key material. It is safe for concurrent use:
// public derivation in hdkeychain only reads the parent key.
type Receivers struct {
	branch *hdkeychain.ExtendedKey
}

// ParseXPub parses the mainnet extended public key of m/44'/60'/0'/0, as
// returned by Master.AccountXPub. Extended private keys are rejected
// (ErrPrivateKey), as are xpubs at another depth or child position
// (ErrWrongBranch). Error messages never echo the input, since a pasted
// xprv is a secret.
func ParseXPub(xpub string) (*Receivers, error) {
	key, err := hdkeychain.NewKeyFromString(xpub)
	if err != nil {
		return nil, fmt.Errorf("parsing xpub: %w", err)
	}
	if key.IsPrivate() {
		key.Zero()
		return nil, fmt.Errorf("parsing xpub: %w", ErrPrivateKey)
	}
	// Only the mainnet xpub version is accepted: tpub, ypub, zpub and
	// friends signal a different wallet setup than the one addresses
	// are promised for, and an xprv version with public key data is
	// malformed.
	if !bytes.Equal(key.Version(), chaincfg.MainNetParams.HDPublicKeyID[:]) {
		return nil, fmt.Errorf("parsing xpub: version %x is not a mainnet xpub", key.Version())
	}
	if key.Depth() != uint8(len(receiversPath)) || key.ChildIndex() != receiversPath[len(receiversPath)-1] {
		return nil, fmt.Errorf("parsing xpub: depth %d, child %d: %w",
			key.Depth(), key.ChildIndex(), ErrWrongBranch)
	}
	return &Receivers{branch: key}, nil
}

// Address returns the Ethereum address of receiver index, the public half
// of m/44'/60'/0'/0/index. Index must be at most MaxIndex.
//
// With probability below 2^-127 an index has no valid key (BIP-32); the
// error then wraps hdkeychain.ErrInvalidChild and the caller should skip to
// the next index.
func (r *Receivers) Address(index uint32) (common.Address, error) {
	if index > MaxIndex {
		return common.Address{}, fmt.Errorf("deriving receiver %d: %w", index, ErrIndexOutOfRange)
	}
	child, err := r.branch.Derive(index)
	if err != nil {
		return common.Address{}, fmt.Errorf("deriving receiver %d: %w", index, err)
	}
	pub, err := child.ECPubKey()
	if err != nil {
		return common.Address{}, fmt.Errorf("deriving receiver %d: %w", index, err)
	}
	// Ethereum hashes the uncompressed point, not BIP-32's compressed form.
	ecdsaPub, err := crypto.UnmarshalPubkey(pub.SerializeUncompressed())
	if err != nil {
		return common.Address{}, fmt.Errorf("converting receiver %d key: %w", index, err)
	}
	return crypto.PubkeyToAddress(*ecdsaPub), nil
}
