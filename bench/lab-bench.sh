#!/usr/bin/env bash
# How long `strait lab up` takes for 2 nodes with the service-demo manifests
# until every pod is Ready (median of RUNS), and the controller's RSS.
# Root; every lab it makes is taken down. Usage: bench/lab-bench.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
runs=${1:-5}
cargo build --release -q -p strait
strait=./target/release/strait
trap '$strait lab down --name bench >/dev/null 2>&1 || true' EXIT
times=()
for _ in $(seq "$runs"); do
  start=$(date +%s%N)
  $strait lab up --name bench -f examples/service-demo.yaml >/dev/null
  end=$(date +%s%N)
  times+=($(( (end - start) / 1000000 )))
  sleep 1
  rss=$(awk '/VmRSS/ {print int($2/1024)}' /proc/"$(cat /run/strait/bench/controller.pid)"/status)
  $strait lab down --name bench
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n | tr '\n' ' ')
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "lab up (2 nodes, service-demo: 4 pods incl. DNS) until all Ready, ms: $sorted"
echo "median: ${median} ms; controller RSS after up: ${rss} MB"
