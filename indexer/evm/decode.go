package evm

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// TransferTopic is keccak256("Transfer(address,address,uint256)"), shared by
// ERC-20 and ERC-721; ERC-20 transfers have three topics and 32 bytes of
// data, ERC-721 ones four topics and no data.
const TransferTopic = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"

// rawLog is one log of an eth_getLogs answer. Its strings point into the
// response body: decoding allocates no per-field strings.
type rawLog struct {
	Address     string
	Topics      [4]string
	NTopics     int
	Data        string
	BlockNumber uint64
	BlockHash   string
	TxHash      string
	LogIndex    uint64
	Removed     bool
}

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int
	Message string
}

func (e *rpcError) Error() string { return fmt.Sprintf("rpc error %d: %s", e.Code, e.Message) }

// decodeLogsResponse parses a JSON-RPC response whose result is an array of
// logs. It is a small hand-written scanner rather than encoding/json: on a
// large backfill, reflection-based decoding of eth_getLogs is most of an
// indexer's CPU (~7.5µs per log against ~1µs here). Unknown fields are
// skipped, so new node fields do not break it; anything malformed is an
// error, never a silently shorter list.
func decodeLogsResponse(s string, out []rawLog) ([]rawLog, error) {
	p := scanner{s: s}
	if err := p.expect('{'); err != nil {
		return nil, err
	}
	var sawResult bool
	for first := true; ; first = false {
		p.ws()
		if p.peek() == '}' {
			p.i++
			break
		}
		if !first {
			if err := p.expect(','); err != nil {
				return nil, err
			}
		}
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		switch key {
		case "result":
			p.ws()
			if p.peek() == 'n' { // null
				if err := p.skipValue(); err != nil {
					return nil, err
				}
				continue
			}
			if out, err = p.logs(out); err != nil {
				return nil, err
			}
			sawResult = true
		case "error":
			e, err := p.errorObject()
			if err != nil {
				return nil, err
			}
			return nil, e
		default:
			if err := p.skipValue(); err != nil {
				return nil, err
			}
		}
	}
	if !sawResult {
		return nil, errors.New("response has neither result nor error")
	}
	return out, nil
}

type scanner struct {
	s string
	i int
}

func (p *scanner) errf(format string, args ...any) error {
	return fmt.Errorf("decoding logs at byte %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *scanner) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *scanner) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *scanner) expect(c byte) error {
	p.ws()
	if p.peek() != c {
		return p.errf("expected %q", c)
	}
	p.i++
	return nil
}

// str reads a string that has no escapes (hex, keys): any backslash is an
// error, which callers that may see escapes avoid by using skipValue.
func (p *scanner) str() (string, error) {
	if err := p.expect('"'); err != nil {
		return "", err
	}
	// IndexByte is vectorised; hex strings are long enough for it to pay.
	end := strings.IndexByte(p.s[p.i:], '"')
	if end < 0 {
		return "", p.errf("unterminated string")
	}
	v := p.s[p.i : p.i+end]
	if strings.IndexByte(v, '\\') >= 0 {
		return "", p.errf("unexpected escape in string")
	}
	p.i += end + 1
	return v, nil
}

func (p *scanner) key() (string, error) {
	k, err := p.str()
	if err != nil {
		return "", err
	}
	return k, p.expect(':')
}

// skipValue skips any JSON value, including strings with escapes.
func (p *scanner) skipValue() error {
	p.ws()
	switch c := p.peek(); {
	case c == '"':
		p.i++
		for p.i < len(p.s) {
			switch p.s[p.i] {
			case '\\':
				p.i += 2
				continue
			case '"':
				p.i++
				return nil
			}
			p.i++
		}
		return p.errf("unterminated string")
	case c == '{' || c == '[':
		depth := 0
		for p.i < len(p.s) {
			switch p.s[p.i] {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					p.i++
					return nil
				}
			case '"':
				if err := p.skipValue(); err != nil {
					return err
				}
				continue
			}
			p.i++
		}
		return p.errf("unterminated container")
	default: // number, true, false, null
		start := p.i
		for p.i < len(p.s) {
			switch p.s[p.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				if p.i == start {
					return p.errf("expected a value")
				}
				return nil
			}
			p.i++
		}
		return p.errf("unexpected end")
	}
}

func (p *scanner) errorObject() (*rpcError, error) {
	e := &rpcError{}
	if err := p.expect('{'); err != nil {
		return nil, err
	}
	for first := true; ; first = false {
		p.ws()
		if p.peek() == '}' {
			p.i++
			return e, nil
		}
		if !first {
			if err := p.expect(','); err != nil {
				return nil, err
			}
		}
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		p.ws()
		start := p.i
		if err := p.skipValue(); err != nil {
			return nil, err
		}
		raw := p.s[start:p.i]
		switch key {
		case "code":
			e.Code, _ = strconv.Atoi(raw)
		case "message":
			if uq, err := strconv.Unquote(raw); err == nil {
				e.Message = uq
			} else {
				e.Message = raw
			}
		}
	}
}

