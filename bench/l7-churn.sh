#!/usr/bin/env bash
# Churn under load: HTTP and HTTPS requests through the proxy while its
# routes, endpoints and certificate change every 100-200 ms; every non-2xx
# response and every socket error is counted, per kind of change, and
# WebSockets held open across all the changes must keep echoing.
#
# Phases of SECONDS each (PHASES, default routes,endpoints,certs,all):
#   routes     an Ingress for another host added or removed; the served
#              Ingress modified (its / goes to the other Service; a path
#              added or removed)
#   endpoints  a backend (an nginx process, a "pod") started and then added
#              to its Service's EndpointSlice, or removed from it and
#              stopped (SIGQUIT: in-flight requests finish, idle connections
#              close) GRACE seconds later, as kubelet stops a terminating pod
#   certs      the kubernetes.io/tls Secret rotated to another certificate
#              (same CA, ECDSA P-256)
#   all        one of the three at random each time
# Load, in each phase: wrk over HTTP/1.1 keep-alive (16 connections), wrk
# over HTTPS with a new connection (full handshake) per request (4
# connections), a Lua script counting responses by status; and, across all
# phases, 2 WebSockets over HTTP and 1 over HTTPS echoing every 50 ms, plus a
# client verifying every new handshake against the CA.
#
# The same changes (same random seed) are then made to nginx as the
# reference: its configuration written again and reloaded (SIGHUP), the way
# ingress-nginx applies what it cannot change without a reload.
#
# Everything runs in network namespaces this script creates and removes
# (client, proxy, backends); nothing touches the host's namespace.
# Usage (root): bench/l7-churn.sh [SECONDS] [TARGETS]   (TARGETS: "strait nginx";
# STRAIT=PATH: that binary; PHASES=…; GRACE=seconds, default 1; SEED=n)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/l7-lib.sh
secs=${1:-10}
targets=${2:-strait nginx}
phases=${PHASES:-routes,endpoints,certs,all}
grace=${GRACE:-1}
seed=${SEED:-7}
l7_init wrk nginx
helper=$PWD/bench/l7-churn.py
l7_work l7-churn
# The backends the driver started (one nginx per endpoint address).
l7_cleanup_more() {
  local p
  if [ -f "$work/pids" ]; then
    while read -r p; do kill "$p" 2>/dev/null || true; done <"$work/pids"
  fi
}

# client 10.77.1.2 -- 10.77.1.1 proxy 10.77.2.1 -- backends: web-a's
# addresses 10.77.2.2-7, web-b's 10.77.2.12-17, the WebSocket echo 10.77.2.20
l7_topology "strait-l7c-$$" 10.77.2.{2,3,4,5,6,7,12,13,14,15,16,17,20}
l7_client_hosts churn.example

# A CA and three certificates for churn.example (ECDSA P-256) to rotate.
cd "$work"
openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -subj /CN=churn-ca -days 2 -out ca.crt 2>/dev/null
certs=()
for i in 1 2 3; do
  openssl ecparam -name prime256v1 -genkey -noout -out "leaf$i.key0" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "leaf$i.key0" -out "leaf$i.key"
  openssl req -new -key "leaf$i.key" -subj /CN=churn.example -out "leaf$i.csr" 2>/dev/null
  printf 'subjectAltName=DNS:churn.example\n' >"leaf$i.ext"
  openssl x509 -req -in "leaf$i.csr" -CA ca.crt -CAkey ca.key -set_serial "$((1000 + i))" -days 2 \
    -extfile "leaf$i.ext" -out "leaf$i.crt" 2>/dev/null
  certs+=("$work/leaf$i.crt:$work/leaf$i.key")
done
cd - >/dev/null

# The WebSocket echo backend (lives through the whole run).
ip netns exec "$bns" python3 "$helper" wsbackend 10.77.2.20 9000 &
pids+=($!)

cat >"$work/counts.lua" <<'LUA'
-- Responses by status, summed over wrk's threads, and the socket errors.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) codes = {} end
function response(status, headers, body) codes[status] = (codes[status] or 0) + 1 end
function done(summary, latency, requests)
  local total, n = {}, 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("codes")) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, k .. ":" .. v); if k < 200 or k > 299 then n = n + v end end
  local e = summary.errors
  io.write(string.format("RESULT requests=%d non2xx=%d connect=%d read=%d write=%d timeout=%d codes=%s\n",
    summary.requests, n, e.connect, e.read, e.write, e.timeout, table.concat(parts, ",")))
end
LUA

