#!/usr/bin/env bash
# Compiles the test contracts in contracts/ with the pinned solc-js (offline:
# the compiler ships inside the npm package) and writes
# internal/anvil/contracts/<Name>.abi and <Name>.bin, which internal/anvil
# embeds. The outputs are committed, so this only needs rerunning after a
# contract changes.
#
# Usage: scripts/compile-contracts.sh
set -euo pipefail
cd "$(dirname "$0")/.."

contracts=(TestToken BenchToken TestNFT TestMerchant)
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
