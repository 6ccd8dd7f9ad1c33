#!/usr/bin/env bash
# New TLS connections per second through `strait ingress`, nginx and
# haproxy: wrk with `Connection: close`, so that every request is a new TCP
# connection and a full TLS handshake (wrk resumes no session), then one
# GET proxied to the same two nginx backends (kept-alive connections). The
# same certificates on all three, chosen by SNI: ecdsa.example (ECDSA
# P-256) and rsa.example (RSA 2048); TLS 1.3 (the version all three
# negotiate with wrk's OpenSSL). Each proxy has one worker pinned to core 1;
# wrk and the backends share core 0. Runs alternate between the proxies;
# prints handshakes/s of each run, the medians with their spread, the
# ratios strait/nginx and strait/haproxy, and the CPU time each proxy spent
# per connection (user + system of its process, from /proc): wrk's side of
# a handshake costs about as much as the server's, so when core 0 is the
# bottleneck the connections/s are equal and only the CPU per connection
# tells the proxies apart.
# Everything runs in network namespaces this script creates and removes.
# Usage (root): bench/l7-tls.sh [SECONDS] [RUNS]   (STRAIT=PATH: that binary;
# KEYS="ecdsa rsa": which certificates; CONNS=n: wrk's connections, 32)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
secs=${1:-10}
runs=${2:-3}
keys=${KEYS:-ecdsa rsa}
conns=${CONNS:-32}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then apt-get install -y -qq "${need[@]}" >/dev/null; fi
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs (proxy on one, wrk and backends on the other)" >&2; exit 1; }
if [ -n "${STRAIT:-}" ]; then
  strait=$(realpath "$STRAIT")
else
  cargo build --release -q -p strait
  strait=$PWD/target/release/strait
fi

tag=strait-l7t-$$
cns=$tag-client pns=$tag-proxy bns=$tag-backends
work=$(mktemp -d /tmp/strait-l7-tls.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for ns in "$cns" "$pns" "$bns"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "/etc/netns/$cns" "$work"
}
trap cleanup EXIT INT TERM

for ns in "$cns" "$pns" "$bns"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add l7c0 netns "$cns" type veth peer name l7p0 netns "$pns"
ip link add l7p1 netns "$pns" type veth peer name l7b0 netns "$bns"
ip -n "$cns" addr add 10.77.1.2/24 dev l7c0; ip -n "$cns" link set l7c0 up
ip -n "$pns" addr add 10.77.1.1/24 dev l7p0; ip -n "$pns" link set l7p0 up
ip -n "$pns" addr add 10.77.2.1/24 dev l7p1; ip -n "$pns" link set l7p1 up
ip -n "$bns" addr add 10.77.2.2/24 dev l7b0; ip -n "$bns" addr add 10.77.2.3/24 dev l7b0
ip -n "$bns" link set l7b0 up
# wrk sends the URL's host as SNI: the client resolves the two names to the
# proxy (`ip netns exec` puts /etc/netns/NS/hosts over /etc/hosts).
mkdir -p "/etc/netns/$cns"
echo "10.77.1.1 ecdsa.example rsa.example" >"/etc/netns/$cns/hosts"

# The certificates (self-signed; wrk does not verify the chain).
for k in ecdsa rsa; do
  if [ $k = ecdsa ]; then
    openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$work/$k.key"
  else
    openssl genrsa 2048 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$work/$k.key"
  fi
  openssl req -x509 -new -key "$work/$k.key" -subj "/CN=$k.example" -addext "subjectAltName=DNS:$k.example" \
    -days 2 -out "$work/$k.crt" 2>/dev/null
  cat "$work/$k.crt" "$work/$k.key" >"$work/$k.pem"
done

mkdir -p "$work/www"
head -c 612 /dev/zero | tr '\0' 'x' >"$work/www/index.html"
for ip in 10.77.2.2 10.77.2.3; do
  cat >"$work/backend-$ip.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $work/backend-$ip.pid;
error_log $work/backend-$ip.log warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  server { listen $ip:8080 backlog=4096; root $work/www; location / { index index.html; } }
}
CONF
  ip netns exec "$bns" taskset -c 0 nginx -c "$work/backend-$ip.conf" -e "$work/backend-$ip.log" &
  pids+=($!)
done

