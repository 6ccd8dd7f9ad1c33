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
source bench/l7-lib.sh
secs=${1:-10}
runs=${2:-3}
keys=${KEYS:-ecdsa rsa}
conns=${CONNS:-32}
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs (proxy on one, wrk and backends on the other)" >&2; exit 1; }
l7_init wrk nginx haproxy
l7_work l7-tls
l7_topology "strait-l7t-$$" 10.77.2.2 10.77.2.3
l7_client_hosts ecdsa.example rsa.example

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

l7_backends

# The proxies: strait on 443, nginx on 8443, haproxy on 9443.
l7_nginx_proxy_conf "$work/nginx.conf" \
  "listen 10.77.1.1:8443 ssl backlog=4096; server_name ecdsa.example; ssl_certificate $work/ecdsa.crt; ssl_certificate_key $work/ecdsa.key;" \
  "listen 10.77.1.1:8443 ssl; server_name rsa.example; ssl_certificate $work/rsa.crt; ssl_certificate_key $work/rsa.key;"
l7_haproxy_cfg "$work/haproxy.cfg" "10.77.1.1:9443 ssl crt $work/ecdsa.pem crt $work/rsa.pem"
b64() { base64 -w0 "$1"; }
{
  l7_web_manifests 10.77.2.2 10.77.2.3
  for k in ecdsa rsa; do
    cat <<YAML
---
apiVersion: v1
kind: Secret
metadata: {name: $k, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: $(b64 "$work/$k.crt"), tls.key: $(b64 "$work/$k.key")}
YAML
  done
  l7_web_ingress "[{hosts: [ecdsa.example], secretName: ecdsa}, {hosts: [rsa.example], secretName: rsa}]"
} >"$work/ingress.yaml"
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

results=$work/results
: >"$results"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); TLS ${proto:-?}; wrk -t1 -c$conns, Connection: close"
printf '%-6s %-4s %-8s %12s %8s %14s\n' key run proxy "conn/s" errors "cpu-us/conn"
for k in $keys; do
  for run in $(seq 1 "$runs"); do
    for i in 0 1 2; do
      p=${order[$(( (i + run) % 3 ))]}
      before=$(l7_cpu_ticks "${pid[$p]}")
      out=$(ip netns exec "$cns" taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" -H 'Connection: close' \
        "https://$k.example:${port[$p]}/" 2>&1)
      after=$(l7_cpu_ticks "${pid[$p]}")
      rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
      n=$(awk '/requests in/ {print $1}' <<<"$out")
      err=$(awk '/Non-2xx/ {e += $NF} /Socket errors/ {gsub(",", ""); e += $4 + $6 + $8 + $10} END {print e + 0}' <<<"$out")
      cpu=$(awk -v t=$((after - before)) -v hz="$l7_hz" -v n="$n" 'BEGIN {printf "%.1f", n ? t / hz * 1e6 / n : 0}')
      printf '%-6s %-4s %-8s %12s %8s %14s\n' "$k" "$run" "$p" "$rps" "$err" "$cpu"
      echo "$k $p $rps $cpu $err" >>"$results"
    done
  done
done
echo
echo "medians over $runs runs of ${secs}s (load after: $(cut -d' ' -f1-3 /proc/loadavg)):"
for k in $keys; do
  declare -A med=() medcpu=()
  for p in "${order[@]}"; do
    med[$p]=$(awk -v k="$k" -v p="$p" '$1 == k && $2 == p {print $3}' "$results" | l7_median)
    medcpu[$p]=$(awk -v k="$k" -v p="$p" '$1 == k && $2 == p {print $4}' "$results" | l7_median)
    spread=$(awk -v k="$k" -v p="$p" '$1 == k && $2 == p {if (!n++ || $3 < lo) lo = $3; if ($3 > hi) hi = $3} END {printf "%d-%d", lo, hi}' "$results")
    printf '  %-6s %-8s %8.0f conn/s (%s), %6.1f us CPU per connection\n' "$k" "$p" "${med[$p]}" "$spread" "${medcpu[$p]}"
  done
  awk -v k="$k" -v s="${med[strait]}" -v n="${med[nginx]}" -v h="${med[haproxy]}" \
      -v sc="${medcpu[strait]}" -v nc="${medcpu[nginx]}" -v hc="${medcpu[haproxy]}" \
    'BEGIN {printf "  %s: conn/s strait/nginx %.2f, strait/haproxy %.2f; CPU per connection nginx/strait %.2f, haproxy/strait %.2f\n", k, s/n, s/h, nc/sc, hc/sc}'
done
