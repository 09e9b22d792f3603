package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/settle-dev/settle/internal/chain"
)

// zeroAddress burns whatever is sent to it; no wallet means to pay it.
const zeroAddress = "0x0000000000000000000000000000000000000000"

// codeCheckTimeout bounds the node call of a create, so a hung node answers
// the merchant with a retryable error instead of holding the request until
// the server's write timeout.
const codeCheckTimeout = 5 * time.Second

// checkPayee refuses, as the recipient of a delivery or a refund (param
// names the field), an EVM address that would burn the tokens or that is
// settle's own: the treasury, an executor contract of one of executorChains,
// or a receiver of any session. Paying the treasury or an executor would move
// settle's funds to itself under a merchant's name; paying a receiver would
// credit a deposit to another session. address has passed ParseEVMAddress;
// every comparison ignores letter case.
func (s *Server) checkPayee(ctx context.Context, param, address string, executorChains []*chain.Chain) error {
	a := strings.ToLower(address)
	switch {
	case a == zeroAddress:
		return validationf(param, "invalid_address", "%s is the zero address; tokens sent there are lost.", param)
	case s.treasury != "" && a == s.treasury:
		return validationf(param, "reserved_address", "%s is settle's treasury, which pays deliveries and refunds; a session cannot pay it.", param)
	}
	for _, c := range executorChains {
		if c.Executor != "" && a == c.Executor {
			return validationf(param, "reserved_address", "%s is settle's executor contract on %s, which runs merchant calldata; a session cannot pay it.", param, c.Name)
		}
	}
	own, err := s.cfg.Store.IsReceiver(ctx, string(chain.FamilyEVM), a)
	if err != nil {
		return fmt.Errorf("checking whether %s is a receiver: %w", param, err)
	}
	if own {
		return validationf(param, "reserved_address", "%s is one of settle's deposit addresses; paying it would credit another session.", param)
	}
	return nil
}

// checkCalldataTarget refuses calldata to a destination without contract
// code: the executor contract runs merchant calldata against the
// destination, which for an address without code does nothing, so the
// delivery would bounce and the payer be refunded. A node that cannot be
// asked fails the create (503, retryable) rather than letting it through
// unchecked.
func (s *Server) checkCalldataTarget(ctx context.Context, c *chain.Chain, address string) error {
	if s.cfg.CodeChecker == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, codeCheckTimeout)
	defer cancel()
	ok, err := s.cfg.CodeChecker.HasCode(ctx, c.ID, address)
	switch {
	case errors.Is(err, ErrCodeUnchecked):
		return nil
	case err != nil:
		s.logger.ErrorContext(ctx, "checking the destination's contract code failed", "chain_id", c.ID, "err", err)
		return &Error{Status: http.StatusServiceUnavailable, Type: typeAPI, Code: "chain_unavailable",
			Message: fmt.Sprintf("Could not check destination.address on %s for contract code; no session was created. Retry later.", c.Name)}
	case !ok:
		return validationf("destination.calldata", "not_a_contract",
			"destination.address has no contract code on %s. Calldata is executed by settle's executor contract against the destination; "+
				"against an address without code it would do nothing, and the payer would be refunded. "+
				"Omit calldata for a plain transfer, or deploy the contract first.", c.Name)
	}
	return nil
}
