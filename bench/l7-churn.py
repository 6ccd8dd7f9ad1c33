#!/usr/bin/env python3
"""The moving parts of bench/l7-churn.sh (run by it, inside its namespaces).

  wsbackend IP PORT          a WebSocket echo server (RFC 6455 frames)
  driver TARGET ...          the churn: route, endpoint and certificate
                             changes every 100-200 ms, written as manifests
                             (TARGET strait) or as nginx.conf + reload
                             (TARGET nginx); also starts and stops the
                             backends (nginx, one process per address)
  client ...                 WebSocket connections held open across all the
                             changes, echoing every 50 ms, and TLS handshakes
                             verified against the CA in a loop; SIGUSR1
                             prints a report of the phase and starts the next

Only the standard library: the bench must not need anything installed.
"""

import asyncio
import base64
import hashlib
import json
import os
import random
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ---------------------------------------------------------------- WebSocket


async def read_frame(reader):
    """One frame: (opcode, payload), unmasked."""
    b0, b1 = await reader.readexactly(2)
    opcode, masked, n = b0 & 0x0F, b1 & 0x80, b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack(">H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack(">Q", await reader.readexactly(8))
    mask = await reader.readexactly(4) if masked else None
    data = await reader.readexactly(n)
    if mask:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return opcode, data


def frame(opcode, data, mask):
    head = bytes([0x80 | opcode])
    n = len(data)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + data
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(data))


async def ws_serve(reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        key = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        if key is None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
            return
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                     b"connection: upgrade\r\nsec-websocket-accept: " + accept + b"\r\n\r\n")
        await writer.drain()
        while True:
            opcode, data = await read_frame(reader)
            if opcode == 8:
                writer.write(frame(8, data, False))
                await writer.drain()
                return
            if opcode in (1, 2):
                writer.write(frame(opcode, data, False))
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def wsbackend(ip, port):
    async def main():
        server = await asyncio.start_server(ws_serve, ip, int(port), backlog=256)
        async with server:
            await server.serve_forever()
    asyncio.run(main())


# ---------------------------------------------------------------- the churn


class State:
    """What is served: Services web-a and web-b (their endpoint addresses),
    the main Ingress (its / backend, an extra path or not), extra Ingresses
    (other hosts) and the certificate of the Secret."""

    def __init__(self, spares_a, spares_b, certs):
        self.pool = {"web-a": spares_a, "web-b": spares_b}
        self.active = {"web-a": spares_a[:2], "web-b": spares_b[:2]}
        self.root = "web-a"
        self.extra_path = None
        self.extras = []          # host numbers of extra Ingresses
        self.next_extra = 1
        self.cert = 0
        self.certs = certs        # [(cert_pem_path, key_pem_path)]


def write_atomic(path, text):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def slice_yaml(service, addresses):
    eps = ", ".join("{addresses: [%s]}" % a for a in addresses)
    return ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
            "metadata: {name: %s-1, namespace: default, labels: {kubernetes.io/service-name: %s}}\n"
            "addressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\n"
            "endpoints: [%s]\n" % (service, service, eps))


def main_ingress_yaml(st):
    paths = ["{pathType: Prefix, path: /, backend: {service: {name: %s, port: {number: 80}}}}" % st.root,
             "{pathType: Prefix, path: /ws, backend: {service: {name: ws, port: {number: 80}}}}"]
    if st.extra_path:
        paths.append("{pathType: Exact, path: /extra-%d, backend: {service: {name: web-b, port: {number: 80}}}}"
                     % st.extra_path)
    return ("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: churn, namespace: default}\n"
            "spec:\n  tls: [{hosts: [churn.example], secretName: churn-tls}]\n  rules:\n"
            "  - host: churn.example\n    http:\n      paths:\n" +
            "".join("      - %s\n" % p for p in paths))


def extra_ingress_yaml(n):
    return ("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: extra-%d, namespace: default}\n"
            "spec:\n  rules:\n  - host: x%d.example\n    http:\n      paths:\n"
            "      - {pathType: Prefix, path: /, backend: {service: {name: web-b, port: {number: 80}}}}\n"
            % (n, n))