# The proxies: strait on 443, nginx on 8443, haproxy on 9443.
cat >"$work/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $work/nginx.pid;
error_log $work/nginx.log warn;
events { worker_connections 8192; }
http {
  access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  upstream web { server 10.77.2.2:8080; server 10.77.2.3:8080; keepalive 512; keepalive_requests 100000000; }
  server {
    listen 10.77.1.1:8443 ssl backlog=4096; server_name ecdsa.example;
    ssl_certificate $work/ecdsa.crt; ssl_certificate_key $work/ecdsa.key;
    location / { proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 10.77.1.1:8443 ssl; server_name rsa.example;
    ssl_certificate $work/rsa.crt; ssl_certificate_key $work/rsa.key;
    location / { proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
cat >"$work/haproxy.cfg" <<CONF
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
  bind 10.77.1.1:9443 ssl crt $work/ecdsa.pem crt $work/rsa.pem
  default_backend web
backend web
  balance roundrobin
  server b1 10.77.2.2:8080
  server b2 10.77.2.3:8080
CONF
b64() { base64 -w0 "$1"; }
cat >"$work/ingress.yaml" <<YAML
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
endpoints: [{addresses: [10.77.2.2]}, {addresses: [10.77.2.3]}]
---
apiVersion: v1
kind: Secret
metadata: {name: ecdsa, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: $(b64 "$work/ecdsa.crt"), tls.key: $(b64 "$work/ecdsa.key")}
---
apiVersion: v1
kind: Secret
metadata: {name: rsa, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: $(b64 "$work/rsa.crt"), tls.key: $(b64 "$work/rsa.key")}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  tls: [{hosts: [ecdsa.example], secretName: ecdsa}, {hosts: [rsa.example], secretName: rsa}]
  rules:
  - http:
      paths: [{pathType: Prefix, path: /, backend: {service: {name: web, port: {number: 80}}}}]
YAML
ip netns exec "$pns" taskset -c 1 "$strait" ingress -f "$work/ingress.yaml" --listen 10.77.1.1:80 \
  --tls-listen 10.77.1.1:443 --workers 1 2>"$work/strait.log" &
pids+=($!); strait_pid=$!
ip netns exec "$pns" taskset -c 1 nginx -c "$work/nginx.conf" -e "$work/nginx.log" &
pids+=($!); nginx_pid=$!
ip netns exec "$pns" taskset -c 1 haproxy -f "$work/haproxy.cfg" -db 2>"$work/haproxy.log" &
pids+=($!); haproxy_pid=$!

declare -A port=([strait]=443 [nginx]=8443 [haproxy]=9443)
declare -A pid=([strait]=$strait_pid [nginx]=$nginx_pid [haproxy]=$haproxy_pid)
order=(strait nginx haproxy)
# Up, and presenting the certificate of each name.
for p in "${order[@]}"; do
  for k in $keys; do
    ok=
    for _ in $(seq 1 200); do
      if ip netns exec "$cns" curl -sf -o /dev/null --cacert "$work/$k.crt" "https://$k.example:${port[$p]}/"; then ok=1; break; fi
      sleep 0.05
    done
    [ -n "$ok" ] || { echo "$p does not serve $k.example over TLS" >&2; cat "$work"/*.log >&2; exit 1; }
  done
done
# What each one signs its handshakes with, by name (the key in use).
for p in "${order[@]}"; do
  for k in $keys; do
    echo "$p, $k.example: $(ip netns exec "$cns" openssl s_client -connect "10.77.1.1:${port[$p]}" -servername "$k.example" \
      </dev/null 2>/dev/null | awk -F': ' '/Peer signature type/ {t = $2} /Server public key is/ {k = $0} END {print t ", " k}')"
  done
done
proto=$(ip netns exec "$cns" openssl s_client -connect 10.77.1.1:443 -servername ecdsa.example </dev/null 2>/dev/null \
  | awk '/^New, / {sub(",", "", $2); print $2; exit}')

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
results=$work/results
: >"$results"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); TLS ${proto:-?}; wrk -t1 -c$conns, Connection: close"
printf '%-6s %-4s %-8s %12s %8s %14s\n' key run proxy "conn/s" errors "cpu-us/conn"
for k in $keys; do
  for run in $(seq 1 "$runs"); do
    for i in 0 1 2; do
      p=${order[$(( (i + run) % 3 ))]}
      before=$(cpu_ticks "${pid[$p]}")
      out=$(ip netns exec "$cns" taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" -H 'Connection: close' \
        "https://$k.example:${port[$p]}/" 2>&1)
      after=$(cpu_ticks "${pid[$p]}")
      rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
      n=$(awk '/requests in/ {print $1}' <<<"$out")
      err=$(awk '/Non-2xx/ {e += $NF} /Socket errors/ {gsub(",", ""); e += $4 + $6 + $8 + $10} END {print e + 0}' <<<"$out")
      cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$n" 'BEGIN {printf "%.1f", n ? t / hz * 1e6 / n : 0}')
      printf '%-6s %-4s %-8s %12s %8s %14s\n' "$k" "$run" "$p" "$rps" "$err" "$cpu"
      echo "$k $p $rps $cpu $err" >>"$results"
    done
  done
done
echo
echo "medians over $runs runs of ${secs}s (load after: $(cut -d' ' -f1-3 /proc/loadavg)):"
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
for k in $keys; do
  declare -A med=() medcpu=()
  for p in "${order[@]}"; do
    med[$p]=$(awk -v k="$k" -v p="$p" '$1 == k && $2 == p {print $3}' "$results" | median)
    medcpu[$p]=$(awk -v k="$k" -v p="$p" '$1 == k && $2 == p {print $4}' "$results" | median)
    spread=$(awk -v k="$k" -v p="$p" '$1 == k && $2 == p {if (!n++ || $3 < lo) lo = $3; if ($3 > hi) hi = $3} END {printf "%d-%d", lo, hi}' "$results")
    printf '  %-6s %-8s %8.0f conn/s (%s), %6.1f us CPU per connection\n' "$k" "$p" "${med[$p]}" "$spread" "${medcpu[$p]}"
  done
  awk -v k="$k" -v s="${med[strait]}" -v n="${med[nginx]}" -v h="${med[haproxy]}" \
      -v sc="${medcpu[strait]}" -v nc="${medcpu[nginx]}" -v hc="${medcpu[haproxy]}" \
    'BEGIN {printf "  %s: conn/s strait/nginx %.2f, strait/haproxy %.2f; CPU per connection nginx/strait %.2f, haproxy/strait %.2f\n", k, s/n, s/h, nc/sc, hc/sc}'
done
