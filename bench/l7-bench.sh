#!/usr/bin/env bash
# L7 proxy throughput: wrk against `strait ingress`, nginx and haproxy, each
# reverse-proxying to the same two nginx backends (a static body) with
# keep-alive on both sides, the proxy pinned to core 1 (one worker), wrk and
# the backends on core 0. Everything runs in network namespaces this script
# creates and removes (client, proxy, backends joined by veth pairs); nothing
# touches the host's namespace. Runs alternate between the proxies, several
# times, at 10 and 256 connections; prints requests/s and p50/p99 of each run,
# the medians, and the ratios strait/nginx and strait/haproxy.
# Usage (root): bench/l7-bench.sh [SECONDS] [RUNS]   (STRAIT=PATH: that binary;
# BEFORE=PATH: another strait binary measured beside it in the same runs, as
# "before", on core 1 too, e.g. the build of the previous commit)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/l7-lib.sh
secs=${1:-10}
runs=${2:-3}
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs (proxy on one, wrk and backends on the other)" >&2; exit 1; }
l7_init wrk nginx haproxy
l7_work l7-bench
l7_topology "strait-l7b-$$" 10.77.2.2 10.77.2.3
l7_backends

# The proxies, on core 1, one worker each, keep-alive to the backends.
l7_nginx_proxy_conf "$work/nginx.conf" "listen 10.77.1.1:8002 backlog=4096;"
l7_haproxy_cfg "$work/haproxy.cfg" 10.77.1.1:8003
{ l7_web_manifests 10.77.2.2 10.77.2.3; l7_web_ingress; } >"$work/ingress.yaml"
ip netns exec "$pns" taskset -c 1 "$strait" ingress -f "$work/ingress.yaml" --listen 10.77.1.1:8001 \
  --workers 1 2>"$work/strait.log" &
pids+=($!); strait_pid=$!
ip netns exec "$pns" taskset -c 1 nginx -c "$work/nginx.conf" -e "$work/nginx.log" &
pids+=($!); nginx_pid=$!
ip netns exec "$pns" taskset -c 1 haproxy -f "$work/haproxy.cfg" -db 2>"$work/haproxy.log" &
pids+=($!); haproxy_pid=$!

if [ -n "${BEFORE:-}" ]; then
  ip netns exec "$pns" taskset -c 1 "$(realpath "$BEFORE")" ingress -f "$work/ingress.yaml" --listen 10.77.1.1:8004 \
    --workers 1 2>"$work/before.log" &
  pids+=($!); before_pid=$!
fi