def secret_yaml(st):
    cert, key = st.certs[st.cert]
    b64 = lambda p: base64.b64encode(open(p, "rb").read()).decode()
    return ("apiVersion: v1\nkind: Secret\nmetadata: {name: churn-tls, namespace: default}\n"
            "type: kubernetes.io/tls\ndata: {tls.crt: %s, tls.key: %s}\n" % (b64(cert), b64(key)))


def nginx_conf(st, work, ws):
    up = lambda name: "upstream %s { %s keepalive 64; }" % (
        name, " ".join("server %s:8080 max_fails=0;" % a for a in st.active[name]))
    cert, key = st.certs[st.cert]
    extra = ""
    if st.extra_path:
        extra = "location = /extra-%d { proxy_pass http://web-b; }" % st.extra_path
    servers = "\n".join(
        "server { listen 10.77.1.1:80; server_name x%d.example; location / { proxy_pass http://web-b; } }" % n
        for n in st.extras)
    return """daemon off; worker_processes 2; pid %(work)s/nginx-proxy.pid;
error_log %(work)s/nginx-proxy.log warn;
events { worker_connections 8192; }
http {
  access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host;
  %(a)s
  %(b)s
  upstream ws { server %(ws)s; }
  server {
    listen 10.77.1.1:80; listen 10.77.1.1:443 ssl;
    server_name churn.example;
    ssl_certificate %(cert)s; ssl_certificate_key %(key)s;
    location / { proxy_pass http://%(root)s; }
    location /ws { proxy_pass http://ws; proxy_set_header Upgrade $http_upgrade;
                   proxy_set_header Connection "upgrade"; proxy_read_timeout 3600s; }
    %(extra)s
  }
  %(servers)s
}
""" % dict(work=work, a=up("web-a"), b=up("web-b"), ws=ws, cert=cert, key=key,
           root=st.root, extra=extra, servers=servers)


