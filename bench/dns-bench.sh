#!/usr/bin/env bash
# Cluster DNS throughput: dnsperf against strait, dnsmasq and unbound serving
# the same records (10,000 Services + 1,000 headless Services x 50 endpoints),
# cluster names only, each server pinned to one core (taskset -c 1), dnsperf
# on the other. Prints QPS, p99 latency, the ratios, and strait's RSS.
# Everything listens on 127.0.0.1 only. Usage: bench/dns-bench.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v unbound >/dev/null || need+=(unbound)
if [ ${#need[@]} -gt 0 ]; then apt-get install -y -qq "${need[@]}" >/dev/null; fi
cargo build --release -q -p strait -p strait-bench
work=$(mktemp -d /tmp/strait-bench-dns.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
./target/release/gen-dns "$work"
echo "records: $(wc -l <"$work/hosts") names; queries: $(wc -l <"$work/queries")"

taskset -c 1 ./target/release/strait dns -f "$work/cluster.json" --listen 127.0.0.1:15353 \
  --metrics-address 127.0.0.1:19153 --upstream 127.0.0.1:9 2>"$work/strait.log" &
pids+=($!); strait_pid=$!
taskset -c 1 dnsmasq --no-daemon --no-resolv --no-hosts --addn-hosts="$work/hosts" --port=15354 \
  --listen-address=127.0.0.1 --bind-interfaces --local=/cluster.local/ --cache-size=0 \
  --log-facility="$work/dnsmasq.log" --pid-file="$work/dnsmasq.pid" --user=root 2>>"$work/dnsmasq.log" &
pids+=($!)
cat >"$work/unbound.conf" <<CONF
server:
  interface: 127.0.0.1
  port: 15355
  num-threads: 1
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$work"
  pidfile: ""
  use-syslog: no
  logfile: "$work/unbound.log"
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  local-zone: "cluster.local." static
  include: "$work/unbound-data.conf"
remote-control:
  control-enable: no
CONF
taskset -c 1 unbound -d -c "$work/unbound.conf" &
pids+=($!)

ready() { for _ in $(seq 1 100); do dig +short +time=1 +tries=1 -p "$1" @127.0.0.1 svc-1.ns-1.svc.cluster.local A 2>/dev/null | grep -q . && return 0; sleep 0.2; done; echo "server on $1 did not come up" >&2; return 1; }
command -v dig >/dev/null || apt-get install -y -qq bind9-dnsutils >/dev/null
ready 15353; ready 15354; ready 15355
rss_loaded=$(awk '/VmRSS/ {print int($2/1024)}' /proc/$strait_pid/status)

run() { # port -> "qps p99_ms"
  local out qps p99
  out=$(taskset -c 0 dnsperf -s 127.0.0.1 -p "$1" -d "$work/queries" -l "$secs" -c 32 -q 500 2>&1)
  qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
  # Latencies of a shorter verbose run (-v prints each query's time).
  p99=$(taskset -c 0 dnsperf -s 127.0.0.1 -p "$1" -d "$work/queries" -l 2 -c 32 -q 500 -v 2>/dev/null \
        | awk '$1 == ">" {print $NF}' | sort -g | awk '{a[NR]=$1} END {if (NR) printf "%.3f", a[int(NR*0.99)]*1000; else print "n/a"}')
  echo "$qps $p99"
}
read -r s_qps s_p99 < <(run 15353)
read -r d_qps d_p99 < <(run 15354)
read -r u_qps u_p99 < <(run 15355)
rss=$(awk '/VmRSS/ {print int($2/1024)}' /proc/$strait_pid/status)
printf '%-10s %12s %12s\n' server QPS "p99 (ms)"
printf '%-10s %12.0f %12s\n' strait "$s_qps" "$s_p99"
printf '%-10s %12.0f %12s\n' dnsmasq "$d_qps" "$d_p99"
printf '%-10s %12.0f %12s\n' unbound "$u_qps" "$u_p99"
awk -v s="$s_qps" -v d="$d_qps" -v u="$u_qps" 'BEGIN {printf "ratio strait/dnsmasq %.2f, strait/unbound %.2f\n", s/d, s/u}'
echo "strait RSS with the zone loaded: ${rss_loaded} MB; after the runs (answers stored): ${rss} MB"
