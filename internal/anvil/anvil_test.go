package anvil

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// binary returns the anvil executable, skipping the test when it is not
// installed, except under CI=true where a skip would hide a broken setup.
func binary(tb testing.TB) string {
	tb.Helper()
	bin, err := FindBinary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatal(err)
		}
		tb.Skip(err)
	}
	return bin
}

func startNode(tb testing.TB, cfg Config) *Node {
	tb.Helper()
	cfg.Binary = binary(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := Start(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := n.Close(); err != nil {
			tb.Error(err)
		}
	})
	return n
}

func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func TestDevKeys(t *testing.T) {
	// As printed by anvil 1.7.1 for its default mnemonic.
	want := []string{
		"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
		"0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
		"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
		"0x90F79bf6EB2c4f870365E785982E1f101E93b906",
		"0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
		"0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
		"0x976EA74026E726554dB657fA54763abd0C3a0aa9",
		"0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",
		"0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f",
		"0xa0Ee7A142d267C1f36714E4a8F75612F20a79720",
	}
	if len(DevKeys) != len(want) {
		t.Fatalf("%d dev keys, want %d", len(DevKeys), len(want))
	}
	for i, w := range want {
		if got := DevAddress(i).Hex(); got != w {
			t.Errorf("dev key %d: address %s, want %s", i, got, w)
		}
	}
}

func TestLoopbackHost(t *testing.T) {
	for in, want := range map[string]string{
		"":          "127.0.0.1",
		"localhost": "127.0.0.1",
		"127.0.0.1": "127.0.0.1",
		"127.0.0.2": "127.0.0.2",
		"::1":       "::1",
	} {
		got, err := loopbackHost(in)
		if err != nil || got != want {
			t.Errorf("loopbackHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"0.0.0.0", "::", "10.0.0.1", "192.168.1.1", "example.com"} {
		if got, err := loopbackHost(in); err == nil {
			t.Errorf("loopbackHost(%q) = %q, want an error", in, got)
		}
	}
}

func TestStartRejectsBadConfig(t *testing.T) {
	ctx := testCtx(t)
	for name, cfg := range map[string]Config{
		"public host":          {Binary: "/nonexistent", Host: "0.0.0.0"},
		"mining and no-mining": {Binary: "/nonexistent", NoMining: true, BlockTime: time.Second},
		"port":                 {Binary: "/nonexistent", Port: 70000},
		"missing binary":       {Binary: "/nonexistent/anvil"},
	} {
		if n, err := Start(ctx, cfg); err == nil {
			n.Close()
			t.Errorf("%s: Start succeeded, want an error", name)
		}
	}
}

func TestStartReportsEarlyExit(t *testing.T) {
	ctx := testCtx(t)
	// anvil refuses --no-mining with --block-time; pass that pair behind
	// Start's back to see the exit and anvil's own message in the error.
	script := "#!/bin/sh\nexec " + strconv.Quote(binary(t)) + " \"$@\" --no-mining --block-time 1\n"
	wrapper := t.TempDir() + "/anvil"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Start(ctx, Config{Binary: wrapper})
	if err == nil {
		t.Fatal("Start succeeded, want an error")
	}
	if !strings.Contains(err.Error(), "exited before answering") || !strings.Contains(err.Error(), "cannot be used with") {
		t.Errorf("error does not explain the exit: %v", err)
	}
}

func TestTokenTransfers(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{ChainID: 31338})
	ctx := testCtx(t)
	if n.ChainID() != 31338 {
		t.Fatalf("ChainID() = %d, want 31338", n.ChainID())
	}
	if !strings.HasPrefix(n.URL(), "http://127.0.0.1:") {
		t.Errorf("URL() = %s, want loopback", n.URL())
	}
	id, err := n.Client().ChainID(ctx)
	if err != nil || id.Uint64() != 31338 {
		t.Fatalf("eth_chainId = %v, %v", id, err)
	}

	owner, alice, bob, carol := DevKeys[0], DevAddress(1), DevAddress(2), DevAddress(3)
	token, err := n.DeployTestToken(ctx, owner, "Test USD", "TUSD", 6)
	if err != nil {
		t.Fatal(err)
	}
	if want := common.HexToAddress("0x5FbDB2315678afecb367f032d93F642f64180aa3"); token != want {
		t.Errorf("token at %s, want %s", token, want)
	}

	r, err := n.Mint(ctx, owner, token, DevAddress(0), big.NewInt(1_000_000_000))
	if err != nil {
		t.Fatal(err)
	}
	checkTransfers(t, "mint", r, token, 1)
	if got := r.Logs[0].Topics[1]; got != (common.Hash{}) {
		t.Errorf("mint Transfer from %s, want the zero address", got)
	}
	r, err = n.Transfer(ctx, owner, token, alice, big.NewInt(250_000))
	if err != nil {
		t.Fatal(err)
	}
	checkTransfers(t, "transfer", r, token, 1)
	r, err = n.BatchTransfer(ctx, owner, token,
		[]common.Address{alice, bob, carol},
		[]*big.Int{big.NewInt(1), big.NewInt(20), big.NewInt(300)})
	if err != nil {
		t.Fatal(err)
	}
	checkTransfers(t, "batchTransfer", r, token, 3)

	for addr, want := range map[common.Address]int64{
		DevAddress(0): 1_000_000_000 - 250_000 - 321,
		alice:         250_001,
		bob:           20,
		carol:         300,
	} {
		got, err := n.BalanceOf(ctx, token, addr)
		if err != nil {
			t.Fatal(err)
		}
		if got.Int64() != want {
			t.Errorf("balance of %s = %s, want %d", addr, got, want)
		}
	}

	// A transfer beyond the balance reverts in estimation, before signing.
	if _, err := n.Transfer(ctx, DevKeys[4], token, alice, big.NewInt(1)); err == nil {
		t.Error("transfer from an empty account succeeded")
	}
}

// checkTransfers asserts that r holds want ERC-20 Transfer logs from token.
func checkTransfers(t *testing.T, what string, r *types.Receipt, token common.Address, want int) {
	t.Helper()
	if len(r.Logs) != want {
		t.Fatalf("%s: %d logs, want %d", what, len(r.Logs), want)
	}
	for _, l := range r.Logs {
		if l.Address != token || len(l.Topics) != 3 || l.Topics[0] != TransferTopic || len(l.Data) != 32 {
			t.Errorf("%s: log %+v is not an ERC-20 Transfer from %s", what, l, token)
		}
	}
}

func TestNFTMint(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	ctx := testCtx(t)
	nft, err := n.DeployTestNFT(ctx, DevKeys[1])
	if err != nil {
		t.Fatal(err)
	}
	r, err := n.MintNFT(ctx, DevKeys[1], nft, DevAddress(2), big.NewInt(42))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Logs) != 1 {
		t.Fatalf("%d logs, want 1", len(r.Logs))
	}
	l := r.Logs[0]
	if len(l.Topics) != 4 || l.Topics[0] != TransferTopic || len(l.Data) != 0 {
		t.Fatalf("NFT mint log has %d topics and %d data bytes, want 4 and 0", len(l.Topics), len(l.Data))
	}
	if l.Topics[3] != common.BigToHash(big.NewInt(42)) {
		t.Errorf("token id topic %s, want 42", l.Topics[3])
	}
	if _, err := n.MintNFT(ctx, DevKeys[1], nft, DevAddress(2), big.NewInt(42)); err == nil {
		t.Error("minting the same id twice succeeded")
	}
}

