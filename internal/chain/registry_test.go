package chain

import (
	"errors"
	"strings"
	"testing"
)

func TestRegistryExecutor(t *testing.T) {
	const executor = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
	r, err := NewRegistry([]Chain{
		{ID: 8453, Name: "Base", Family: FamilyEVM, Executor: executor},
		{ID: 10, Name: "Optimism", Family: FamilyEVM},
	})
	if err != nil {
		t.Fatal(err)
	}
	base, _ := r.Chain(8453)
	if base.Executor != strings.ToLower(executor) {
		t.Errorf("executor = %q, want the lowercase canonical form %q", base.Executor, strings.ToLower(executor))
	}
	if op, _ := r.Chain(10); op.Executor != "" {
		t.Errorf("chain without an executor: %q", op.Executor)
	}

	for _, tc := range []struct {
		name    string
		chain   Chain
		wantErr error  // matched with errors.Is when set
		wantMsg string // substring of the error
	}{
		{"bad checksum", Chain{ID: 1, Name: "A", Family: FamilyEVM, Executor: "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6Fb"}, ErrBadChecksum, "executor"},
		{"not an address", Chain{ID: 1, Name: "A", Family: FamilyEVM, Executor: "0x1234"}, ErrInvalidAddress, "executor"},
		{"non-evm chain", Chain{ID: SolanaChainID, Name: "Solana", Family: FamilySolana, Executor: executor}, nil, "only on evm chains"},
	} {
		_, err := NewRegistry([]Chain{tc.chain})
		if err == nil || !strings.Contains(err.Error(), tc.wantMsg) || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
			t.Errorf("%s: error %v, want one matching %v and mentioning %q", tc.name, err, tc.wantErr, tc.wantMsg)
		}
	}
}
