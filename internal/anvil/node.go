package anvil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/rpc"
)

// DefaultHost is the address a node listens on when Config.Host is empty.
const DefaultHost = "127.0.0.1"

// BinaryEnv names the environment variable that overrides where FindBinary
// looks for the anvil executable.
const BinaryEnv = "SETTLE_ANVIL"

// npmBinary is where `npm ci --ignore-scripts` at the repo root puts the
// anvil executable shipped inside the pinned platform package.
const npmBinary = "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"

// startTimeout bounds how long Start waits for a fresh node to answer; anvil
// normally answers within a few hundred milliseconds.
const startTimeout = 15 * time.Second

// portAttempts is how often Start retries with a new port when it picked
// the port itself and another process took it between picking and binding.
const portAttempts = 3

// Config describes one local anvil chain.
type Config struct {
	// Binary is the anvil executable; empty means FindBinary.
	Binary string
	// Host is the listen address, DefaultHost when empty. Only loopback
	// addresses are accepted: a dev chain with funded, publicly known keys
	// must never be reachable from another machine.
	Host string
	// Port is the listen port; 0 picks a free one.
	Port int
	// ChainID is the chain id; 0 keeps anvil's default (31337).
	ChainID uint64
	// BlockTime turns on interval mining; 0 mines one block per transaction
	// (automine). Anvil accepts fractional seconds.
	BlockTime time.Duration
	// NoMining disables mining altogether: blocks appear only through Mine
	// (or evm_mine). It cannot be combined with BlockTime.
	NoMining bool
	// GasLimit is the block gas limit; 0 keeps anvil's default (30,000,000).
	GasLimit uint64
	// StatePath, when set, makes anvil load its chain from this file at
	// start and dump it there every second and at exit, so a dev chain
	// survives restarts.
	StatePath string
	// Logger receives the node's lifecycle at debug level; nil discards.
	Logger *slog.Logger
}

// Node is a running anvil process and clients connected to it. It is safe
// for concurrent use.
type Node struct {
	cmd       *exec.Cmd
	url       string
	chainID   uint64
	blockTime time.Duration
	log       *slog.Logger
	transport *http.Transport
	rpc       *rpc.Client
	client    *ethclient.Client
	signer    types.Signer
	output    *tailBuffer

	// done is closed once the process has exited and waitErr is set.
	done    chan struct{}
	waitErr error

	// sendMu serialises nonce lookup and submission, so concurrent senders
	// never read the same pending nonce.
	sendMu sync.Mutex

	closeOnce sync.Once
	closeErr  error
}

// FindBinary returns the anvil executable: $SETTLE_ANVIL if set, otherwise
// the one installed by `npm ci --ignore-scripts` in the nearest
// node_modules found walking up from the working directory (tests run in
// their package directory, so the repo root is found from any of them).
func FindBinary() (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", BinaryEnv, p, err)
		}
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding anvil: %w", err)
	}
	for {
		p := filepath.Join(dir, filepath.FromSlash(npmBinary))
		if checkExecutable(p) == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("anvil not found: run `npm ci --ignore-scripts` at the repo root (it installs %s) or set %s", npmBinary, BinaryEnv)
		}
		dir = parent
	}
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// loopbackHost normalises h and refuses anything but a loopback IP.
func loopbackHost(h string) (string, error) {
	switch h {
	case "":
		return DefaultHost, nil
	case "localhost":
		// Resolving could yield a non-loopback address on an odd
		// /etc/hosts; pin it instead.
		return DefaultHost, nil
	}
	ip := net.ParseIP(h)
	if ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("anvil host %q is not a loopback address", h)
	}
	return ip.String(), nil
}

