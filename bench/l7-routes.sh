#!/usr/bin/env bash
# Route changes at scale: how long after a new route is written it is served,
# with N routes installed, for `strait ingress` (a new Ingress file, followed
# with inotify) and nginx (a new server block and a reload, the way
# ingress-nginx applies a change it cannot do without one), in one run, side
# by side; and the RSS of each, and strait's time from start to serving.
# Every route is a host of its own (h1.example … hN.example) to one backend.
# Everything runs in one network namespace this script creates and removes.
# Usage (root): bench/l7-routes.sh [ROUTES] [CHANGES]   (STRAIT=PATH: that binary)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/l7-lib.sh
routes=${1:-3000}
changes=${2:-20}
l7_init nginx
l7_work l7-routes

# One namespace; its address on a veth pair of its own (admission refuses
# loopback endpoints, as kube-apiserver does).
ns=strait-l7r-$$
l7_netns "$ns"
ip -n "$ns" link add d0 type veth peer name d1
ip -n "$ns" addr add 10.78.0.1/24 dev d0
ip -n "$ns" link set d0 up
ip -n "$ns" link set d1 up
# (Not for what runs in the background: `ip netns exec` execs the command,
# so `$!` of `ip netns exec … &` is its PID, which a function would hide.)
run() { ip netns exec "$ns" "$@"; }

# The backend: nginx answering 200 on 10.78.0.1:8080.
cat >"$work/backend.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $work/backend.pid;
error_log $work/backend.log warn;
events { worker_connections 1024; }
http { access_log off; server { listen 10.78.0.1:8080; location / { return 200 "ok\n"; } } }
CONF
ip netns exec "$ns" nginx -c "$work/backend.conf" & pids+=($!)

# strait's manifests: one Service with its endpoint, one Ingress per route.
mkdir -p "$work/strait"
cat >"$work/strait/00-base.yaml" <<YAML
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: strait, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: strait.dev/ingress}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.78.0.1], conditions: {ready: true}}]
YAML
ingress() {
  printf 'apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: %s}\nspec:\n  rules:\n  - host: %s\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n---\n' "$1" "$2"
}
for i in $(seq 1 "$routes"); do ingress "r$i" "h$i.example"; done >"$work/strait/10-routes.yaml"

# nginx's configuration: the same routes as server blocks.
server() { printf 'server { listen 10.78.0.1:81; server_name %s; location / { proxy_pass http://backend; } }\n' "$1"; }
{
  for i in $(seq 1 "$routes"); do server "h$i.example"; done
} >"$work/routes.conf"
: >"$work/new.conf"
cat >"$work/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $work/nginx.pid;
error_log $work/nginx.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  server_names_hash_max_size 65536; server_names_hash_bucket_size 128;
  upstream backend { server 10.78.0.1:8080; keepalive 16; }
  server { listen 10.78.0.1:81 default_server; return 404; }
  include $work/routes.conf;
  include $work/new.conf;
}
CONF

# Start both; strait's time from start to serving the last route.
started=$(date +%s%N)
ip netns exec "$ns" "$strait" ingress -f "$work/strait" --listen 10.78.0.1:80 --workers 1 2>"$work/strait.log" & pids+=($!)
strait_pid=$!
ip netns exec "$ns" nginx -c "$work/nginx.conf" & pids+=($!)
nginx_master=$!

probe=$(cat <<'PY'
import socket, sys, time
# Poll PORT with a fresh connection per request (a reload serves new
# connections only) until HOST answers 200; print seconds since WRITTEN.
port, host, written, limit = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
req = ("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode()
while True:
    try:
        s = socket.create_connection(("10.78.0.1", port), timeout=2)
        s.sendall(req)
        head = s.recv(64)
        s.close()
        if head.startswith(b"HTTP/1.1 200"):
            print("%.6f" % (time.time() - written)); sys.exit(0)
    except OSError:
        pass
    if time.time() - written > limit:
        print("timeout"); sys.exit(1)
PY
)
now() { python3 -c 'import time; print("%.6f" % time.time())'; }
t0=$(now)
ready=$(run python3 -c "$probe" 80 "h$routes.example" "$t0" 120)
echo "strait ingress: $routes routes served $(awk -v s="$started" -v n="$(date +%s%N)" 'BEGIN{printf "%.0f", (n-s)/1e6}') ms after start (probe: ${ready}s after the first poll)"
run python3 -c "$probe" 81 "h$routes.example" "$(now)" 120 >/dev/null

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
nginx_rss=$(( $(rss "$nginx_master") + $(for c in $(cat /proc/"$nginx_master"/task/*/children); do rss "$c"; done | awk '{s+=$1} END {print s+0}') ))
echo "RSS with $routes routes: strait $(( $(rss "$strait_pid") / 1024 )) MiB, nginx (master + worker) $(( nginx_rss / 1024 )) MiB"

# The changes, driven from one Python process (no process start inside a
# measurement): a new host each time; the clock starts just before the write
# (strait: a new Ingress file; nginx: a server block appended, then SIGHUP to
# the master) and stops at the first 200 for that host on a fresh connection.
changer=$(cat <<'PY'
import os, signal, socket, sys, time
mode, port, count, path, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
def ingress(name, host):
    return ("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: %s}\nspec:\n  rules:\n"
            "  - host: %s\n    http:\n      paths:\n"
            "      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n" % (name, host))
def served(host):
    req = ("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode()
    try:
        s = socket.create_connection(("10.78.0.1", port), timeout=2)
        s.sendall(req)
        head = s.recv(64)
        s.close()
        return head.startswith(b"HTTP/1.1 200")
    except OSError:
        return False
for k in range(1, count + 1):
    host = "new%d.example" % k
    t = time.monotonic()
    if mode == "strait":
        tmp = os.path.join(path, ".new%d.tmp" % k)
        with open(tmp, "w") as f:
            f.write(ingress("new%d" % k, host))
        os.rename(tmp, os.path.join(path, "20-new%d.yaml" % k))
    else:
        with open(path, "a") as f:
            f.write("server { listen 10.78.0.1:81; server_name %s; location / { proxy_pass http://backend; } }\n" % host)
        os.kill(pid, signal.SIGHUP)
    while not served(host):
        if time.monotonic() - t > 60:
            print("timeout", file=sys.stderr); sys.exit(1)
    print("%.6f" % (time.monotonic() - t))
PY
)
mapfile -t s_lat < <(run python3 -c "$changer" strait 80 "$changes" "$work/strait" 0)
mapfile -t n_lat < <(run python3 -c "$changer" nginx 81 "$changes" "$work/new.conf" "$nginx_master")
stats() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {p50=a[int((NR+1)/2)]; p99=a[NR>=100?int(NR*0.99):NR]; printf "p50 %.1f ms, p99 %.1f ms, max %.1f ms", p50*1000, p99*1000, a[NR]*1000}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "new route served after the write, $changes changes with $routes routes installed:"
echo "  strait ingress (file, inotify): $(stats "${s_lat[@]}")"
echo "  nginx (server block, reload):   $(stats "${n_lat[@]}")"
awk -v s="$(median "${s_lat[@]}")" -v n="$(median "${n_lat[@]}")" 'BEGIN {printf "  median nginx/strait: %.1fx\n", n/s}'
echo "RSS after the changes: strait $(( $(rss "$strait_pid") / 1024 )) MiB"
