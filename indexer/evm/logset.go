package evm

import (
	"fmt"
	"slices"
	"strings"
	"unsafe"

	"github.com/settle-dev/settle/indexer"
)

// logSet collects the Transfer-topic logs of one fetch while they are
// decoded: per block, the hash its logs carry and how many there are (for
// the checks against the headers), and the ERC-20 transfers. A log's strings
// point into the decoder's window, so what a transfer keeps is copied into
// an arena, and the hashes that repeat from log to log (block, transaction,
// token) are copied once and shared. A transfer then costs its struct and
// about 90 bytes (two addresses and the amount), not the ~630 bytes of JSON
// it came in; the response itself is never held.
type logSet struct {
	from, to uint64
	// only, while set, is the one block a by-hash query may answer for.
	only *header

	hashes    []string // per block (number - from): its logs' block hash
	counts    []int    // per block: Transfer-topic logs, ERC-721 included
	logs      int      // Transfer-topic logs in all
	transfers []indexer.Transfer

	arena             arena
	lastBlock, lastTx string
	blockOK, txOK     bool
	tokens            map[string]string // interned token addresses ("" if malformed)
}

func newLogSet(from, to uint64) *logSet {
	return &logSet{from: from, to: to, hashes: make([]string, to-from+1), counts: make([]int, to-from+1), tokens: map[string]string{}}
}

// reserve makes room for about n more transfers, from the size of an answer
// about to be decoded.
func (c *logSet) reserve(n int) {
	c.transfers = slices.Grow(c.transfers, n)
}

// add takes one decoded log. A log outside the range, a removed log, or two
// hashes for one block fail the fetch.
func (c *logSet) add(l *rawLog) error {
	if l.BlockNumber < c.from || l.BlockNumber > c.to {
		return fmt.Errorf("eth_getLogs(%d-%d) returned a log of block %d", c.from, c.to, l.BlockNumber)
	}
	if l.Removed {
		return fmt.Errorf("node returned a removed log in block %d: %w", l.BlockNumber, indexer.ErrNotReady)
	}
	if c.only != nil && (l.BlockNumber != uint64(c.only.Number) || !strings.EqualFold(l.BlockHash, c.only.Hash)) {
		return fmt.Errorf("eth_getLogs(blockHash %s) returned a log of %s", c.only.Hash, l.BlockHash)
	}
	if l.BlockHash != c.lastBlock {
		b := c.arena.alloc(len(l.BlockHash))
		c.blockOK = copyHex(b, l.BlockHash, 64)
		c.lastBlock = bytesString(b)
	}
	k := l.BlockNumber - c.from
	switch h := c.hashes[k]; {
	case h == "":
		c.hashes[k] = c.lastBlock
	case h != c.lastBlock:
		return fmt.Errorf("logs of block %d carry two hashes, %s and %s: %w", l.BlockNumber, h, c.lastBlock, indexer.ErrNotReady)
	}
	c.counts[k]++
	c.logs++
	t, ok, err := c.transfer(l)
	if err != nil || !ok {
		return err
	}
	c.transfers = append(c.transfers, t)
	return nil
}

// transfer turns a log into an ERC-20 transfer (BlockTime left to the
// caller). Logs that share the topic but are not ERC-20 transfers (ERC-721's
// four topics, malformed data) are skipped; hex that is not hex is an error.
// Nodes send lowercase hex; anything else is normalised.
func (c *logSet) transfer(l *rawLog) (indexer.Transfer, bool, error) {
	if l.NTopics != 3 || l.Topics[0] != TransferTopic || len(l.Data) != 66 || len(l.Topics[1]) != 66 || len(l.Topics[2]) != 66 {
		return indexer.Transfer{}, false, nil
	}
	var digits [80]byte
	amount, err := appendUint256Decimal(digits[:0], l.Data)
	if err != nil {
		return indexer.Transfer{}, false, nil // not a uint256: not an ERC-20 transfer
	}
	if l.BlockHash != c.lastBlock {
		b := c.arena.alloc(len(l.BlockHash))
		c.blockOK = copyHex(b, l.BlockHash, 64)
		c.lastBlock = bytesString(b)
	}
	if l.TxHash != c.lastTx {
		b := c.arena.alloc(len(l.TxHash))
		c.txOK = copyHex(b, l.TxHash, 64)
		c.lastTx = bytesString(b)
	}
	token, seen := c.tokens[l.Address]
	if !seen {
		b := c.arena.alloc(len(l.Address))
		if copyHex(b, l.Address, 40) {
			token = bytesString(b)
		}
		c.tokens[bytesString(b)] = token
	}
	// One allocation for both addresses and the amount.
	b := c.arena.alloc(84 + len(amount))
	b[0], b[1], b[42], b[43] = '0', 'x', '0', 'x'
	okFrom, okTo := copyHex(b[2:42], l.Topics[1][26:], 40), copyHex(b[44:84], l.Topics[2][26:], 40)
	copy(b[84:], amount)
	if !c.blockOK || !c.txOK || token == "" || !okFrom || !okTo {
		return indexer.Transfer{}, false, fmt.Errorf("malformed log %s/%d", l.TxHash, l.LogIndex)
	}
	return indexer.Transfer{
		BlockNumber: l.BlockNumber,
		BlockHash:   c.lastBlock,
		TxHash:      c.lastTx,
		LogIndex:    uint32(l.LogIndex),
		Token:       token,
		From:        bytesString(b[:42]),
		To:          bytesString(b[42:84]),
		Amount:      bytesString(b[84:]),
	}, true, nil
}

// transfer is logSet.transfer for one log on its own.
func transfer(l *rawLog, blockTime uint32) (indexer.Transfer, bool, error) {
	t, ok, err := newLogSet(0, 0).transfer(l)
	t.BlockTime = blockTime
	return t, ok, err
}

// copyHex copies src into dst (of the same length) in lowercase and reports
// whether src is hex of n digits: "0x" and n digits when len(src) is n+2, or
// n bare digits (an address in a topic's tail) when it is n.
func copyHex(dst []byte, src string, n int) bool {
	ok, digits := true, 0
	switch {
	case len(src) == n+2:
		ok, digits = src[0] == '0' && (src[1] == 'x' || src[1] == 'X'), 2
	case len(src) != n:
		ok = false
	}
	for i := 0; i < len(src); i++ {
		ch := src[i]
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		dst[i] = ch
		if i >= digits && !('0' <= ch && ch <= '9' || 'a' <= ch && ch <= 'f') {
			ok = false
		}
	}
	return ok
}

// arenaChunk is the arena's allocation unit: big enough that a fetch's
// strings take a few dozen allocations, small enough that the unused tail is
// noise.
const arenaChunk = 64 << 10

// arena hands out byte ranges from chunks that are never written again once
// handed out, so strings may point into them; a chunk lives as long as any
// of its strings.
type arena struct{ buf []byte }

func (a *arena) alloc(n int) []byte {
	if cap(a.buf)-len(a.buf) < n {
		a.buf = make([]byte, 0, max(arenaChunk, n))
	}
	a.buf = a.buf[:len(a.buf)+n]
	return a.buf[len(a.buf)-n : len(a.buf) : len(a.buf)]
}

func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
