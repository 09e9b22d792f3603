package chain

import (
	"fmt"
	"sort"
	"strings"
)

// Family is a chain family: chains of one family share address formats,
// receiver derivation and indexer code.
type Family string

// Chain families settle knows.
const (
	FamilyEVM    Family = "evm"
	FamilyTron   Family = "tron"
	FamilySolana Family = "solana"
)

// Fixed chain ids for the non-EVM families, as the public API reports them.
const (
	TronChainID   uint64 = 728126428
	SolanaChainID uint64 = 501
)

// Token is a token contract (or mint) that settle accepts on one chain.
// Tokens are identified by address, never by symbol: look-alike tokens with
// the same symbol exist on every chain.
type Token struct {
	Symbol   string
	Address  string // canonical form: lowercase 0x-hex on EVM, base58 elsewhere
	Decimals uint8
}

// Chain is one configured chain and the tokens settle accepts on it.
type Chain struct {
	ID     uint64
	Name   string
	Family Family
	Tokens []Token
	// Executor is the contract that runs merchant calldata on this chain
	// (EVM only; lowercase 0x-hex, "" when none is configured). The API
	// refuses it as a destination or refund address: it is settle's own
	// contract, not a merchant's account.
	Executor string
	// Indexed: an indexer runs for this chain (it has an rpc_url), so a
	// payer can pay a receiver here and be seen. A deadline is known to
	// have passed with nothing in time only once every indexed chain's
	// reconciler has attributed final blocks past it.
	Indexed bool
}

// Token returns the configured token with the given address. EVM addresses
// are compared case-insensitively (the caller has already checked any
// checksum); base58 addresses exactly.
func (c *Chain) Token(address string) (Token, bool) {
	key := c.canonical(address)
	for _, t := range c.Tokens {
		if t.Address == key {
			return t, true
		}
	}
	return Token{}, false
}

func (c *Chain) canonical(address string) string {
	if c.Family == FamilyEVM {
		return strings.ToLower(address)
	}
	return address
}

// Registry is the immutable set of configured chains.
type Registry struct {
	byID map[uint64]*Chain
	list []*Chain
}

// NewRegistry checks the chains for duplicates and missing fields and
// returns a registry over them.
func NewRegistry(chains []Chain) (*Registry, error) {
	r := &Registry{byID: make(map[uint64]*Chain, len(chains))}
	names := map[string]bool{}
	for i := range chains {
		c := chains[i]
		switch {
		case c.Name == "":
			return nil, fmt.Errorf("chain %d: name is required", c.ID)
		case c.ID == 0:
			return nil, fmt.Errorf("chain %q: id is required", c.Name)
		case r.byID[c.ID] != nil:
			return nil, fmt.Errorf("chain %q: id %d is used twice", c.Name, c.ID)
		case names[c.Name]:
			return nil, fmt.Errorf("chain name %q is used twice", c.Name)
		}
		switch c.Family {
		case FamilyEVM, FamilyTron, FamilySolana:
		default:
			return nil, fmt.Errorf("chain %q: unknown family %q", c.Name, c.Family)
		}
		if c.Executor != "" {
			if c.Family != FamilyEVM {
				return nil, fmt.Errorf("chain %q: an executor contract exists only on evm chains", c.Name)
			}
			// Checked as written, like token addresses below.
			if _, err := ParseEVMAddress(c.Executor); err != nil {
				return nil, fmt.Errorf("chain %q: executor: %w", c.Name, err)
			}
			c.Executor = c.canonical(c.Executor)
		}
		tokens := make([]Token, 0, len(c.Tokens))
		seen := map[string]bool{}
		for _, t := range c.Tokens {
			if t.Symbol == "" || t.Address == "" {
				return nil, fmt.Errorf("chain %q: token needs a symbol and an address", c.Name)
			}
			// Check the address as written, so a mistyped checksum in the
			// config is caught before it is lowercased away.
			if c.Family == FamilyEVM {
				if _, err := ParseEVMAddress(t.Address); err != nil {
					return nil, fmt.Errorf("chain %q: token %s: %w", c.Name, t.Symbol, err)
				}
			}
			t.Address = c.canonical(t.Address)
			if t.Decimals > 36 {
				return nil, fmt.Errorf("chain %q: token %s: %d decimals is out of range", c.Name, t.Symbol, t.Decimals)
			}
			if seen[t.Address] {
				return nil, fmt.Errorf("chain %q: token %s listed twice", c.Name, t.Address)
			}
			seen[t.Address] = true
			tokens = append(tokens, t)
		}
		c.Tokens = tokens
		names[c.Name] = true
		r.byID[c.ID] = &c
		r.list = append(r.list, &c)
	}
	sort.Slice(r.list, func(i, j int) bool { return r.list[i].ID < r.list[j].ID })
	return r, nil
}

// Chain returns the chain with the given id.
func (r *Registry) Chain(id uint64) (*Chain, bool) {
	c, ok := r.byID[id]
	return c, ok
}

// ByFamily returns the configured chains of one family, ordered by id.
func (r *Registry) ByFamily(f Family) []*Chain {
	var out []*Chain
	for _, c := range r.list {
		if c.Family == f {
			out = append(out, c)
		}
	}
	return out
}

// All returns every configured chain, ordered by id.
func (r *Registry) All() []*Chain { return r.list }

// Indexed returns the ids of the indexed EVM chains (the only family the
// reconciler attributes today), in registry order.
func (r *Registry) Indexed() []uint64 {
	var ids []uint64
	for _, c := range r.ByFamily(FamilyEVM) {
		if c.Indexed {
			ids = append(ids, c.ID)
		}
	}
	return ids
}
