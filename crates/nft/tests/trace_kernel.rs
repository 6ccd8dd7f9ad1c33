//! The tracer against the kernel (root). In namespaces made and removed
//! here — a client with two addresses, a node holding the tables and
//! routing between them, a server with three addresses listening on ports
//! the kernel chose — seeded generated rulesets are loaded with `nft -f`,
//! real UDP datagrams and TCP connections are sent, and what the kernel did
//! (which server address and port got the packet and from which source;
//! refused; unreachable; nothing) must be one of the tracer's outcomes. For
//! random choices the spread over repeated packets must fit the tracer's
//! probabilities; a second datagram of a connection must do what the
//! tracer says an established packet does.
//!
//! `STRAIT_TRACE_SEED=N` replays another seed.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strait_linux::{is_root, nft_apply, write_sysctl, NetNs};
use strait_nft::trace::{self, Fate, Node, Packet, Route};
use strait_nft::{
    addr_type, ct_state, protocol, Chain, ChainType, CmpOp, DataType, ElementValue, Expr, Family,
    Field, Hook, MapData, MarkOp, Priority, Reject, Set, Table, Value, Verdict, L3,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::sync::oneshot;

/// How long a packet that got no answer is waited for.
const SILENCE: Duration = Duration::from_millis(300);
const ROUNDS: usize = 12;
const SERVICES: usize = 6;
/// Datagrams sent to a Service with several endpoints, for the spread.
const SPREAD: usize = 300;
/// Datagrams of a spread in flight at once.
const BATCH: usize = 60;

const NODE_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 1);
const NODE_SERVER_SIDE: Ipv4Addr = Ipv4Addr::new(10, 10, 2, 1);
const POD_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 2);
const OUTSIDE_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 3);
fn service_cidr() -> ipnet::IpNet {
    "10.96.0.0/12".parse().unwrap()
}

const SERVER_ADDRS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 10, 2, 2),
    Ipv4Addr::new(10, 10, 2, 3),
    Ipv4Addr::new(10, 10, 2, 4),
];