mkdir -p "$work/manifests"
cat >"$work/manifests/00-base.yaml" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: strait, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: strait.dev/ingress}
---
apiVersion: v1
kind: Service
metadata: {name: web-a, namespace: default}
spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-b, namespace: default}
spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ws, namespace: default}
spec: {ports: [{name: http, port: 80, targetPort: 9000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ws-1, namespace: default, labels: {kubernetes.io/service-name: ws}}
addressType: IPv4
ports: [{name: http, port: 9000, protocol: TCP}]
endpoints: [{addresses: [10.77.2.20]}]
YAML

wait_200() { # port scheme
  for _ in $(seq 1 200); do
    if ip netns exec "$cns" curl -sf -o /dev/null --cacert "$work/ca.crt" "$2://churn.example:$1/"; then return 0; fi
    sleep 0.05
  done
  echo "the proxy on port $1 does not answer 200" >&2; cat "$work"/*.log >&2; return 1
}

results=$work/results
: >"$results"
for target in $targets; do
  rm -f "$work"/manifests/[1-9]*.yaml "$work/pids.$target"
  # The driver: in the backends' namespace (it starts and stops them there).
  coproc DRV { exec ip netns exec "$bns" python3 "$helper" driver "$target" "$work" "$work/manifests" \
    "$phases" "$secs" "$seed" "$grace" 10.77.2.20:9000 "${certs[@]}" 2>"$work/driver.log"; }
  drv_pid=$DRV_PID
  pids+=("$drv_pid")
  read -r line <&"${DRV[0]}"
  [ "$line" = ready ] || { echo "driver: $line" >&2; cat "$work/driver.log" >&2; exit 1; }
  if [ "$target" = strait ]; then
    ip netns exec "$pns" "$strait" ingress -f "$work/manifests" --listen 10.77.1.1:80 \
      --tls-listen 10.77.1.1:443 --workers 2 2>"$work/strait.log" &
  else
    ip netns exec "$pns" nginx -c "$work/nginx-proxy.conf" &
  fi
  proxy_pid=$!
  pids+=("$proxy_pid")
  wait_200 80 http
  wait_200 443 https
  ip netns exec "$cns" python3 "$helper" client 10.77.1.1 80 443 "$work/ca.crt" 2 >"$work/client.out" 2>"$work/client.log" &
  client_pid=$!
  pids+=("$client_pid")
  until grep -qs ready "$work/client.out"; do sleep 0.05; done
  reports=1
  IFS=, read -ra plist <<<"$phases"
  for phase in "${plist[@]}"; do
    echo >&"${DRV[1]}"
    read -r line <&"${DRV[0]}"
    ip netns exec "$cns" wrk -t1 -c16 -d"${secs}s" -s "$work/counts.lua" -H 'Host: churn.example' \
      "http://churn.example/" >"$work/wrk-http.out" 2>&1 &
    w1=$!
    ip netns exec "$cns" wrk -t1 -c4 -d"${secs}s" -s "$work/counts.lua" -H 'Connection: close' \
      "https://churn.example/" >"$work/wrk-https.out" 2>&1 &
    w2=$!
    wait "$w1" "$w2"
    read -r line <&"${DRV[0]}"
    changes=${line##* }
    kill -USR1 "$client_pid"
    reports=$((reports + 1))
    until [ "$(wc -l <"$work/client.out")" -ge "$reports" ]; do sleep 0.05; done
    http=$(grep -o 'RESULT.*' "$work/wrk-http.out" || echo "RESULT missing")
    https=$(grep -o 'RESULT.*' "$work/wrk-https.out" || echo "RESULT missing")
    client=$(tail -n1 "$work/client.out")
    echo "$target $phase changes=$changes HTTP ${http#RESULT } HTTPS ${https#RESULT } CLIENT $client" >>"$results"
    printf '%-7s %-10s %4s changes | http: %s | https (new connection each): %s | ws+tls: %s\n' \
      "$target" "$phase" "$changes" "${http#RESULT }" "${https#RESULT }" "$client"
  done
  echo >&"${DRV[1]}"
  read -r line <&"${DRV[0]}" || true
  if [ "$target" = nginx ]; then
    echo "nginx processes at the end (master + workers, old ones still draining): $(pgrep -c -P "$proxy_pid" || true) workers"
  else
    echo "strait RSS at the end: $(awk '/VmRSS/ {print int($2/1024)}' "/proc/$proxy_pid/status") MiB"
  fi
  kill -TERM "$client_pid" 2>/dev/null || true
  kill "$proxy_pid" 2>/dev/null || true
  wait "$proxy_pid" "$client_pid" 2>/dev/null || true
  wait "$drv_pid" 2>/dev/null || true
done

echo
echo "totals over the phases (${secs}s each; changes every 100-200 ms; load: $(cut -d' ' -f1-3 /proc/loadavg)):"
for target in $targets; do
  awk -v t="$target" '$1 == t {
      for (i = 2; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[1] == "changes") ch += kv[2]
        if (kv[1] == "requests") rq += kv[2]
        if (kv[1] == "non2xx") nn += kv[2]
        if (kv[1] == "connect" || kv[1] == "read" || kv[1] == "write" || kv[1] == "timeout") se += kv[2]
      }
      if (match($0, /"ws_echoed": [0-9]+/)) we += substr($0, RSTART + 13, RLENGTH - 13)
      if (match($0, /"ws_broken": [0-9]+/)) wb += substr($0, RSTART + 13, RLENGTH - 13)
      if (match($0, /"tls_ok": [0-9]+/)) to += substr($0, RSTART + 10, RLENGTH - 10)
      if (match($0, /"tls_failed": [0-9]+/)) tf += substr($0, RSTART + 14, RLENGTH - 14)
    }
    END { printf "  %-7s %d changes, %d requests, %d non-2xx, %d socket errors; WebSocket echoes %d, broken %d; verified handshakes %d, failed %d\n",
          t, ch, rq, nn, se, we, wb, to, tf }' "$results"
done
