#!/usr/bin/env bash
# What one proxied request costs strait's process, counted rather than timed
# (repeatable on a machine other builds share): user-space instructions per
# request under `valgrind --tool=callgrind`, and system calls per request
# under `strace -c -f`, for strait and — the same way, beside it — nginx as
# the reference. Each proxy serves one worker in a network namespace of its
# own (created and removed here) with two nginx backends (a 612-byte body)
# on its loopback, keep-alive on both sides; wrk drives a warm-up, then the
# counters are zeroed and wrk runs again, so start-up is not counted.
# Usage (root): bench/l7-instr.sh [CONNECTIONS] [SECONDS]
#   STRAIT=PATH: that binary (default: target/release/strait, built here);
#   BEFORE=PATH: another strait binary counted the same way, as "before".
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/l7-lib.sh
conns=${1:-10}
secs=${2:-5}
for tool in valgrind strace callgrind_control; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
l7_init wrk nginx
l7_work l7-instr
# Ours: started here under valgrind, the only processes naming this run's
# directory.
l7_cleanup_more() {
  local p
  for p in $(pgrep -f "$work/"); do kill "$p" 2>/dev/null || true; done
}
ns=strait-l7i-$$
l7_netns "$ns"
# Not loopback addresses: strait refuses endpoints in 127.0.0.0/8.
ip -n "$ns" link add l7i0 type veth peer name l7i1
ip -n "$ns" addr add 10.77.9.1/24 dev l7i0
ip -n "$ns" addr add 10.77.9.2/24 dev l7i0
ip -n "$ns" addr add 10.77.9.3/24 dev l7i0
ip -n "$ns" link set l7i0 up
inns() { ip netns exec "$ns" "$@"; }

l7_backend_conf "$work/backends.conf" 10.77.9.2 10.77.9.3
inns nginx -c "$work/backends.conf" -e "$work/backends.log" &
pids+=($!)
L7_BACKENDS="10.77.9.2 10.77.9.3" l7_nginx_proxy_conf "$work/nginx.conf" "listen 10.77.9.1:8002;"
{ l7_web_manifests 10.77.9.2 10.77.9.3; l7_web_ingress; } >"$work/ingress.yaml"

ready() { # port
  for _ in $(seq 1 600); do
    if inns bash -c "exec 3<>/dev/tcp/10.77.9.1/$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "proxy on port $1 did not come up" >&2; cat "$work"/*.log >&2; return 1
}
# wrk's request count of a run (it fails the script on errors).
drive() { # port seconds
  local out
  out=$(inns wrk -t1 -c"$conns" -d"$2s" "http://10.77.9.1:$1/" 2>&1)
  # wrk's timeouts (2 s: a proxy slowed by valgrind at 256 connections)
  # are no failure of the proxy; errors and non-2xx answers are.
  if grep -q 'Non-2xx\|connect [1-9]\|read [1-9]\|write [1-9]' <<<"$out"; then
    echo "errors: $out" >&2
    return 1
  fi
  awk '/requests in/ {print $1}' <<<"$out"
}
# One proxy under a tool: start, warm up, zero, run, stop; prints requests.
proxy_cmd() { # name port
  case $1 in
    nginx) echo nginx -c "$work/nginx.conf" -e "$work/nginx.log" ;;
    strait) echo "$strait" ingress -f "$work/ingress.yaml" --listen "10.77.9.1:$2" --workers 1 ;;
    before) echo "$(realpath "$BEFORE")" ingress -f "$work/ingress.yaml" --listen "10.77.9.1:$2" --workers 1 ;;
  esac
}
port_of() { case $1 in strait) echo 8001 ;; nginx) echo 8002 ;; before) echo 8004 ;; esac; }

callgrind() { # name -> "instructions requests"
  local name=$1 port out
  port=$(port_of "$name")
  out=$work/cg-$name
  # shellcheck disable=SC2046
  inns valgrind --tool=callgrind --callgrind-out-file="$out.%p" --dump-instr=no \
    --collect-atstart=yes $(proxy_cmd "$name" "$port") >"$work/$name-cg.log" 2>&1 &
  ready "$port"
  # valgrind itself (not the shell that started it), by its output file.
  local vpid
  vpid=$(pgrep -n -f "callgrind-out-file=$out")
  drive "$port" 2 >/dev/null
  callgrind_control -z "$vpid" >/dev/null
  local n
  n=$(drive "$port" "$secs")
  callgrind_control -d "$vpid" >/dev/null
  kill "$vpid"
  while kill -0 "$vpid" 2>/dev/null; do sleep 0.1; done
  # The dump after the zeroing is the one with a ".1" (or higher) part;
  # its "totals:" lines summed over threads.
  local ir
  ir=$(cat "$out".*.[1-9]* | awk '/^(summary|totals):/ {s += $2} END {print s + 0}')
  echo "$ir $n"
}

syscalls() { # name -> "syscalls requests" plus the table in $work/strace-name
  local name=$1 port
  port=$(port_of "$name")
  # shellcheck disable=SC2046
  inns $(proxy_cmd "$name" "$port") >"$work/$name-st.log" 2>&1 &
  ready "$port"
  local ppid
  case $name in nginx) ppid=$(pgrep -n -f "nginx -c $work/nginx.conf") ;; *) ppid=$(pgrep -n -f -- "--listen 10.77.9.1:$port") ;; esac
  drive "$port" 2 >/dev/null
  # strace -c -f: the process's threads (nginx: one, strait: its worker).
  strace -c -f -p "$ppid" -o "$work/strace-$name" &
  local spid=$!
  pids+=("$spid")
  sleep 1 # strace attaches asynchronously; counting starts a little late at worst
  local n
  n=$(drive "$port" "$secs")
  kill -INT "$spid"; wait "$spid" 2>/dev/null || true
  kill "$ppid"
  while kill -0 "$ppid" 2>/dev/null; do sleep 0.1; done
  local total
  total=$(awk '$NF == "total" {print $4}' "$work/strace-$name")
  echo "$total $n"
}

order=(strait nginx)
[ -n "${BEFORE:-}" ] && order+=(before)
echo "load: $(uptime)"
printf '%-8s %12s %10s %14s %10s %14s\n' proxy instructions requests "instr/request" syscalls "syscalls/req"
for p in "${order[@]}"; do
  callgrind "$p" >"$work/cg-result"
  syscalls "$p" >"$work/st-result"
  read -r ir n <"$work/cg-result"
  read -r sc m <"$work/st-result"
  awk -v p="$p" -v ir="$ir" -v n="$n" -v sc="$sc" -v m="$m" \
    'BEGIN {printf "%-8s %12d %10d %14.0f %10d %14.2f\n", p, ir, n, ir / n, sc, sc / m}'
done
for p in "${order[@]}"; do
  echo "--- $p: system calls during $secs s of wrk -c$conns (strace -c -f)"
  sed -n '1,/^-.*total/p' "$work/strace-$p" | awk 'NR <= 2 || $4 + 0 > 0 || /total/' | head -20
done
