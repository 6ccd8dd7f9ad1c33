#!/usr/bin/env bash
# CNI ADD+DEL cycle and 100 concurrent ADDs: strait against the reference
# bridge + host-local plugins (Debian containernetworking-plugins), alternating
# in one run, medians and ratios printed. Needs root; everything happens in
# network namespaces the benchmark creates and removes.
# Usage: bench/cni-bench.sh [CYCLES] [CONCURRENT]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
[ -x /usr/lib/cni/bridge ] || apt-get install -y -qq containernetworking-plugins >/dev/null
command -v nft >/dev/null || apt-get install -y -qq nftables >/dev/null
cargo build --release -q -p strait -p strait-bench
exec ./target/release/cni-bench "${1:-50}" "${2:-100}"