/// The three namespaces; removed when dropped (also on failure).
struct Namespaces {
    names: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = NetNs::delete(n);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn sysctls(ns: &NetNs, pairs: &'static [(&'static str, &'static str)]) -> Result<(), String> {
    ns.run(move || {
        for (k, v) in pairs {
            write_sysctl(k, v).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?
}

/// client (c0: .1.2, .1.3) — (nc: .1.1) node (ns: .2.1) — (s0: .2.2-4) server
fn build(guard: &mut Namespaces) -> Result<(NetNs, NetNs, NetNs), String> {
    let pid = std::process::id();
    let mut open = Vec::new();
    for role in ["c", "n", "s"] {
        let name = format!("strait-trk-{role}-{pid}");
        guard.names.push(name.clone());
        open.push(NetNs::create(&name).map_err(|e| e.to_string())?);
    }
    let (c, n, s) = (&guard.names[0], &guard.names[1], &guard.names[2]);
    let steps: Vec<Vec<&str>> = vec![
        vec![
            "-n", n, "link", "add", "nc", "type", "veth", "peer", "name", "c0", "netns", c,
        ],
        vec![
            "-n", n, "link", "add", "ns", "type", "veth", "peer", "name", "s0", "netns", s,
        ],
        vec!["-n", n, "addr", "add", "10.10.1.1/24", "dev", "nc"],
        vec!["-n", n, "addr", "add", "10.10.2.1/24", "dev", "ns"],
        vec!["-n", n, "link", "set", "nc", "up"],
        vec!["-n", n, "link", "set", "ns", "up"],
        vec!["-n", n, "link", "set", "lo", "up"],
        // Service addresses are routed (as by a node's default route) to
        // the server namespace, which does not forward: what is not
        // translated vanishes there.
        vec!["-n", n, "route", "add", "10.96.0.0/12", "via", "10.10.2.2"],
        vec!["-n", c, "addr", "add", "10.10.1.2/24", "dev", "c0"],
        vec!["-n", c, "addr", "add", "10.10.1.3/24", "dev", "c0"],
        vec!["-n", c, "link", "set", "c0", "up"],
        vec!["-n", c, "link", "set", "lo", "up"],
        vec!["-n", c, "route", "add", "default", "via", "10.10.1.1"],
        vec!["-n", s, "addr", "add", "10.10.2.2/24", "dev", "s0"],
        vec!["-n", s, "addr", "add", "10.10.2.3/24", "dev", "s0"],
        vec!["-n", s, "addr", "add", "10.10.2.4/24", "dev", "s0"],
        vec!["-n", s, "link", "set", "s0", "up"],
        vec!["-n", s, "link", "set", "lo", "up"],
        vec!["-n", s, "route", "add", "default", "via", "10.10.2.1"],
    ];
    for step in &steps {
        ip(step)?;
    }
    let server = open.pop().unwrap();
    let node = open.pop().unwrap();
    let client = open.pop().unwrap();
    // ICMP errors are rate limited per peer (6 then 1/s): the refusals
    // this test counts on must all be sent.
    sysctls(
        &node,
        &[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.icmp_ratemask", "0"),
        ],
    )?;
    sysctls(&server, &[("net.ipv4.icmp_ratemask", "0")])?;
    Ok((client, node, server))
}

/// The node as the tracer sees it.
fn node_context() -> Node {
    let route = |to: &str, oif: &str, src: Ipv4Addr| Route {
        to: to.parse().unwrap(),
        oif: oif.into(),
        src: Some(IpAddr::V4(src)),
    };
    Node {
        local: vec![NODE_CLIENT_SIDE.into(), NODE_SERVER_SIDE.into()],
        routes: vec![
            route("10.10.1.0/24", "nc", NODE_CLIENT_SIDE),
            route("10.10.2.0/24", "ns", NODE_SERVER_SIDE),
            route("10.96.0.0/12", "ns", NODE_SERVER_SIDE),
        ],
        sets: BTreeMap::new(),
    }
}

/// What the kernel did with one packet, as the client and servers see it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    /// A server socket got it, from this source address.
    Arrived {
        at: SocketAddr,
        from: IpAddr,
    },
    Refused,
    /// The sending host's own output path dropped it (EPERM).
    Denied,
    Unreachable,
    Silent,
    Other(String),
}

fn seen_error(e: &std::io::Error) -> Seen {
    match e.raw_os_error() {
        Some(111) => Seen::Refused,
        Some(1) => Seen::Denied,
        Some(113) | Some(101) => Seen::Unreachable,
        _ => Seen::Other(e.to_string()),
    }
}

/// What the client should see for a tracer outcome.
fn expected(o: &trace::Outcome, c: &Check, servers: &[SocketAddr]) -> Seen {
    let src = c.src;
    let udp = c.proto == protocol::UDP;
    match &o.fate {
        Fate::Forwarded | Fate::Sent => {
            let at = SocketAddr::new(o.daddr, o.dport.unwrap_or(0));
            if servers.contains(&at) {
                Seen::Arrived {
                    at,
                    from: o.snat.unwrap_or(IpAddr::V4(src)),
                }
            } else if service_cidr().contains(&o.daddr) {
                Seen::Silent
            } else {
                // Nothing listens there: the server's stack refuses.
                Seen::Refused
            }
        }
        // Nothing listens on the node.
        Fate::Local => Seen::Refused,
        // The node's own datagram dropped or rejected on its way out: the
        // send fails with EPERM (the ICMP error comes after). A TCP SYN
        // dropped is retransmitted silently; a reset refuses.
        Fate::Dropped | Fate::Rejected(_) if c.local && udp => Seen::Denied,
        Fate::Dropped => Seen::Silent,
        Fate::Rejected(_) => Seen::Refused,
        Fate::NoRoute => Seen::Unreachable,
    }
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Seen>>>>;

fn deliver(waiters: &Waiters, nonce: u64, at: SocketAddr, from: SocketAddr) {
    if let Some(tx) = waiters.lock().unwrap().remove(&nonce) {
        let _ = tx.send(Seen::Arrived {
            at,
            from: from.ip(),
        });
    }
}

async fn serve_udp(sock: UdpSocket, waiters: Waiters) {
    let at = sock.local_addr().unwrap();
    let mut buf = [0u8; 64];
    while let Ok((n, from)) = sock.recv_from(&mut buf).await {
        if n == 8 {
            let nonce = u64::from_be_bytes(buf[..8].try_into().unwrap());
            deliver(&waiters, nonce, at, from);
        }
    }
}

async fn serve_tcp(listener: TcpListener, waiters: Waiters) {
    let at = listener.local_addr().unwrap();
    while let Ok((mut stream, from)) = listener.accept().await {
        let waiters = waiters.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 8];
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf)).await
            {
                deliver(&waiters, u64::from_be_bytes(buf), at, from);
            }
        });
    }
}

/// Wait for the server side to report `rx`, or an error on `err`, or
/// silence.
async fn outcome_of<F: std::future::Future<Output = Option<Seen>>>(
    rx: oneshot::Receiver<Seen>,
    err: F,
) -> Seen {
    tokio::select! {
        r = rx => r.unwrap_or(Seen::Other("waiter dropped".into())),
        Some(e) = err => e,
        _ = tokio::time::sleep(SILENCE) => Seen::Silent,
    }
}

/// Where probes are sent from: an address of the client, or of the node
/// itself (its sockets made in its namespace).
#[derive(Clone)]
struct Source {
    addr: Ipv4Addr,
    ns: Option<Arc<NetNs>>,
}