class Backends:
    """nginx on ADDRESS:8080, one process per endpoint address (a pod): it
    is started before its address joins a slice (ready) and stopped, with
    SIGQUIT (finish what is in flight, close idle connections), GRACE
    seconds after its address left the slice (terminationGracePeriod)."""

    def __init__(self, work):
        self.work = work
        self.procs = {}
        self.stopping = []        # (when, address)

    def conf(self, a):
        path = "%s/backend-%s.conf" % (self.work, a)
        with open(path, "w") as f:
            f.write("daemon off; master_process off; worker_processes 1; pid %s/backend-%s.pid;\n"
                    "error_log %s/backend-%s.log warn;\nevents { worker_connections 4096; }\n"
                    "http { access_log off; keepalive_requests 100000000; keepalive_timeout 300s;\n"
                    "  server { listen %s:8080 backlog=4096; location / { return 200 \"%s\\n\"; } } }\n"
                    % (self.work, a, self.work, a, a, a))
        return path

    def start(self, a):
        p = subprocess.Popen(["nginx", "-c", self.conf(a), "-e", "%s/backend-%s.log" % (self.work, a)])
        self.procs[a] = p
        with open("%s/pids" % self.work, "a") as f:
            f.write("%d\n" % p.pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((a, 8080), timeout=1).close()
                return
            except OSError:
                time.sleep(0.01)
        raise SystemExit("backend %s did not come up" % a)

    def stop_later(self, a, grace):
        self.stopping.append((time.monotonic() + grace, a))

    def tick(self):
        now = time.monotonic()
        for when, a in list(self.stopping):
            if when <= now:
                self.stopping.remove((when, a))
                p = self.procs.pop(a, None)
                if p:
                    p.send_signal(signal.SIGQUIT)
                    try:
                        p.wait(5)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()

    def busy(self, a):
        return a in self.procs or any(x == a for _, x in self.stopping)

    def stop_all(self):
        for p in self.procs.values():
            p.send_signal(signal.SIGQUIT)
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = {}


def driver(args):
    """driver TARGET WORK MANIFESTS PHASES SECONDS SEED GRACE WS CERTS...

    PHASES: comma-separated kinds (routes, endpoints, certs, all); each
    runs SECONDS. A line `phase KIND` is printed when one begins (the
    script starts the load on it) and `changes KIND N` when it ends; the
    driver waits for a line on standard input before each phase."""
    target, work, manifests, phases, secs, seed, grace, ws = args[:8]
    certs = [tuple(c.split(":")) for c in args[8:]]
    secs, grace = float(secs), float(grace)
    rng = random.Random(int(seed))
    spares_a = ["10.77.2.%d" % i for i in range(2, 8)]
    spares_b = ["10.77.2.%d" % i for i in range(12, 18)]
    st = State(spares_a, spares_b, certs)
    backends = Backends(work)
    for s in ("web-a", "web-b"):
        for a in st.active[s]:
            backends.start(a)

    def publish(files):
        """Write what changed: manifests (one file each), or the nginx
        configuration and a reload."""
        if target == "strait":
            for name, text in files:
                path = os.path.join(manifests, name)
                if text is None:
                    os.unlink(path)
                else:
                    write_atomic(path, text)
        else:
            write_atomic(os.path.join(work, "nginx-proxy.conf"), nginx_conf(st, work, ws))
            try:
                # The master, once it runs (the first write is before).
                os.kill(int(open(os.path.join(work, "nginx-proxy.pid")).read()), signal.SIGHUP)
            except (OSError, ValueError):
                pass

    def everything():
        files = [("20-slice-%s.yaml" % s, slice_yaml(s, st.active[s])) for s in ("web-a", "web-b")]
        files += [("30-ingress.yaml", main_ingress_yaml(st)), ("40-secret.yaml", secret_yaml(st))]
        files += [("50-extra-%d.yaml" % n, extra_ingress_yaml(n)) for n in st.extras]
        return files

    publish(everything())
    print("ready", flush=True)

    def change_routes():
        k = rng.randrange(4)
        if k == 0 or (k == 1 and not st.extras):
            n = st.next_extra
            st.next_extra += 1
            st.extras.append(n)
            return [("50-extra-%d.yaml" % n, extra_ingress_yaml(n))]
        if k == 1:
            n = st.extras.pop(0)
            return [("50-extra-%d.yaml" % n, None)]
        if k == 2:
            st.root = "web-b" if st.root == "web-a" else "web-a"
        else:
            st.extra_path = None if st.extra_path else rng.randrange(1, 1000)
        return [("30-ingress.yaml", main_ingress_yaml(st))]

    def change_endpoints():
        s = rng.choice(["web-a", "web-b"])
        active = st.active[s]
        free = [a for a in st.pool[s] if a not in active and not backends.busy(a)]
        add = len(active) <= 1 or (len(active) < 3 and free and rng.random() < 0.5)
        if add and free:
            a = rng.choice(free)
            backends.start(a)          # ready before it is an endpoint
            st.active[s] = active + [a]
        else:
            a = rng.choice(active)
            st.active[s] = [x for x in active if x != a]
            backends.stop_later(a, grace)
        return [("20-slice-%s.yaml" % s, slice_yaml(s, st.active[s]))]

    def change_certs():
        st.cert = (st.cert + 1) % len(st.certs)
        return [("40-secret.yaml", secret_yaml(st))]

    kinds = {"routes": change_routes, "endpoints": change_endpoints, "certs": change_certs}
    def go():
        # The script's word to go on; its end (the script is gone): stop.
        if not sys.stdin.readline():
            backends.stop_all()
            sys.exit(1)

    for phase in phases.split(","):
        go()
        print("phase %s" % phase, flush=True)
        end = time.monotonic() + secs
        n = 0
        while time.monotonic() < end:
            kind = rng.choice(list(kinds)) if phase == "all" else phase
            publish(kinds[kind]())
            n += 1
            pause = time.monotonic() + rng.uniform(0.1, 0.2)
            while time.monotonic() < pause:
                backends.tick()
                time.sleep(0.01)
        print("changes %s %d" % (phase, n), flush=True)
    # Let the last removed backends go as they would.
    while backends.stopping:
        backends.tick()
        time.sleep(0.05)
    go()
    backends.stop_all()
    print("done", flush=True)


# ---------------------------------------------------------------- the client


class Counts:
    def __init__(self):
        self.ws_sent = self.ws_echoed = self.ws_broken = 0
        self.tls_ok = self.tls_failed = 0
        self.serials = set()
        self.errors = []

    def note(self, what):
        if len(self.errors) < 5:
            self.errors.append(what)


async def ws_client(host, port, tls_ctx, counts_ref, name):
    """One WebSocket held open, echoing every 50 ms; a broken one is
    counted, said, and opened again."""
    while True:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                host, port, ssl=tls_ctx, server_hostname="churn.example" if tls_ctx else None), 5)
            key = base64.b64encode(os.urandom(16))
            writer.write(b"GET /ws HTTP/1.1\r\nHost: churn.example\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            if not head.startswith(b"HTTP/1.1 101"):
                raise ConnectionError("no 101: %r" % head[:40])
            i = 0
            while True:
                i += 1
                message = ("%s %d" % (name, i)).encode()
                writer.write(frame(1, message, True))
                counts_ref[0].ws_sent += 1
                opcode, data = await asyncio.wait_for(read_frame(reader), 5)
                if data != message:
                    raise ConnectionError("echo %r for %r" % (data, message))
                counts_ref[0].ws_echoed += 1
                await asyncio.sleep(0.05)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, ssl.SSLError) as e:
            counts_ref[0].ws_broken += 1
            counts_ref[0].note("websocket %s: %r" % (name, e))
            await asyncio.sleep(0.1)