ready() { # port
  for _ in $(seq 1 200); do
    if ip netns exec "$cns" bash -c "exec 3<>/dev/tcp/10.77.1.1/$1" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "proxy on port $1 did not come up" >&2; cat "$work"/*.log >&2; return 1
}
ports=(8001 8002 8003)
[ -n "${BEFORE:-}" ] && ports+=(8004)
for p in "${ports[@]}"; do ready "$p"; done
for p in "${ports[@]}"; do
  body=$(ip netns exec "$cns" wrk -t1 -c1 -d1s "http://10.77.1.1:$p/" 2>&1 | awk '/Non-2xx/ {print "non-2xx"}')
  [ -z "$body" ] || { echo "proxy on $p answers errors" >&2; exit 1; }
done

# wrk output -> "rps p50_ms p99_ms errors"
parse() {
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /Requests\/sec/ { rps = $2 } /Non-2xx/ { err += $NF } /Socket errors/ { err += 1 }
    END { printf "%.0f %.3f %.3f %d\n", rps, p50, p99, err }'
}
declare -A port=([strait]=8001 [nginx]=8002 [haproxy]=8003 [before]=8004)
declare -A pid=([strait]=$strait_pid [nginx]=$nginx_pid [haproxy]=$haproxy_pid [before]=${before_pid:-0})
order=(strait nginx haproxy)
[ -n "${BEFORE:-}" ] && order+=(before)
n=${#order[@]}
results=$work/results
: >"$results"
printf '%-5s %-4s %-8s %10s %9s %9s %6s %12s\n' conns run proxy req/s p50/ms p99/ms errors "cpu-us/req"
for c in 10 256; do
  for run in $(seq 1 "$runs"); do
    # Rotate who goes first, so that drift in the machine's load is shared.
    for i in $(seq 0 $((n - 1))); do
      p=${order[$(( (i + run) % n ))]}
      threads=2; [ "$c" -lt 2 ] && threads=1
      before=$(l7_cpu_ticks "${pid[$p]}")
      out=$(ip netns exec "$cns" taskset -c 0 wrk -t"$threads" -c"$c" -d"${secs}s" --latency "http://10.77.1.1:${port[$p]}/" 2>&1)
      after=$(l7_cpu_ticks "${pid[$p]}")
      read -r rps p50 p99 err < <(parse <<<"$out")
      requests=$(awk '/requests in/ {print $1}' <<<"$out")
      cpu=$(awk -v t=$((after - before)) -v hz="$l7_hz" -v n="$requests" 'BEGIN {printf "%.1f", n ? t / hz * 1e6 / n : 0}')
      printf '%-5s %-4s %-8s %10s %9s %9s %6s %12s\n' "$c" "$run" "$p" "$rps" "$p50" "$p99" "$err" "$cpu"
      echo "$c $p $rps $p50 $p99 $err $cpu" >>"$results"
    done
  done
done
echo
echo "medians over $runs runs of ${secs}s (wrk -t2, the proxy alone on core 1):"
printf '%-5s %-8s %10s %9s %9s %12s\n' conns proxy req/s p50/ms p99/ms "cpu-us/req"
for c in 10 256; do
  declare -A med_rps=() med_p99=()
  for p in "${order[@]}"; do
    rps=$(awk -v c="$c" -v p="$p" '$1 == c && $2 == p {print $3}' "$results" | l7_median)
    p50=$(awk -v c="$c" -v p="$p" '$1 == c && $2 == p {print $4}' "$results" | l7_median)
    p99=$(awk -v c="$c" -v p="$p" '$1 == c && $2 == p {print $5}' "$results" | l7_median)
    cpu=$(awk -v c="$c" -v p="$p" '$1 == c && $2 == p {print $7}' "$results" | l7_median)
    med_rps[$p]=$rps; med_p99[$p]=$p99
    printf '%-5s %-8s %10.0f %9.3f %9.3f %12.1f\n' "$c" "$p" "$rps" "$p50" "$p99" "$cpu"
  done
  awk -v c="$c" -v s="${med_rps[strait]}" -v n="${med_rps[nginx]}" -v h="${med_rps[haproxy]}" \
      -v sp="${med_p99[strait]}" -v np="${med_p99[nginx]}" -v hp="${med_p99[haproxy]}" \
    'BEGIN {printf "%s connections: req/s strait/nginx %.2f, strait/haproxy %.2f; p99 strait/nginx %.2f, strait/haproxy %.2f\n", c, s/n, s/h, sp/np, sp/hp}'
  if [ -n "${BEFORE:-}" ]; then
    awk -v c="$c" -v s="${med_rps[strait]}" -v b="${med_rps[before]}" -v sp="${med_p99[strait]}" -v bp="${med_p99[before]}" \
      'BEGIN {printf "%s connections: req/s strait/before %.2f; p99 strait/before %.2f\n", c, s/b, sp/bp}'
  fi
  # The spread: each proxy's lowest and highest req/s over the runs.
  for p in "${order[@]}"; do
    awk -v c="$c" -v p="$p" '$1 == c && $2 == p {if (!n++ || $3 < lo) lo = $3; if ($3 > hi) hi = $3}
      END {printf "  %s: req/s from %d to %d over %d runs\n", p, lo, hi, n}' "$results"
  done
done
echo "strait RSS: $(awk '/VmRSS/ {print int($2/1024)}' /proc/$strait_pid/status) MB"
# Connections each proxy holds to the backends now, and connections closed
# in the last minute (TIME-WAIT on the proxy's side: churn).
echo "connections to the backends held after the runs (by process): $(ip netns exec "$pns" ss -tnpH state established dst 10.77.2.0/24 \
  | grep -o 'users:(("[^"]*"' | cut -d'"' -f2 | sort | uniq -c | awk '{printf "%s %s; ", $2, $1}')"
echo "TIME-WAIT in the proxy's namespace: $(ip netns exec "$pns" ss -tnH state time-wait | wc -l)"