func (p *scanner) logs(out []rawLog) ([]rawLog, error) {
	if err := p.expect('['); err != nil {
		return nil, err
	}
	p.ws()
	if p.peek() == ']' {
		p.i++
		return out, nil
	}
	for {
		var l rawLog
		if err := p.log(&l); err != nil {
			return nil, err
		}
		out = append(out, l)
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
		case ']':
			p.i++
			return out, nil
		default:
			return nil, p.errf("expected , or ] in log list")
		}
	}
}

func (p *scanner) log(l *rawLog) error {
	if err := p.expect('{'); err != nil {
		return err
	}
	var have uint8
	const (
		hAddr = 1 << iota
		hTopics
		hData
		hNumber
		hHash
		hTx
		hIndex
	)
	for first := true; ; first = false {
		p.ws()
		if p.peek() == '}' {
			p.i++
			break
		}
		if !first {
			if err := p.expect(','); err != nil {
				return err
			}
		}
		key, err := p.key()
		if err != nil {
			return err
		}
		switch key {
		case "address":
			l.Address, err = p.str()
			have |= hAddr
		case "topics":
			err = p.topics(l)
			have |= hTopics
		case "data":
			l.Data, err = p.str()
			have |= hData
		case "blockNumber":
			l.BlockNumber, err = p.hexUint()
			have |= hNumber
		case "blockHash":
			l.BlockHash, err = p.str()
			have |= hHash
		case "transactionHash":
			l.TxHash, err = p.str()
			have |= hTx
		case "logIndex":
			l.LogIndex, err = p.hexUint()
			have |= hIndex
		case "removed":
			p.ws()
			if p.peek() == 't' {
				l.Removed = true
			}
			err = p.skipValue()
		default:
			err = p.skipValue()
		}
		if err != nil {
			return err
		}
	}
	if have != hAddr|hTopics|hData|hNumber|hHash|hTx|hIndex {
		return p.errf("log lacks a required field (pending log?)")
	}
	return nil
}

func (p *scanner) topics(l *rawLog) error {
	if err := p.expect('['); err != nil {
		return err
	}
	p.ws()
	if p.peek() == ']' {
		p.i++
		return nil
	}
	for {
		t, err := p.str()
		if err != nil {
			return err
		}
		if l.NTopics < len(l.Topics) {
			l.Topics[l.NTopics] = t
		}
		l.NTopics++
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
		case ']':
			p.i++
			return nil
		default:
			return p.errf("expected , or ] in topics")
		}
	}
}

func (p *scanner) hexUint() (uint64, error) {
	s, err := p.str()
	if err != nil {
		return 0, err
	}
	v, err := parseHexUint(s)
	if err != nil {
		return 0, p.errf("%v", err)
	}
	return v, nil
}

func parseHexUint(s string) (uint64, error) {
	if len(s) < 3 || len(s) > 18 || s[0] != '0' || s[1] != 'x' {
		return 0, fmt.Errorf("bad hex quantity %q", s)
	}
	var v uint64
	for i := 2; i < len(s); i++ {
		d, ok := hexDigit(s[i])
		if !ok {
			return 0, fmt.Errorf("bad hex quantity %q", s)
		}
		v = v<<4 | uint64(d)
	}
	return v, nil
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// isHex reports whether s is "0x" followed by n lowercase hex digits.
func isHex(s string, n int) bool {
	if len(s) != n+2 || s[0] != '0' || s[1] != 'x' {
		return false
	}
	for i := 2; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// uint256Decimal converts a 32-byte big-endian hex word ("0x" + 64 hex
// digits) to its exact decimal string.
func uint256Decimal(word string) (string, error) {
	b, err := appendUint256Decimal(nil, word)
	return string(b), err
}

// appendUint256Decimal appends the exact decimal form of a 32-byte
// big-endian hex word to buf.
func appendUint256Decimal(buf []byte, word string) ([]byte, error) {
	if len(word) != 66 || word[0] != '0' || word[1] != 'x' {
		return buf, fmt.Errorf("bad uint256 word %q", word)
	}
	var limbs [4]uint64 // big-endian: limbs[0] most significant
	for i := range 4 {
		var v uint64
		for _, c := range []byte(word[2+16*i : 2+16*(i+1)]) {
			d, ok := hexDigit(c)
			if !ok {
				return buf, fmt.Errorf("bad uint256 word %q", word)
			}
			v = v<<4 | uint64(d)
		}
		limbs[i] = v
	}
	if limbs[0]|limbs[1]|limbs[2] == 0 {
		return strconv.AppendUint(buf, limbs[3], 10), nil
	}
	// Repeated division by 10^19 (the largest power of ten in a uint64)
	// yields base-10^19 digits, least significant first.
	const base = 10_000_000_000_000_000_000
	var chunks [5]uint64
	n := 0
	for limbs[0]|limbs[1]|limbs[2]|limbs[3] != 0 {
		var rem uint64
		for i := range 4 {
			limbs[i], rem = bits.Div64(rem, limbs[i], base)
		}
		chunks[n] = rem
		n++
	}
	buf = strconv.AppendUint(buf, chunks[n-1], 10)
	for i := n - 2; i >= 0; i-- {
		var tmp [20]byte
		s := strconv.AppendUint(tmp[:0], chunks[i], 10)
		for range 19 - len(s) {
			buf = append(buf, '0')
		}
		buf = append(buf, s...)
	}
	return buf, nil
}