async def tls_checker(host, port, ctx, counts_ref):
    """New TLS connections, one after another, verified against the CA for
    churn.example, each with one GET that must answer 200."""
    while True:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, server_hostname="churn.example"), 5)
            cert = writer.get_extra_info("peercert")
            writer.write(b"GET / HTTP/1.1\r\nHost: churn.example\r\nConnection: close\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
            writer.close()
            if not head.startswith(b"HTTP/1.1 200"):
                raise ConnectionError("status %r" % head.strip())
            counts_ref[0].tls_ok += 1
            counts_ref[0].serials.add(cert.get("serialNumber"))
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, ssl.SSLError) as e:
            counts_ref[0].tls_failed += 1
            counts_ref[0].note("tls: %r" % e)
        await asyncio.sleep(0.01)


def client(args):
    """client HOST HTTP_PORT HTTPS_PORT CA WS_COUNT"""
    host, http_port, https_port, ca, ws_count = args
    ctx = ssl.create_default_context(cafile=ca)
    counts_ref = [Counts()]

    async def main():
        loop = asyncio.get_running_loop()
        reports = asyncio.Queue()
        loop.add_signal_handler(signal.SIGUSR1, lambda: reports.put_nowait("report"))
        loop.add_signal_handler(signal.SIGTERM, lambda: reports.put_nowait("stop"))
        tasks = [asyncio.create_task(ws_client(host, int(http_port), None, counts_ref, "ws%d" % i))
                 for i in range(int(ws_count))]
        tasks.append(asyncio.create_task(ws_client(host, int(https_port), ctx, counts_ref, "wss")))
        tasks.append(asyncio.create_task(tls_checker(host, int(https_port), ctx, counts_ref)))
        print("ready", flush=True)
        while True:
            what = await reports.get()
            c, counts_ref[0] = counts_ref[0], Counts()
            print(json.dumps({"ws_sent": c.ws_sent, "ws_echoed": c.ws_echoed, "ws_broken": c.ws_broken,
                              "tls_ok": c.tls_ok, "tls_failed": c.tls_failed,
                              "serials": len(c.serials), "errors": c.errors}), flush=True)
            if what == "stop":
                for t in tasks:
                    t.cancel()
                return
    asyncio.run(main())


if __name__ == "__main__":
    {"wsbackend": lambda a: wsbackend(*a), "driver": driver, "client": client}[sys.argv[1]](sys.argv[2:])