struct Sender {
    waiters: Waiters,
    nonce: Arc<AtomicU64>,
}

impl Sender {
    fn register(&self) -> (u64, oneshot::Receiver<Seen>) {
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap().insert(nonce, tx);
        (nonce, rx)
    }

    /// One datagram (and, when `second`, a second one of the same
    /// connection once the first arrived).
    async fn udp(&self, from: &Source, dst: SocketAddr, second: bool) -> (Seen, Option<Seen>) {
        let src = from.addr;
        let made = match &from.ns {
            None => UdpSocket::bind((src, 0)).await,
            Some(ns) => ns
                .run(move || {
                    let s = std::net::UdpSocket::bind((src, 0))?;
                    s.set_nonblocking(true)?;
                    Ok(s)
                })
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .and_then(UdpSocket::from_std),
        };
        let sock = match made {
            Ok(s) => s,
            Err(e) => return (Seen::Other(e.to_string()), None),
        };
        if let Err(e) = sock.connect(dst).await {
            return (Seen::Other(e.to_string()), None);
        }
        let mut results = Vec::new();
        for _ in 0..if second { 2 } else { 1 } {
            let (nonce, rx) = self.register();
            if let Err(e) = sock.send(&nonce.to_be_bytes()).await {
                results.push(seen_error(&e));
                break;
            }
            let err = async {
                let mut buf = [0u8; 16];
                match sock.recv(&mut buf).await {
                    Err(e) => Some(seen_error(&e)),
                    Ok(_) => Some(Seen::Other("a reply".into())),
                }
            };
            let seen = outcome_of(rx, err).await;
            self.waiters.lock().unwrap().remove(&nonce);
            let arrived = matches!(seen, Seen::Arrived { .. });
            results.push(seen);
            if !arrived {
                break;
            }
        }
        let mut it = results.into_iter();
        (it.next().unwrap(), if second { it.next() } else { None })
    }

    async fn tcp(&self, from: &Source, dst: SocketAddr) -> Seen {
        let src = from.addr;
        let make = move || TcpSocket::new_v4().and_then(|s| s.bind((src, 0).into()).map(|_| s));
        let made = match &from.ns {
            None => make(),
            Some(ns) => ns.run(make).map_err(std::io::Error::other).and_then(|r| r),
        };
        let sock = match made {
            Ok(s) => s,
            Err(e) => return Seen::Other(e.to_string()),
        };
        let (nonce, rx) = self.register();
        let seen = match tokio::time::timeout(SILENCE, sock.connect(dst)).await {
            Err(_) => Seen::Silent,
            Ok(Err(e)) => seen_error(&e),
            Ok(Ok(mut stream)) => match stream.write_all(&nonce.to_be_bytes()).await {
                Err(e) => seen_error(&e),
                Ok(()) => match tokio::time::timeout(Duration::from_secs(5), rx).await {
                    Ok(Ok(seen)) => seen,
                    _ => Seen::Other("connected, but no server saw the connection".into()),
                },
            },
        };
        self.waiters.lock().unwrap().remove(&nonce);
        seen
    }
}

/// SplitMix64: a seeded generator without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A server: its address and the ports its UDP socket and TCP listener got.
#[derive(Clone, Copy, Debug)]
struct Server {
    addr: Ipv4Addr,
    udp: u16,
    tcp: u16,
}

impl Server {
    fn port(&self, proto: u8) -> u16 {
        if proto == protocol::TCP {
            self.tcp
        } else {
            self.udp
        }
    }
}

/// Something to send packets to in a round.
struct Target {
    what: String,
    /// Destination address; the port per protocol.
    addr: Ipv4Addr,
    udp: u16,
    tcp: u16,
    /// Several endpoints: send many datagrams and check the spread.
    spread: bool,
}

fn v4(a: Ipv4Addr) -> Value {
    Value::Addr(IpAddr::V4(a))
}

fn net(s: &str) -> Value {
    Value::Net(s.parse().unwrap())
}

const PROTOS: [u8; 2] = [protocol::UDP, protocol::TCP];

fn proto_value(p: u8) -> Value {
    Value::Proto(p)
}

