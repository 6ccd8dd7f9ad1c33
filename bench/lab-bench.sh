#!/usr/bin/env bash
# How long `strait lab up` takes for 2 nodes with the service-demo manifests
# until every pod is Ready (median of RUNS), and the controller's RSS; with
# ANCHOR=<strait binary>, that binary too, runs interleaved, and the ratio.
# Root; every lab it makes is taken down. Usage: [ANCHOR=…] bench/lab-bench.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
runs=${1:-5}
cargo build --release -q -p strait
binaries=(./target/release/strait)
[ -n "${ANCHOR:-}" ] && binaries+=("$ANCHOR")
trap 'for b in "${binaries[@]}"; do $b lab down --name bench >/dev/null 2>&1 || true; done' EXIT
declare -A times rss
for _ in $(seq "$runs"); do
  for b in "${binaries[@]}"; do
    start=$(date +%s%N)
    $b lab up --name bench -f examples/service-demo.yaml >/dev/null
    end=$(date +%s%N)
    times[$b]+="$(( (end - start) / 1000000 )) "
    rss[$b]=$(awk '/VmRSS/ {print int($2/1024)}' /proc/"$(cut -d" " -f1 /run/strait/bench/controller.pid)"/status)
    $b lab down --name bench
  done
done
median() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for b in "${binaries[@]}"; do
  echo "$b: lab up (2 nodes, service-demo: 4 pods incl. DNS) until all Ready, ms: $(printf '%s\n' ${times[$b]} | sort -n | tr '\n' ' ')"
  echo "  median: $(median "${times[$b]}") ms; controller RSS after up: ${rss[$b]} MB"
done
if [ -n "${ANCHOR:-}" ]; then
  awk -v a="$(median "${times[./target/release/strait]}")" -v b="$(median "${times[$ANCHOR]}")" \
    'BEGIN { printf "ratio this build / anchor (medians): %.2f\n", a / b }'
fi
