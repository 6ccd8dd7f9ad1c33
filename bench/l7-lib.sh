# What the L7 benchmarks (bench/l7-*.sh) share, sourced by each: the
# preamble (root, Debian packages, which strait binary), the cleanup of what
# they start and create, the three-namespace topology, the nginx backends,
# the proxies' common configuration and the small statistics. Each script
# keeps what makes it a different measurement.
# shellcheck shell=bash

# l7_init PACKAGE...: root, the packages it needs (installed when missing),
# and $strait: STRAIT=PATH, or this checkout's release build.
l7_init() {
  [ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
  local need=() p
  for p in "$@"; do command -v "$p" >/dev/null || need+=("$p"); done
  if [ ${#need[@]} -gt 0 ]; then apt-get install -y -qq "${need[@]}" >/dev/null; fi
  if [ -n "${STRAIT:-}" ]; then
    strait=$(realpath "$STRAIT")
  else
    cargo build --release -q -p strait
    strait=$PWD/target/release/strait
  fi
}

# l7_work NAME: $work, a fresh directory, and the cleanup on exit: the
# processes in $pids (started here, ended by PID), the namespaces in
# $namespaces with their /etc/netns files, and l7_cleanup_more if the script
# defines it (called first).
l7_work() {
  work=$(mktemp -d "/tmp/strait-$1.XXXXXX")
  pids=()
  namespaces=()
  trap l7_cleanup EXIT INT TERM
}
l7_cleanup() {
  if declare -F l7_cleanup_more >/dev/null; then l7_cleanup_more; fi
  local p ns
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for ns in "${namespaces[@]}"; do
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
  done
  rm -rf "$work"
}

# l7_netns NAME: a namespace with its loopback up, removed on exit.
l7_netns() {
  ip netns add "$1"
  namespaces+=("$1")
  ip -n "$1" link set lo up
}

# l7_topology TAG BACKEND_ADDRESS...: client 10.77.1.2 -- 10.77.1.1 proxy
# 10.77.2.1 -- the backends' addresses (10.77.2.0/24), in three namespaces
# $cns, $pns, $bns joined by veth pairs.
l7_topology() {
  cns=$1-client pns=$1-proxy bns=$1-backends
  shift
  local ns a
  for ns in "$cns" "$pns" "$bns"; do l7_netns "$ns"; done
  ip link add l7c0 netns "$cns" type veth peer name l7p0 netns "$pns"
  ip link add l7p1 netns "$pns" type veth peer name l7b0 netns "$bns"
  ip -n "$cns" addr add 10.77.1.2/24 dev l7c0; ip -n "$cns" link set l7c0 up
  ip -n "$pns" addr add 10.77.1.1/24 dev l7p0; ip -n "$pns" link set l7p0 up
  ip -n "$pns" addr add 10.77.2.1/24 dev l7p1; ip -n "$pns" link set l7p1 up
  for a in "$@"; do ip -n "$bns" addr add "$a/24" dev l7b0; done
  ip -n "$bns" link set l7b0 up
}

# l7_client_hosts NAME...: the client namespace resolves NAMEs to the proxy
# (`ip netns exec` puts /etc/netns/NS/hosts over /etc/hosts), so that wrk
# sends the name as SNI.
l7_client_hosts() {
  mkdir -p "/etc/netns/$cns"
  echo "10.77.1.1 $*" >"/etc/netns/$cns/hosts"
}

# l7_backend_conf FILE ADDRESS...: an nginx backend of one worker serving a
# static body of 612 bytes (nginx's own welcome page size) on ADDRESS:8080,
# keep-alive without a request limit.
l7_backend_conf() {
  local file=$1 a listen=
  shift
  mkdir -p "$work/www"
  [ -f "$work/www/index.html" ] || head -c 612 /dev/zero | tr '\0' 'x' >"$work/www/index.html"
  for a in "$@"; do listen+="listen $a:8080 backlog=4096; "; done
  cat >"$file" <<CONF
daemon off; master_process off; worker_processes 1; pid $file.pid;
error_log $file.log warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  server { $listen root $work/www; location / { index index.html; } }
}
CONF
}

# l7_backends: the two backends 10.77.2.2 and .3 of the three-namespace
# topology, each its own nginx on core 0.
l7_backends() {
  local a
  for a in 10.77.2.2 10.77.2.3; do
    l7_backend_conf "$work/backend-$a.conf" "$a"
    ip netns exec "$bns" taskset -c 0 nginx -c "$work/backend-$a.conf" -e "$work/backend-$a.conf.log" &
    pids+=($!)
  done
}

# l7_nginx_proxy_conf FILE SERVER...: nginx as the reference proxy, one
# worker, kept-alive connections to the backends ($L7_BACKENDS, default the
# topology's two); each SERVER is the inside of a server block before its
# `location /`, which proxies to them.
l7_nginx_proxy_conf() {
  local file=$1 s servers= upstream= a
  shift
  for a in ${L7_BACKENDS:-10.77.2.2 10.77.2.3}; do upstream+="server $a:8080; "; done
  for s in "$@"; do
    servers+="  server { $s location / { proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }
"
  done
  cat >"$file" <<CONF
daemon off; master_process off; worker_processes 1; pid $file.pid;
error_log $file.log warn;
events { worker_connections 8192; }
http {
  access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  upstream web { $upstream keepalive 512; keepalive_requests 100000000; }
$servers}
CONF
}

# l7_haproxy_cfg FILE BIND: haproxy as the reference proxy, one thread,
# keep-alive and connection reuse to the topology's two backends.
l7_haproxy_cfg() {
  cat >"$1" <<CONF
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  option http-keep-alive
  http-reuse always
frontend web
  bind $2
  default_backend web
backend web
  balance roundrobin
  server b1 10.77.2.2:8080
  server b2 10.77.2.3:8080
CONF
}

# l7_web_manifests ADDRESS...: the default IngressClass of strait, a Service
# `web` (port 80 to 8080) and its EndpointSlice with ADDRESSes.
l7_web_manifests() {
  local eps= a
  for a in "$@"; do eps+="{addresses: [$a]}, "; done
  cat <<YAML
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: strait
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: strait.dev/ingress}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [${eps%, }]
YAML
}

# l7_web_ingress [TLS]: an Ingress sending every path to `web` (TLS: its
# `tls:` list, as YAML flow).
l7_web_ingress() {
  cat <<YAML
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
${1:+  tls: $1
}  rules:
  - http:
      paths: [{pathType: Prefix, path: /, backend: {service: {name: web, port: {number: 80}}}}]
YAML
}

# l7_cpu_ticks PID: the CPU time a process used so far (user + system, in
# clock ticks; $l7_hz per second): per request, how much of its core a
# proxy spends, whether or not the core was the bottleneck of the run.
l7_cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
l7_hz=$(getconf CLK_TCK)

# l7_median: the median of the numbers on stdin.
l7_median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