/// One round's tables (in the order they are loaded) and targets.
fn round(rng: &mut Rng, r: usize, servers: &[Server]) -> (Vec<Table>, Vec<Target>) {
    use DataType::*;
    let mut t = Table::new(Family::Ip, "strait-x");
    t.set("cluster-cidrs", Set::new(&[Ipv4Addr]).interval())
        .insert(vec![net("10.10.1.2/32")], None);
    t.set("service-cidrs", Set::new(&[Ipv4Addr]).interval())
        .insert(vec![net("10.96.0.0/12")], None);
    t.set("nodeport-addresses", Set::new(&[Ipv4Addr]).interval())
        .insert(vec![net("10.10.1.1/32")], None);
    let svc_key = [Ipv4Addr, InetProto, InetService];
    t.set("service-ips", Set::map(&svc_key, MapData::Verdict));
    t.set(
        "service-nodeports",
        Set::map(&[InetProto, InetService], MapData::Verdict),
    );
    t.set("no-endpoint-services", Set::map(&svc_key, MapData::Verdict));
    t.set("firewall-ips", Set::new(&svc_key));
    t.set(
        "firewall-allow",
        Set::new(&[Ipv4Addr, InetProto, InetService, Ipv4Addr]).interval(),
    );
    t.set(
        "service-endpoints",
        Set::map(
            &[Ipv4Addr, InetProto, InetService, Slot],
            MapData::Value(vec![Ipv4Addr, InetService]),
        ),
    );
    t.set(
        "nodeport-endpoints",
        Set::map(
            &[InetProto, InetService, Slot],
            MapData::Value(vec![Ipv4Addr, InetService]),
        ),
    );
    let key3 = [Field::IpDaddr, Field::L4Proto, Field::ThDport];
    let new = || Expr::eq(Field::CtState, Value::CtState(ct_state::NEW));
    t.chain(
        "nat-prerouting",
        Chain::base(ChainType::Nat, Hook::Prerouting, Priority::Dstnat),
    )
    .rule(vec![Expr::jump("services")]);
    t.chain(
        "nat-output",
        Chain::base(ChainType::Nat, Hook::Output, Priority::Value(-100)),
    )
    .rule(vec![Expr::jump("services")]);
    t.chain(
        "nat-postrouting",
        Chain::base(ChainType::Nat, Hook::Postrouting, Priority::Srcnat),
    )
    .rule(vec![Expr::jump("masquerading")]);
    t.chain(
        "filter-output-pre-dnat",
        Chain::base(ChainType::Filter, Hook::Output, Priority::Value(-110)),
    )
    .rule(vec![new(), Expr::jump("firewall-check")]);
    t.chain(
        "filter-prerouting",
        Chain::base(ChainType::Filter, Hook::Prerouting, Priority::Value(-110)),
    )
    .rule(vec![new(), Expr::jump("firewall-check")]);
    for (name, hook) in [
        ("filter-forward", Hook::Forward),
        ("filter-input", Hook::Input),
        ("filter-output", Hook::Output),
    ] {
        t.chain(name, Chain::base(ChainType::Filter, hook, Priority::Filter))
            .rule(vec![new(), Expr::jump("endpoints-check")]);
    }
    t.chain("firewall-check", Chain::regular()).rule(vec![
        Expr::lookup(&key3, "firewall-ips"),
        Expr::not_in(
            &[
                Field::IpDaddr,
                Field::L4Proto,
                Field::ThDport,
                Field::IpSaddr,
            ],
            "firewall-allow",
        ),
        Expr::drop(),
    ]);
    let check = t.chain("endpoints-check", Chain::regular());
    check.rule(vec![Expr::vmap(&key3, "no-endpoint-services")]);
    check.rule(vec![
        Expr::lookup(&[Field::IpDaddr], "service-cidrs"),
        Expr::drop(),
    ]);
    let services = t.chain("services", Chain::regular());
    services.rule(vec![Expr::vmap(&key3, "service-ips")]);
    services.rule(vec![
        Expr::eq(Field::FibDaddrType, Value::AddrType(addr_type::LOCAL)),
        Expr::ne(Field::IpDaddr, net("127.0.0.0/8")),
        Expr::lookup(&[Field::IpDaddr], "nodeport-addresses"),
        Expr::vmap(&[Field::L4Proto, Field::ThDport], "service-nodeports"),
    ]);
    let masq = t.chain("masquerading", Chain::regular());
    masq.rule(vec![
        Expr::Masked {
            field: Field::Mark,
            mask: 0x4000,
            op: CmpOp::Eq,
            value: 0,
        },
        Expr::ret(),
    ]);
    masq.rule(vec![Expr::SetMark(MarkOp::Xor(0x4000))]);
    masq.rule(vec![Expr::Masquerade { fully_random: true }]);
    t.chain("mark-for-masquerade", Chain::regular())
        .rule(vec![Expr::SetMark(MarkOp::Or(0x4000))]);
    let reject = t.chain("reject-chain", Chain::regular());
    reject.rule(vec![
        Expr::eq(Field::L4Proto, Value::TCP),
        Expr::Reject(Reject::TcpReset),
    ]);
    reject.rule(vec![Expr::Reject(Reject::Default)]);
    for n in 1..=3u32 {
        let c = t.chain(&format!("cluster-dnat-{n}"), Chain::regular());
        c.rule(vec![
            Expr::not_in(&[Field::IpSaddr], "cluster-cidrs"),
            Expr::jump("mark-for-masquerade"),
        ]);
        c.rule(vec![Expr::DnatMap {
            l3: L3::V4,
            key: vec![
                Field::IpDaddr,
                Field::L4Proto,
                Field::ThDport,
                Field::NumgenRandom { modulus: n },
            ],
            map: "service-endpoints".into(),
        }]);
        let c = t.chain(&format!("nodeport-dnat-{n}"), Chain::regular());
        c.rule(vec![Expr::jump("mark-for-masquerade")]);
        c.rule(vec![Expr::DnatMap {
            l3: L3::V4,
            key: vec![
                Field::L4Proto,
                Field::ThDport,
                Field::NumgenRandom { modulus: n },
            ],
            map: "nodeport-endpoints".into(),
        }]);
    }

    let mut targets = Vec::new();
    let goto = |c: &str| Some(ElementValue::Verdict(Verdict::Goto(c.into())));
    let pick_endpoints = |rng: &mut Rng| -> Vec<Server> {
        let n = 1 + rng.below(3) as usize;
        let start = rng.below(3) as usize;
        (0..n).map(|k| servers[(start + k) % 3]).collect()
    };
    for i in 0..SERVICES {
        let vip = std::net::Ipv4Addr::new(10, 96, r as u8 + 1, 10 + i as u8);
        let vport = 1024 + rng.below(60000) as u16;
        let kind = rng.below(100);
        let mut target = Target {
            what: String::new(),
            addr: vip,
            udp: vport,
            tcp: vport,
            spread: false,
        };
        match kind {
            0..=39 => {
                let eps = pick_endpoints(rng);
                target.what = format!("ClusterIP, {} endpoints by map", eps.len());
                target.spread = eps.len() > 1;
                for p in PROTOS {
                    t.sets["service-ips"].insert(
                        vec![v4(vip), proto_value(p), Value::Port(vport)],
                        goto(&format!("cluster-dnat-{}", eps.len())),
                    );
                    for (slot, e) in eps.iter().enumerate() {
                        t.sets["service-endpoints"].insert(
                            vec![
                                v4(vip),
                                proto_value(p),
                                Value::Port(vport),
                                Value::Number(slot as u32),
                            ],
                            Some(ElementValue::Data(vec![v4(e.addr), Value::Port(e.port(p))])),
                        );
                    }
                }
            }
            40..=54 => {
                // The proxy's per-service chain: a random cascade.
                let eps = pick_endpoints(rng);
                target.what = format!("ClusterIP, {} endpoints by cascade", eps.len());
                target.spread = eps.len() > 1;
                let chain = format!("svc-{i}");
                let mut rules = vec![vec![
                    Expr::not_in(&[Field::IpSaddr], "cluster-cidrs"),
                    Expr::jump("mark-for-masquerade"),
                ]];
                for (k, e) in eps.iter().enumerate() {
                    let ep = format!("ep-{i}-{k}");
                    let mut r = Vec::new();
                    let left = (eps.len() - k) as u32;
                    if left > 1 {
                        r.push(Expr::eq(
                            Field::NumgenRandom { modulus: left },
                            Value::Number(0),
                        ));
                    }
                    r.push(Expr::goto(&ep));
                    rules.push(r);
                    let c = t.chain(&ep, Chain::regular());
                    for p in PROTOS {
                        c.rule(vec![
                            Expr::eq(Field::L4Proto, proto_value(p)),
                            Expr::Dnat {
                                to: IpAddr::V4(e.addr),
                                port: Some(e.port(p)),
                            },
                        ]);
                    }
                }
                let c = t.chain(&chain, Chain::regular());
                for r in rules {
                    c.rule(r);
                }
                for p in PROTOS {
                    t.sets["service-ips"].insert(
                        vec![v4(vip), proto_value(p), Value::Port(vport)],
                        goto(&chain),
                    );
                }
            }
            55..=64 => {
                target.what = "no endpoints: reject".into();
                for p in PROTOS {
                    t.sets["no-endpoint-services"].insert(
                        vec![v4(vip), proto_value(p), Value::Port(vport)],
                        goto("reject-chain"),
                    );
                }
            }
            65..=69 => {
                target.what = "no local endpoints: drop".into();
                for p in PROTOS {
                    t.sets["no-endpoint-services"].insert(
                        vec![v4(vip), proto_value(p), Value::Port(vport)],
                        Some(ElementValue::Verdict(Verdict::Drop)),
                    );
                }
            }
            70..=84 => {
                let eps = pick_endpoints(rng);
                let np = 30000 + (r * SERVICES + i) as u16;
                target.what = format!("NodePort, {} endpoints", eps.len());
                target.addr = NODE_CLIENT_SIDE;
                target.udp = np;
                target.tcp = np;
                target.spread = eps.len() > 1;
                for p in PROTOS {
                    t.sets["service-nodeports"].insert(
                        vec![proto_value(p), Value::Port(np)],
                        goto(&format!("nodeport-dnat-{}", eps.len())),
                    );
                    for (slot, e) in eps.iter().enumerate() {
                        t.sets["nodeport-endpoints"].insert(
                            vec![proto_value(p), Value::Port(np), Value::Number(slot as u32)],
                            Some(ElementValue::Data(vec![v4(e.addr), Value::Port(e.port(p))])),
                        );
                    }
                }
            }
            85..=91 => target.what = "a service address nobody holds: drop".into(),
            _ => {
                let s = servers[rng.below(3) as usize];
                target.what = "straight to a server".into();
                target.addr = s.addr;
                target.udp = s.udp;
                target.tcp = s.tcp;
            }
        }
        // Source ranges for some Services.
        if kind < 55 && rng.chance(30) {
            let allow = [
                "10.10.1.2/32",
                "10.10.1.3/32",
                "10.10.1.0/24",
                "192.0.2.0/24",
            ][rng.below(4) as usize];
            target.what.push_str(&format!(", source ranges {allow}"));
            for p in PROTOS {
                let k = vec![v4(vip), proto_value(p), Value::Port(vport)];
                t.sets["firewall-ips"].insert(k.clone(), None);
                let mut a = k;
                a.push(net(allow));
                t.sets["firewall-allow"].insert(a, None);
            }
        }
        targets.push(target);
    }
    let mut tables = vec![t];

    // Another part's table: filters on the translated packet, at a priority
    // around the proxy's, with an accept that saves nothing.
    if rng.chance(70) {
        let mut lab = Table::new(Family::Inet, "strait-lab");
        let prio = [-10, 0, 10][rng.below(3) as usize];
        let c = lab.chain(
            "forward",
            Chain::base(ChainType::Filter, Hook::Forward, Priority::Value(prio)),
        );
        let victim = servers[rng.below(3) as usize];
        match rng.below(3) {
            0 => {
                c.rule(vec![
                    Expr::eq(Field::IpDaddr, v4(victim.addr)),
                    Expr::eq(Field::L4Proto, Value::UDP),
                    Expr::drop(),
                ]);
            }
            1 => {
                c.rule(vec![
                    Expr::Masked {
                        field: Field::Mark,
                        mask: 0x4000,
                        op: CmpOp::Ne,
                        value: 0,
                    },
                    Expr::eq(Field::IpDaddr, v4(victim.addr)),
                    Expr::Reject(Reject::Default),
                ]);
            }
            _ => {
                c.rule(vec![
                    Expr::eq(Field::IpSaddr, v4(OUTSIDE_CLIENT)),
                    Expr::OneOf {
                        field: Field::ThDport,
                        values: vec![Value::Port(victim.tcp), Value::Port(victim.udp)],
                    },
                    Expr::drop(),
                ]);
            }
        }
        if rng.chance(50) {
            c.rule(vec![Expr::Counter, Expr::accept()]);
        }
        // Sometimes an early drop at prerouting, before any NAT.
        if rng.chance(30) {
            let t0 = &targets[rng.below(SERVICES as u64) as usize];
            let c = lab.chain(
                "raw",
                Chain::base(ChainType::Filter, Hook::Prerouting, Priority::Raw),
            );
            c.rule(vec![
                Expr::eq(Field::IpSaddr, v4(OUTSIDE_CLIENT)),
                Expr::eq(Field::IpDaddr, v4(t0.addr)),
                Expr::drop(),
            ]);
        }
        // Sometimes a NAT chain of its own at prerouting, before or after
        // the proxy's, for every datagram from outside: the first chain
        // that translates wins, the others are not consulted for that
        // connection.
        if rng.chance(40) {
            let to = servers[rng.below(3) as usize];
            let prio = [-150, -50][rng.below(2) as usize];
            let c = lab.chain(
                "nat",
                Chain::base(ChainType::Nat, Hook::Prerouting, Priority::Value(prio)),
            );
            c.rule(vec![
                Expr::eq(Field::IpSaddr, v4(OUTSIDE_CLIENT)),
                Expr::eq(Field::L4Proto, Value::UDP),
                Expr::Dnat {
                    to: IpAddr::V4(to.addr),
                    port: Some(to.udp),
                },
            ]);
        }
        tables.push(lab);
    }
    (tables, targets)
}

