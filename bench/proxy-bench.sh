#!/usr/bin/env bash
# The Service proxy at scale (root; all in namespaces it creates and removes):
# full sync at 1k/10k/30k Services x 5 endpoints against a kube-proxy-shaped
# ruleset, one endpoint change at 10k, and ClusterIP vs pod-IP connection latency.
# Usage: bench/proxy-bench.sh [SIZES...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
command -v nft >/dev/null || apt-get install -y -qq nftables >/dev/null
cargo build --release -q -p strait-bench
exec ./target/release/proxy-bench "$@"
