#!/usr/bin/env bash
# NetworkPolicy's cost on the data path (root; all in namespaces it creates
# and removes): new connections per second and their p50/p99 between two
# pods of a node, with no policy table and with 1,000 policies loaded,
# alternating in one run. Usage: bench/policy-bench.sh [ROUNDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
command -v nft >/dev/null || apt-get install -y -qq nftables >/dev/null
cargo build --release -q -p strait-bench --bin policy-bench
exec ./target/release/policy-bench "$@"
