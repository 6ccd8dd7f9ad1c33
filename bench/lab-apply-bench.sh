#!/usr/bin/env bash
# `lab apply` -> the change is in every node's kernel and in DNS answers,
# for this build and an anchor build side by side (rounds interleaved).
# The anchor is ANCHOR (a strait binary), or else strait built from git
# revision ANCHOR_REV (default 5ce8065: the lab before the node agent, with
# its 200 ms controller round) into target/anchor. Root; every lab it makes
# is taken down.
# Usage: bench/lab-apply-bench.sh [ROUNDS] [APPLIES]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
cargo build --release -q -p strait -p strait-bench --bin strait --bin lab-apply-bench
if [ -z "${ANCHOR:-}" ]; then
  rev=${ANCHOR_REV:-5ce8065}
  ANCHOR=target/anchor/release/strait
  if [ ! -x "$ANCHOR" ] || [ "$(cat target/anchor/rev 2>/dev/null)" != "$rev" ]; then
    wt=$(mktemp -d)
    git worktree add -q --detach "$wt" "$rev"
    (cd "$wt" && cargo build --release -q -p strait --target-dir "$OLDPWD/target/anchor")
    git worktree remove --force "$wt"
    echo "$rev" > target/anchor/rev
  fi
fi
anchor_src=$ANCHOR
[ -x "$anchor_src" ] || { echo "no anchor binary at $anchor_src (set ANCHOR)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$anchor_src" "$tmp/strait-anchor"
echo "anchor: $anchor_src ($(stat -c %y "$anchor_src"))"
./target/release/lab-apply-bench ./target/release/strait "$tmp/strait-anchor" "${1:-3}" "${2:-5}"
