// Package anvil runs local EVM chains (Foundry's anvil) for tests and
// `settle dev`, and drives them: dev-account signing, deploying the test
// contracts compiled from contracts/ (embedded here), minting, transfers,
// mining, reorgs and bulk history generation.
//
// The anvil binary comes from the pinned npm package
// @foundry-rs/anvil-linux-amd64 (`npm ci --ignore-scripts` at the repo root);
// FindBinary locates it. Nodes only ever listen on loopback.
//
// Transactions are signed locally with DevKeys rather than through anvil's
// unlocked accounts, so the same code paths (nonce, gas estimation, raw
// submission) are exercised as against a real node.
package anvil