/// One kernel observation set against the tracer.
struct Check {
    what: String,
    proto: u8,
    src: Ipv4Addr,
    /// Sent by the node itself.
    local: bool,
    dst: SocketAddr,
    seen: Vec<Seen>,
    second: Option<Seen>,
}

fn compare(
    tables: &[&Table],
    node: &Node,
    servers: &[SocketAddr],
    c: &Check,
) -> Result<(), String> {
    let packet = |p: &Check| {
        let packet = Packet::new(
            "nc",
            p.proto,
            IpAddr::V4(p.src),
            40000,
            p.dst.ip(),
            p.dst.port(),
        );
        if p.local {
            packet.local()
        } else {
            packet
        }
    };
    let outcomes = trace::trace(tables, node, &packet(c)).map_err(|e| e.to_string())?;
    let mut want: BTreeMap<Seen, f64> = BTreeMap::new();
    for o in &outcomes {
        *want.entry(expected(o, c, servers)).or_default() += o.probability;
    }
    let mut got: BTreeMap<&Seen, usize> = BTreeMap::new();
    for s in &c.seen {
        *got.entry(s).or_default() += 1;
    }
    // The kernel's "no route" ICMP errors are rate limited per host (a
    // global setting, not the namespace's): silence fits them too.
    let fits = |s: &Seen, want: &BTreeMap<Seen, f64>| {
        want.get(s).is_some_and(|p| *p > 0.0)
            || (*s == Seen::Silent && want.contains_key(&Seen::Unreachable))
    };
    for (s, n) in &got {
        if !fits(s, &want) {
            return Err(format!(
                "the kernel did {s:?} ({n}×), the tracer says only {want:?}"
            ));
        }
    }
    if c.seen.len() > 1 {
        // The spread: each way within 4.5 standard deviations of its
        // share (a chance of 7e-6 to fail by bad luck; 1/2 against 1/3 over
        // 300 packets is 5.8 deviations), and every likely way seen.
        let n = c.seen.len() as f64;
        for (s, p) in &want {
            let k = got.get(s).copied().unwrap_or(0) as f64;
            let sd = (n * p * (1.0 - p)).sqrt();
            if (k - n * p).abs() > 4.5 * sd + 1.0 || (*p >= 0.1 && k == 0.0) {
                return Err(format!(
                    "{s:?}: {k} of {n} packets, the tracer says p = {p:.3} (all: {got:?})"
                ));
            }
        }
    }
    if let (Some(second), Seen::Arrived { at, from }) = (&c.second, &c.seen[0]) {
        // A later packet of the connection: conntrack's translations, no
        // NAT chains, no `ct state new` rules.
        let dnat = (*at != c.dst).then_some((at.ip(), Some(at.port())));
        let mut p = packet(c).established(dnat);
        if *from != IpAddr::V4(c.src) {
            p.ct.snat = Some(*from);
            p.ct.status |= strait_nft::ct_status::SNAT;
        }
        let outcomes = trace::trace(tables, node, &p).map_err(|e| e.to_string())?;
        let want: BTreeMap<Seen, f64> = outcomes
            .iter()
            .map(|o| (expected(o, c, servers), o.probability))
            .collect();
        if !fits(second, &want) {
            return Err(format!(
                "second datagram: the kernel did {second:?}, the tracer says {want:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn the_tracer_agrees_with_the_kernel() {
    if !is_root() {
        eprintln!("skipped: the tracer's kernel cross-check needs root (namespaces, nft)");
        return;
    }
    let seed: u64 = std::env::var("STRAIT_TRACE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0011);
    let started = Instant::now();
    let mut guard = Namespaces { names: Vec::new() };
    let (client, node_ns, server_ns) = build(&mut guard).expect("namespaces");

    // Servers: a UDP socket and a TCP listener on each address, on ports
    // the kernel picks.
    let sockets = server_ns
        .run(|| {
            SERVER_ADDRS
                .iter()
                .map(|a| {
                    let u = std::net::UdpSocket::bind((*a, 0)).unwrap();
                    let t = std::net::TcpListener::bind((*a, 0)).unwrap();
                    u.set_nonblocking(true).unwrap();
                    t.set_nonblocking(true).unwrap();
                    (u, t)
                })
                .collect::<Vec<_>>()
        })
        .expect("server sockets");
    let servers: Vec<Server> = sockets
        .iter()
        .map(|(u, t)| Server {
            addr: match u.local_addr().unwrap().ip() {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => unreachable!(),
            },
            udp: u.local_addr().unwrap().port(),
            tcp: t.local_addr().unwrap().port(),
        })
        .collect();
    let listening: Vec<SocketAddr> = sockets
        .iter()
        .flat_map(|(u, t)| [u.local_addr().unwrap(), t.local_addr().unwrap()])
        .collect();

    // This thread sends from the client namespace.
    let _in_client = client.enter().expect("enter the client namespace");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let waiters: Waiters = Arc::default();
    let sender = Arc::new(Sender {
        waiters: waiters.clone(),
        nonce: Arc::new(AtomicU64::new(1)),
    });
    let node = node_context();
    let node_ns = Arc::new(node_ns);
    let froms = [
        Source {
            addr: POD_CLIENT,
            ns: None,
        },
        Source {
            addr: OUTSIDE_CLIENT,
            ns: None,
        },
        // The node's own connections, from its client-side address.
        Source {
            addr: NODE_CLIENT_SIDE,
            ns: Some(node_ns.clone()),
        },
    ];
    let mut rng = Rng(seed);
    let (mut agreed, mut packets, mut failures) = (0usize, 0usize, Vec::new());
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    rt.block_on(async {
        for (u, t) in sockets {
            tokio::spawn(serve_udp(UdpSocket::from_std(u).unwrap(), waiters.clone()));
            tokio::spawn(serve_tcp(
                TcpListener::from_std(t).unwrap(),
                waiters.clone(),
            ));
        }
        for r in 0..ROUNDS {
            let (tables, targets) = round(&mut rng, r, &servers);
            let scripts: Vec<String> = tables
                .iter()
                .map(|t| {
                    t.validate().expect("generated table is valid");
                    strait_nft::text::table_script(t)
                })
                .collect();
            node_ns
                .run(move || -> Result<(), String> {
                    // The previous round's tables go first.
                    let _ = nft_apply("flush ruleset\n");
                    for s in &scripts {
                        nft_apply(s).map_err(|e| format!("{e}\n{s}"))?;
                    }
                    Ok(())
                })
                .expect("node namespace")
                .expect("nft -f");
            // Every packet of the round at once; each waits for its own
            // answer.
            let mut set = tokio::task::JoinSet::new();
            for target in &targets {
                for proto in PROTOS {
                    let port = if proto == protocol::TCP {
                        target.tcp
                    } else {
                        target.udp
                    };
                    let dst = SocketAddr::new(IpAddr::V4(target.addr), port);
                    for from in &froms {
                        let src = from.addr;
                        let from = from.clone();
                        let local = from.ns.is_some();
                        let repeat = if target.spread && proto == protocol::UDP && src == POD_CLIENT
                        {
                            SPREAD
                        } else {
                            1
                        };
                        let sender = sender.clone();
                        let what = target.what.clone();
                        set.spawn(async move {
                            let mut seen = Vec::new();
                            let mut second = None;
                            if proto == protocol::TCP {
                                seen.push(sender.tcp(&from, dst).await);
                            } else {
                                // A fresh socket (a new connection) each,
                                // in batches: a dropped one waits for
                                // silence, and few sockets are open at once.
                                let mut k = 0;
                                while k < repeat {
                                    let batch = (repeat - k).min(BATCH);
                                    let mut tasks = Vec::new();
                                    for j in k..k + batch {
                                        let sender = sender.clone();
                                        let from = from.clone();
                                        tasks.push(tokio::spawn(async move {
                                            sender.udp(&from, dst, j == 0).await
                                        }));
                                    }
                                    for (j, t) in tasks.into_iter().enumerate() {
                                        let (s, s2) = t.await.unwrap();
                                        seen.push(s);
                                        if k + j == 0 {
                                            second = s2;
                                        }
                                    }
                                    k += batch;
                                }
                            }
                            Check {
                                what,
                                proto,
                                src,
                                local,
                                dst,
                                seen,
                                second,
                            }
                        });
                    }
                }
            }
            let refs: Vec<&Table> = tables.iter().collect();
            while let Some(check) = set.join_next().await {
                let check = check.unwrap();
                packets += check.seen.len() + usize::from(check.second.is_some());
                let kind = check.what.split(',').next().unwrap_or_default().to_owned();
                match compare(&refs, &node, &listening, &check) {
                    Ok(()) => {
                        agreed += 1;
                        *kinds.entry(kind).or_default() += 1;
                    }
                    Err(e) => failures.push(format!(
                        "round {r}: {} {} from {} to {}: {e}",
                        check.what,
                        if check.proto == protocol::TCP {
                            "tcp"
                        } else {
                            "udp"
                        },
                        check.src,
                        check.dst
                    )),
                }
            }
        }
    });
    drop(_in_client);
    eprintln!(
        "tracer vs kernel (seed {seed:#x}): {agreed} of {} cases agreed ({packets} packets, {ROUNDS} rulesets) in {:.1} s; by kind: {kinds:?}",
        agreed + failures.len(),
        started.elapsed().as_secs_f64()
    );
    for f in &failures {
        eprintln!("DISAGREES: {f}");
    }
    assert!(failures.is_empty(), "{} cases disagree", failures.len());
    assert!(agreed >= ROUNDS * SERVICES * 6, "too few cases ran");
}
