#!/usr/bin/env bash
# Compiles the contracts in contracts/ with the pinned solc-js (offline: the
# compiler ships inside the npm package). The test contracts go to
# internal/anvil/contracts/<Name>.abi and <Name>.bin, which internal/anvil
# embeds; the production SettleExecutor goes to delivery/evm/contracts/
# (ABI, creation and runtime code, and PayoutRunner's creation code, which
# settle needs to check a deployed executor and to compute runner
# addresses). The outputs are committed, so this only needs rerunning after
# a contract changes.
#
# Usage: scripts/compile-contracts.sh
set -euo pipefail
cd "$(dirname "$0")/.."

contracts=(TestToken BenchToken TestNFT TestMerchant TestAttacker)
out=internal/anvil/contracts

# --ignore-scripts: nothing we depend on needs an install script (the anvil
# binary ships inside its npm package), so none are run.
if [ ! -x node_modules/.bin/solcjs ]; then
	npm ci --ignore-scripts
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Paths are given relative to the repo root (the base path) so the metadata
# hash appended to the bytecode is the same on every machine.
srcs=()
for c in "${contracts[@]}"; do srcs+=("contracts/$c.sol"); done
node_modules/.bin/solcjs --optimize --bin --abi --base-path . -o "$tmp" "${srcs[@]}"

mkdir -p "$out"
for c in "${contracts[@]}"; do
	# solcjs names outputs <path with / and . mangled to _>_<Contract>.
	for ext in abi bin; do
		src="$tmp/contracts_${c}_sol_${c}.$ext"
		if [ ! -s "$src" ]; then
			echo "compile-contracts: solcjs produced no $src" >&2
			ls "$tmp" >&2
			exit 1
		fi
		cp "$src" "$out/$c.$ext"
	done
done
echo "compiled ${contracts[*]} into $out"

# The executor runs on real chains: standard JSON pins the EVM version to
# paris (no PUSH0 or MCOPY), which every EVM chain settle targets runs.
prod=delivery/evm/contracts
mkdir -p "$prod"
node - "$prod" <<'JS'
const fs = require('fs');
const solc = require('solc');
const out = process.argv[2];
const input = {
  language: 'Solidity',
  sources: { 'contracts/SettleExecutor.sol': { content: fs.readFileSync('contracts/SettleExecutor.sol', 'utf8') } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: 'paris',
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
  },
};
const res = JSON.parse(solc.compile(JSON.stringify(input)));
const errs = (res.errors || []).filter(e => e.severity === 'error');
if (errs.length) { errs.forEach(e => console.error(e.formattedMessage)); process.exit(1); }
const c = res.contracts['contracts/SettleExecutor.sol'];
fs.writeFileSync(`${out}/SettleExecutor.abi`, JSON.stringify(c.SettleExecutor.abi));
fs.writeFileSync(`${out}/SettleExecutor.bin`, c.SettleExecutor.evm.bytecode.object);
fs.writeFileSync(`${out}/SettleExecutor.bin-runtime`, c.SettleExecutor.evm.deployedBytecode.object);
fs.writeFileSync(`${out}/PayoutRunner.abi`, JSON.stringify(c.PayoutRunner.abi));
fs.writeFileSync(`${out}/PayoutRunner.bin`, c.PayoutRunner.evm.bytecode.object);
JS
echo "compiled SettleExecutor into $prod"
