package view

import (
	"math/big"
	"strconv"
	"time"

	"github.com/settle-dev/settle/internal/chain"
)

// LedgerEntry is what the Exception object is rendered from: an exception
// ledger entry (ledger_entries with kind 'exception') and how it was
// resolved, if it was.
type LedgerEntry struct {
	ID          int64  // ledger_entries.id
	Reason      string // wrong_token, late, after_session_finished, overpaid, ...
	SessionID   string
	PaymentID   string // the Payments API id, "" for a Sessions API session
	ChainID     uint64
	Token       string // token contract address
	Symbol      string
	Decimals    uint8
	From, To    string
	TxHash      string
	LogIndex    uint32
	BlockNumber uint64
	Amount      *big.Int // smallest units
	RecordedAt  time.Time
	Resolution  *Resolution // nil while the exception is open
}

// Resolution is an operator's action on an exception.
type Resolution struct {
	Action string // refund, credit or resolve
	Note   string
	TxHash string // the refund's transfer; "" when there is none
	At     time.Time
}

// Exception is a deposit that did not count toward its session, as
// GET /v1/exceptions and the deposit.exception event show it. Numbers
// that can exceed 2^53 (chain id, block, amounts, times) are strings.
type Exception struct {
	ID           string               `json:"id"`
	Reason       string               `json:"reason"`
	Status       string               `json:"status"`
	SessionID    string               `json:"sessionId"`
	PaymentID    *string              `json:"paymentId"`
	ChainID      string               `json:"chainId"`
	TokenAddress string               `json:"tokenAddress"`
	TokenSymbol  string               `json:"tokenSymbol"`
	AmountUnits  string               `json:"amountUnits"`
	AmountRaw    string               `json:"amountRaw"`
	From         string               `json:"from"`
	To           string               `json:"to"`
	TxHash       string               `json:"txHash"`
	LogIndex     uint32               `json:"logIndex"`
	BlockNumber  string               `json:"blockNumber"`
	CreatedAt    string               `json:"createdAt"`
	Resolution   *ExceptionResolution `json:"resolution"`
}

// ExceptionResolution is Resolution on the wire.
type ExceptionResolution struct {
	Action string  `json:"action"`
	Note   string  `json:"note"`
	TxHash *string `json:"txHash"`
	At     string  `json:"at"`
}

// ExceptionIDPrefix starts every exception id; the rest is the ledger
// entry's id.
const ExceptionIDPrefix = "exc_"

// ExceptionStatus is the status an exception has after a resolution
// action: open without one.
func ExceptionStatus(r *Resolution) string {
	if r == nil {
		return "open"
	}
	switch r.Action {
	case "refund":
		return "refunded"
	case "credit":
		return "credited"
	default:
		return "resolved"
	}
}

// ExceptionOf renders an exception ledger entry. EVM addresses go out
// EIP-55 encoded as everywhere else in the API; Tron and Solana ones
// (base58, case-sensitive) unchanged.
func ExceptionOf(e LedgerEntry) Exception {
	evm := e.ChainID != chain.SolanaChainID && e.ChainID != chain.TronChainID
	amount := e.Amount
	if amount == nil {
		amount = new(big.Int)
	}
	v := Exception{
		ID:           ExceptionIDPrefix + strconv.FormatInt(e.ID, 10),
		Reason:       e.Reason,
		Status:       ExceptionStatus(e.Resolution),
		SessionID:    e.SessionID,
		ChainID:      strconv.FormatUint(e.ChainID, 10),
		TokenAddress: AddressOut(evm, e.Token),
		TokenSymbol:  e.Symbol,
		AmountUnits:  chain.FormatUnits(amount, e.Decimals),
		AmountRaw:    amount.String(),
		From:         AddressOut(evm, e.From),
		To:           AddressOut(evm, e.To),
		TxHash:       e.TxHash,
		LogIndex:     e.LogIndex,
		BlockNumber:  strconv.FormatUint(e.BlockNumber, 10),
		CreatedAt:    strconv.FormatInt(e.RecordedAt.Unix(), 10),
	}
	if e.PaymentID != "" {
		p := e.PaymentID
		v.PaymentID = &p
	}
	if r := e.Resolution; r != nil {
		v.Resolution = &ExceptionResolution{Action: r.Action, Note: r.Note, At: strconv.FormatInt(r.At.Unix(), 10)}
		if r.TxHash != "" {
			h := r.TxHash
			v.Resolution.TxHash = &h
		}
	}
	return v
}
