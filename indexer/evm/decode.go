package evm

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strconv"
	"strings"
	"unsafe"
)

// TransferTopic is keccak256("Transfer(address,address,uint256)"), shared by
// ERC-20 and ERC-721; ERC-20 transfers have three topics and 32 bytes of
// data, ERC-721 ones four topics and no data.
const TransferTopic = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"

// rawLog is one log of an eth_getLogs answer. Its strings point into the
// decoder's window over the response: decoding allocates no per-field
// strings, and what must outlive the next log is copied by the consumer
// (see logSet).
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

// decodeLogsResponse parses a whole JSON-RPC response whose result is an
// array of logs; the logs' strings point into s. It is decodeLogs over a
// string, for tests and small answers.
func decodeLogsResponse(s string, out []rawLog) ([]rawLog, error) {
	p := scanner{s: s, eof: true}
	err := p.response(func(l *rawLog) error { out = append(out, *l); return nil })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// decodeLogs reads a JSON-RPC response whose result is an array of logs from
// r and calls emit with each log, in order, as soon as it is read. It is a
// small hand-written scanner rather than encoding/json: on a large backfill,
// reflection-based decoding of eth_getLogs is most of an indexer's CPU
// (~7.5µs per log against ~1µs here). Unknown fields are skipped, so new node
// fields do not break it; anything malformed is an error, never a silently
// shorter list.
//
// It streams: the response is read through buf (grown only if one value is
// larger than buf), so memory does not follow the size of the answer. A
// log's strings point into buf and are valid only until emit returns. The
// buffer, possibly grown, is returned for reuse.
func decodeLogs(r io.Reader, buf []byte, emit func(*rawLog) error) ([]byte, error) {
	p := scanner{r: r, buf: buf}
	err := p.response(emit)
	if p.readErr != nil {
		err = fmt.Errorf("reading response: %w", p.readErr)
	}
	return p.buf, err
}

// scanner reads JSON from s. Streaming, s is a window over buf that refill
// slides along the input: a parse step that runs into the end of the window
// (short) is retried from its start once more input is in.
type scanner struct {
	s string
	i int

	r       io.Reader
	buf     []byte
	eof     bool  // no input beyond s
	short   bool  // the last failure ran into the end of s
	base    int   // input bytes before s[0], for error offsets
	readErr error // reading r failed (not EOF)
}

// step runs one parse step, retrying it from where it started with more
// input while it fails only for want of input.
func (p *scanner) step(f func() error) error {
	for {
		mark := p.i
		p.short = false
		err := f()
		if err == nil || !p.short || !p.refill(mark) {
			return err
		}
	}
}

// refill drops the input before mark, reads more behind what is left and
// puts the position back at mark. It reports false when there is no more
// input.
func (p *scanner) refill(mark int) bool {
	if p.eof || p.r == nil {
		return false
	}
	kept := len(p.s) - mark
	if kept == len(p.buf) {
		// One value fills the window: grow it.
		p.buf = append(p.buf[:cap(p.buf)], make([]byte, max(len(p.buf), 4096))...)
	}
	copy(p.buf, p.s[mark:])
	p.base += mark
	n, err := io.ReadFull(p.r, p.buf[kept:])
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		p.eof = true
	case err != nil:
		p.eof, p.readErr = true, err
	}
	p.s, p.i = unsafe.String(unsafe.SliceData(p.buf), kept+n), 0
	return n > 0
}

// response reads the envelope: a result (the logs, passed to emit) or an
// error object.
func (p *scanner) response(emit func(*rawLog) error) error {
	if err := p.step(func() error { return p.expect('{') }); err != nil {
		return err
	}
	var sawResult bool
	for first := true; ; first = false {
		var key string
		var end bool
		err := p.step(func() (err error) {
			p.ws()
			if p.peek() == '}' {
				p.i++
				end = true
				return nil
			}
			if !first {
				if err := p.expect(','); err != nil {
					return err
				}
			}
			key, err = p.key()
			return err
		})
		if err != nil {
			return err
		}
		if end {
			break
		}
		switch key {
		case "result":
			var null bool
			err := p.step(func() error {
				p.ws()
				if p.peek() == 'n' { // null
					null = true
					return p.skipValue()
				}
				return p.expect('[')
			})
			if err != nil {
				return err
			}
			if null {
				continue
			}
			if err := p.logs(emit); err != nil {
				return err
			}
			sawResult = true
		case "error":
			var e *rpcError
			if err := p.step(func() (err error) { e, err = p.errorObject(); return err }); err != nil {
				return err
			}
			return e
		default:
			if err := p.step(p.skipValue); err != nil {
				return err
			}
		}
	}
	if !sawResult {
		return errors.New("response has neither result nor error")
	}
	return nil
}

func (p *scanner) errf(format string, args ...any) error {
	return fmt.Errorf("decoding logs at byte %d: %s", p.base+p.i, fmt.Sprintf(format, args...))
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
	p.short = true
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
		p.short = true
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
		p.short = true
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
		p.short = true
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
		p.short = true
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
			// Cloned: both may point into the reused window.
			if uq, err := strconv.Unquote(raw); err == nil {
				e.Message = strings.Clone(uq)
			} else {
				e.Message = strings.Clone(raw)
			}
		}
	}
}

// logs reads the log list after its '[' and emits each log. A step is the
// separator and the log after it, and a log is emitted only once its step
// is complete, so a retried step never emits twice.
func (p *scanner) logs(emit func(*rawLog) error) error {
	var l rawLog
	first := true
	for {
		mark := p.i
		p.short = false
		end, err := p.logItem(&l, first)
		switch {
		case err != nil && p.short && p.refill(mark):
			continue // the same step again, with more input
		case err != nil:
			return err
		case end:
			return nil
		}
		if err := emit(&l); err != nil {
			return err
		}
		first = false
	}
}

// logItem reads the separator before a log (unless it is the first) and the
// log, or the closing ']' (end).
func (p *scanner) logItem(l *rawLog, first bool) (end bool, err error) {
	p.ws()
	switch c := p.peek(); {
	case c == ']':
		p.i++
		return true, nil
	case !first && c != ',':
		return false, p.errf("expected , or ] in log list")
	case !first:
		p.i++
	}
	*l = rawLog{}
	return false, p.log(l)
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