// Start runs anvil as described by cfg and returns once it answers
// eth_chainId. ctx bounds only the start-up; the node runs until Close.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	host, err := loopbackHost(cfg.Host)
	if err != nil {
		return nil, err
	}
	cfg.Host = host
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("anvil port %d out of range", cfg.Port)
	}
	if cfg.BlockTime < 0 {
		return nil, fmt.Errorf("anvil block time %s is negative", cfg.BlockTime)
	}
	if cfg.NoMining && cfg.BlockTime > 0 {
		// anvil itself rejects the pair; say so before spawning it.
		return nil, errors.New("anvil: NoMining and BlockTime are mutually exclusive")
	}
	if cfg.Binary == "" {
		if cfg.Binary, err = FindBinary(); err != nil {
			return nil, err
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for attempt := 1; ; attempt++ {
		port := cfg.Port
		if port == 0 {
			if port, err = freePort(host); err != nil {
				return nil, fmt.Errorf("starting anvil: %w", err)
			}
		}
		n, err := start(ctx, cfg, port)
		if err == nil {
			return n, nil
		}
		if cfg.Port != 0 || attempt == portAttempts || !errors.Is(err, errAddrInUse) {
			return nil, err
		}
		cfg.Logger.Debug("anvil port taken, retrying", "port", port, "attempt", attempt)
	}
}

// errAddrInUse marks a start that failed because the port was taken.
var errAddrInUse = errors.New("address in use")

// freePort asks the kernel for a free port. Someone may take it before
// anvil binds it; Start retries in that case.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("picking a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func start(ctx context.Context, cfg Config, port int) (*Node, error) {
	began := time.Now()
	args := []string{"--host", cfg.Host, "--port", strconv.Itoa(port), "--silent"}
	if cfg.ChainID != 0 {
		args = append(args, "--chain-id", strconv.FormatUint(cfg.ChainID, 10))
	}
	if cfg.BlockTime > 0 {
		args = append(args, "--block-time", strconv.FormatFloat(cfg.BlockTime.Seconds(), 'f', -1, 64))
	}
	if cfg.NoMining {
		args = append(args, "--no-mining")
	}
	if cfg.GasLimit != 0 {
		args = append(args, "--gas-limit", strconv.FormatUint(cfg.GasLimit, 10))
	}
	// Not CommandContext: ctx bounds start-up only, the node lives until Close.
	if cfg.StatePath != "" {
		args = append(args, "--state", cfg.StatePath, "--state-interval", "1")
	}
	cmd := exec.Command(cfg.Binary, args...)
	out := &tailBuffer{max: 8 << 10}
	cmd.Stdout = out
	cmd.Stderr = out
	setProcAttr(cmd)

	transport := &http.Transport{
		Proxy:               nil, // loopback only, whatever HTTP_PROXY says
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	url := "http://" + net.JoinHostPort(cfg.Host, strconv.Itoa(port))
	rc, err := rpc.DialOptions(ctx, url, rpc.WithHTTPClient(&http.Client{Transport: transport}))
	if err != nil {
		return nil, fmt.Errorf("starting anvil: %w", err)
	}
	n := &Node{
		cmd:       cmd,
		url:       url,
		blockTime: cfg.BlockTime,
		log:       cfg.Logger,
		transport: transport,
		rpc:       rc,
		client:    ethclient.NewClient(rc),
		output:    out,
		done:      make(chan struct{}),
	}

	started := make(chan error, 1)
	go func() {
		// The parent-death signal is tied to the thread that forked the
		// child, so that thread must outlive it: start and wait on one
		// locked thread (Wait blocks a thread anyway).
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		n.waitErr = cmd.Wait()
		close(n.done)
	}()
	if err := <-started; err != nil {
		rc.Close()
		return nil, fmt.Errorf("starting anvil %s: %w", cfg.Binary, err)
	}

	chainID, err := n.awaitReady(ctx)
	if err != nil {
		n.kill()
		if strings.Contains(strings.ToLower(out.String()), "address already in use") {
			err = fmt.Errorf("%w: %w", errAddrInUse, err)
		}
		return nil, err
	}
	if cfg.ChainID != 0 && chainID != cfg.ChainID {
		n.kill()
		return nil, fmt.Errorf("starting anvil: asked for chain id %d, node reports %d", cfg.ChainID, chainID)
	}
	n.chainID = chainID
	n.signer = types.LatestSignerForChainID(new(big.Int).SetUint64(chainID))
	n.log.Debug("anvil started", "url", url, "chain_id", chainID, "pid", cmd.Process.Pid, "took", time.Since(began))
	return n, nil
}

// awaitReady polls eth_chainId until the node answers, exits, or start-up
// runs out of time.
func (n *Node) awaitReady(parent context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(parent, startTimeout)
	defer cancel()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		callCtx, callCancel := context.WithTimeout(ctx, time.Second)
		var id hexutil.Uint64
		err := n.rpc.CallContext(callCtx, &id, "eth_chainId")
		callCancel()
		if err == nil {
			return uint64(id), nil
		}
		select {
		case <-n.done:
			return 0, fmt.Errorf("starting anvil: exited before answering (%v); output:\n%s", n.waitErr, n.output.String())
		case <-ctx.Done():
			if parent.Err() != nil {
				return 0, fmt.Errorf("starting anvil: %w", parent.Err())
			}
			return 0, fmt.Errorf("starting anvil: no answer to eth_chainId at %s within %s (last error: %v); output:\n%s",
				n.url, startTimeout, err, n.output.String())
		case <-tick.C:
		}
	}
}

// kill stops the process and waits for it, ignoring how it ended.
func (n *Node) kill() {
	n.rpc.Close()
	n.transport.CloseIdleConnections()
	_ = n.cmd.Process.Kill()
	<-n.done
}

// Close stops the node and waits for the process to exit. It reports an
// error if anvil had already died on its own, since whatever was using the
// node then saw a broken chain.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		select {
		case <-n.done:
			n.closeErr = fmt.Errorf("anvil at %s exited before Close (%v); output:\n%s", n.url, n.waitErr, n.output.String())
			n.rpc.Close()
			n.transport.CloseIdleConnections()
		default:
			n.kill()
		}
		n.log.Debug("anvil stopped", "url", n.url)
	})
	return n.closeErr
}

// URL is the node's JSON-RPC endpoint, e.g. http://127.0.0.1:8545.
func (n *Node) URL() string { return n.url }

// RPC is a raw JSON-RPC client for the node, for anvil_* and evm_* calls.
func (n *Node) RPC() *rpc.Client { return n.rpc }

// Client is an ethclient sharing RPC's connection.
func (n *Node) Client() *ethclient.Client { return n.client }

// ChainID is the chain id the node reported at start-up.
func (n *Node) ChainID() uint64 { return n.chainID }

// tailBuffer keeps the last max bytes written to it, so start-up errors can
// quote anvil's output without holding all of it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(bytes.TrimSpace(b.buf))
}
