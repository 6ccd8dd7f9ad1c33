#!/usr/bin/env bash
# `strait render` at scale: 10,000 Services × 10 pods (110k objects in, 120k out).
# Prints wall time and peak RSS for JSON and YAML input and output.
# Targets (issue 2): under 2 s and under 500 MB on a 2-core machine.
# Usage: bench/render-scale.sh [SERVICES] [PODS_PER_SERVICE]
set -euo pipefail
cd "$(dirname "$0")/.."
services=${1:-10000}
pods=${2:-10}
command -v /usr/bin/time >/dev/null || { echo "needs GNU time: apt-get install -y time" >&2; exit 1; }
cargo build --release -q -p strait -p strait-bench
work=$(mktemp -d /tmp/strait-bench-render.XXXXXX)
trap 'rm -rf "$work"' EXIT
./target/release/gen-manifests "$services" "$pods" json >"$work/cluster.json"
./target/release/gen-manifests "$services" "$pods" yaml >"$work/cluster.yaml"
echo "input: $services Services x $pods pods; cluster.json $(du -h "$work/cluster.json" | cut -f1), cluster.yaml $(du -h "$work/cluster.yaml" | cut -f1)"
printf '%-12s %-7s %10s %12s %10s\n' input output "wall (s)" "peak RSS" "out size"
for input in json yaml; do
  for output in json yaml; do
    /usr/bin/time -f '%e %M' -o "$work/time" ./target/release/strait render -f "$work/cluster.$input" -o "$output" >"$work/out"
    read -r wall rss_kb <"$work/time"
    printf '%-12s %-7s %10s %9d MB %10s\n' "cluster.$input" "$output" "$wall" "$((rss_kb / 1024))" "$(du -h "$work/out" | cut -f1)"
  done
done