func TestReorg(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{ChainID: 31339})
	ctx := testCtx(t)
	c := n.Client()
	token, err := n.DeployTestToken(ctx, DevKeys[0], "T", "T", 18)
	if err != nil {
		t.Fatal(err)
	}
	mint, err := n.Mint(ctx, DevKeys[0], token, DevAddress(1), big.NewInt(5))
	if err != nil {
		t.Fatal(err)
	}
	head, err := c.HeaderByNumber(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if head.Hash() != mint.BlockHash {
		t.Fatalf("mint not in the head block")
	}

	if err := n.Reorg(ctx, 1); err != nil {
		t.Fatal(err)
	}
	after, err := c.HeaderByNumber(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if after.Number.Cmp(head.Number) != 0 || after.Hash() == head.Hash() {
		t.Fatalf("after Reorg(1) head is %d %s, want %d with a new hash", after.Number, after.Hash(), head.Number)
	}
	if _, err := c.TransactionReceipt(ctx, mint.TxHash); !errors.Is(err, ethereum.NotFound) {
		t.Errorf("receipt of the reorged-out mint: %v, want not found", err)
	}
	if bal, err := n.BalanceOf(ctx, token, DevAddress(1)); err != nil || bal.Sign() != 0 {
		t.Errorf("balance after reorg = %v, %v; want 0", bal, err)
	}

	// Move a mint into the middle of a two-block reorg.
	if err := n.Mine(ctx, 2); err != nil {
		t.Fatal(err)
	}
	mintData, err := pack(testTokenName, "mint", DevAddress(2), big.NewInt(7))
	if err != nil {
		t.Fatal(err)
	}
	hashes, err := n.ReorgWith(ctx, 2, []ReorgTx{{Key: DevKeys[3], To: &token, Data: mintData, Block: 0}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.TransactionReceipt(ctx, hashes[0])
	if err != nil {
		t.Fatal(err)
	}
	if want := head.Number.Uint64() + 1; r.BlockNumber.Uint64() != want || r.Status != 1 {
		t.Errorf("re-included mint in block %d status %d, want block %d status 1", r.BlockNumber, r.Status, want)
	}
	if bal, err := n.BalanceOf(ctx, token, DevAddress(2)); err != nil || bal.Int64() != 7 {
		t.Errorf("balance after reorg with tx = %v, %v; want 7", bal, err)
	}
	// The sender's next ordinary transaction must use the right nonce.
	if _, err := n.Mint(ctx, DevKeys[3], token, DevAddress(2), big.NewInt(1)); err != nil {
		t.Errorf("mint after ReorgWith: %v", err)
	}
}

func TestSnapshotRevert(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	ctx := testCtx(t)
	token, err := n.DeployTestToken(ctx, DevKeys[0], "T", "T", 18)
	if err != nil {
		t.Fatal(err)
	}
	id, err := n.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Mint(ctx, DevKeys[0], token, DevAddress(1), big.NewInt(9)); err != nil {
		t.Fatal(err)
	}
	if err := n.Revert(ctx, id); err != nil {
		t.Fatal(err)
	}
	if bal, err := n.BalanceOf(ctx, token, DevAddress(1)); err != nil || bal.Sign() != 0 {
		t.Errorf("balance after revert = %v, %v; want 0", bal, err)
	}
	if err := n.Revert(ctx, id); err == nil {
		t.Error("reverting to a used snapshot succeeded")
	}
}

func TestManualMining(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{NoMining: true})
	ctx := testCtx(t)
	data, err := deployData(testTokenName, "T", "T", uint8(18))
	if err != nil {
		t.Fatal(err)
	}
	hash, err := n.SendTx(ctx, DevKeys[0], nil, data)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := n.WaitReceipt(short, hash); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("receipt before mining: %v, want a timeout", err)
	}
	if err := n.Mine(ctx, 3); err != nil {
		t.Fatal(err)
	}
	r, err := n.WaitReceipt(ctx, hash)
	if err != nil {
		t.Fatal(err)
	}
	if r.BlockNumber.Uint64() != 1 || r.Status != 1 {
		t.Errorf("deploy in block %d status %d, want block 1 status 1", r.BlockNumber, r.Status)
	}
	if head, err := n.Client().BlockNumber(ctx); err != nil || head != 3 {
		t.Errorf("head = %d, %v; want 3", head, err)
	}
}

func TestBenchHistory(t *testing.T) {
	t.Parallel()
	// A tenth of the peer baseline (500, 750), which takes a few seconds to
	// build and far longer to read back under the race detector.
	const blocks, perTx = 10, 750
	const sprays = 8 // blocks 4 and 9 stay empty
	n := startNode(t, Config{NoMining: true})
	ctx := testCtx(t)
	token, logs, err := n.BuildBenchHistory(ctx, blocks, perTx)
	if err != nil {
		t.Fatal(err)
	}
	if want := common.HexToAddress("0x5FbDB2315678afecb367f032d93F642f64180aa3"); token != want {
		t.Errorf("bench token at %s, want %s", token, want)
	}
	// The sprays plus the constructor's Transfer.
	if want := 1 + sprays*perTx; logs != want {
		t.Errorf("BuildBenchHistory reports %d logs, want %d", logs, want)
	}
	head, err := n.Client().BlockNumber(ctx)
	if err != nil || head != blocks+1 {
		t.Fatalf("head = %d, %v; want %d", head, err, blocks+1)
	}
	got, err := n.Client().FilterLogs(ctx, ethereum.FilterQuery{
		FromBlock: big.NewInt(0),
		ToBlock:   new(big.Int).SetUint64(head),
		Addresses: []common.Address{token},
		Topics:    [][]common.Hash{{TransferTopic}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != logs {
		t.Fatalf("eth_getLogs returned %d Transfer logs, want %d", len(got), logs)
	}
	perBlock := make(map[uint64]int)
	sum := new(big.Int)
	for _, l := range got {
		perBlock[l.BlockNumber]++
		sum.Add(sum, new(big.Int).SetBytes(l.Data))
	}
	for k := range uint64(blocks) {
		want := perTx
		if k%5 == 4 {
			want = 0
		}
		if perBlock[k+2] != want {
			t.Errorf("block %d holds %d Transfers, want %d", k+2, perBlock[k+2], want)
		}
	}
	// Each spray adds 1+2+...+perTx: 8 * 281,625.
	if want := big.NewInt(sprays * perTx * (perTx + 1) / 2); sum.Sub(sum, BenchSupply).Cmp(want) != 0 {
		t.Errorf("checksum %s, want %s", sum, want)
	}
	if on, err := n.Automine(ctx); err != nil || on {
		t.Errorf("automine after bench history on a NoMining node = %t, %v", on, err)
	}
}

func TestBenchHistoryRestoresAutomine(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	ctx := testCtx(t)
	if _, logs, err := n.BuildBenchHistory(ctx, 5, 3); err != nil || logs != 1+4*3 {
		t.Fatalf("BuildBenchHistory(5, 3) = %d logs, %v; want 13", logs, err)
	}
	if on, err := n.Automine(ctx); err != nil || !on {
		t.Errorf("automine after bench history = %t, %v; want it restored", on, err)
	}
}

func TestTwoNodes(t *testing.T) {
	t.Parallel()
	a := startNode(t, Config{ChainID: 31340})
	b := startNode(t, Config{ChainID: 31341})
	if a.URL() == b.URL() || a.ChainID() == b.ChainID() {
		t.Fatalf("nodes share URL or chain id: %s/%d and %s/%d", a.URL(), a.ChainID(), b.URL(), b.ChainID())
	}
	ctx := testCtx(t)
	tokA, err := a.DeployTestToken(ctx, DevKeys[0], "A", "A", 6)
	if err != nil {
		t.Fatal(err)
	}
	tokB, err := b.DeployTestToken(ctx, DevKeys[0], "B", "B", 6)
	if err != nil {
		t.Fatal(err)
	}
	// Same deployer and nonce, separate chains: same address on each.
	if tokA != tokB {
		t.Errorf("first deployments differ: %s vs %s", tokA, tokB)
	}
	if _, err := a.Mint(ctx, DevKeys[0], tokA, DevAddress(1), big.NewInt(3)); err != nil {
		t.Fatal(err)
	}
	if bal, err := b.BalanceOf(ctx, tokB, DevAddress(1)); err != nil || bal.Sign() != 0 {
		t.Errorf("mint on node a shows on node b: %v, %v", bal, err)
	}
}

func TestCloseStopsProcess(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	pid := n.cmd.Process.Pid
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if alive(pid) {
		t.Errorf("anvil pid %d still running after Close", pid)
	}
}

// parentEnv makes the test binary act as a parent that starts a node,
// prints anvil's pid and waits to be killed.
const parentEnv = "SETTLE_ANVIL_TEST_PARENT"

func TestAnvilDiesWithParent(t *testing.T) {
	if os.Getenv(parentEnv) == "1" {
		n, err := Start(context.Background(), Config{})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("pid", n.cmd.Process.Pid)
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is linux only")
	}
	t.Setenv(BinaryEnv, binary(t))
	t.Setenv(parentEnv, "1")
	parent := exec.Command(os.Args[0], "-test.run=^TestAnvilDiesWithParent$")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		parent.Process.Kill()
		parent.Wait()
		t.Fatalf("reading child pid: %v (%q)", err, line)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "pid ")))
	if err != nil {
		parent.Process.Kill()
		parent.Wait()
		t.Fatalf("parent said %q", line)
	}
	if err := parent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	parent.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("anvil pid %d outlived its SIGKILLed parent", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid runs; a zombie awaiting its reaper counts as
// dead.
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	// The state follows the parenthesised command name.
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

func TestFindBinary(t *testing.T) {
	t.Setenv(BinaryEnv, "/nonexistent/anvil")
	if _, err := FindBinary(); err == nil || !strings.Contains(err.Error(), BinaryEnv) {
		t.Errorf("FindBinary with a bad %s: %v, want an error naming it", BinaryEnv, err)
	}

	t.Setenv(BinaryEnv, "")
	t.Chdir(t.TempDir())
	if _, err := FindBinary(); err == nil || !strings.Contains(err.Error(), "npm ci --ignore-scripts") {
		t.Errorf("FindBinary outside the repo: %v, want an error telling to run npm ci", err)
	}

	// Found from a nested directory by walking up.
	root := t.TempDir()
	bin := root + "/" + npmBinary
	nested := root + "/a/b"
	for _, dir := range []string{bin[:strings.LastIndexByte(bin, '/')], nested} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(nested)
	if got, err := FindBinary(); err != nil || got != bin {
		t.Errorf("FindBinary from %s = %q, %v; want %s", nested, got, err, bin)
	}
}

func TestStartPortTaken(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	n, err := Start(testCtx(t), Config{Binary: binary(t), Port: port})
	if err == nil {
		n.Close()
		t.Fatalf("Start on taken port %d succeeded", port)
	}
	if !errors.Is(err, errAddrInUse) || !strings.Contains(err.Error(), "Address already in use") {
		t.Errorf("error does not quote anvil's bind failure: %v", err)
	}
}
