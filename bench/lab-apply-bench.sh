#!/usr/bin/env bash
# `lab apply` -> the change is in every node's kernel and in DNS answers,
# for this build and an anchor build side by side (rounds interleaved).
# The anchor is ANCHOR (a strait binary) or /work/main's release binary,
# copied aside first. Root; every lab it makes is taken down.
# Usage: bench/lab-apply-bench.sh [ROUNDS] [APPLIES]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
cargo build --release -q -p strait -p strait-bench --bin strait --bin lab-apply-bench
anchor_src=${ANCHOR:-/work/main/target/release/strait}
[ -x "$anchor_src" ] || { echo "no anchor binary at $anchor_src (set ANCHOR)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$anchor_src" "$tmp/strait-anchor"
echo "anchor: $anchor_src ($(stat -c %y "$anchor_src"))"
./target/release/lab-apply-bench ./target/release/strait "$tmp/strait-anchor" "${1:-3}" "${2:-5}"
