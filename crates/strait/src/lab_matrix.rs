//! `strait lab policy matrix`: the planned truth table of the lab's
//! NetworkPolicies against one probed with real connections between its
//! pods; and `strait lab serve`, the server those pods run.
//!
//! The planned table is the traced reading (`strait policy matrix`) of the
//! objects the lab's API server holds now. Before probing, the command
//! waits until every node's agent has applied exactly those objects: its
//! `/healthz` says, per kind, how many objects its applied state holds and
//! the newest resourceVersion among them, and the API server's lists must
//! say the same (a change the agent lacks is newer than all it has, or a
//! deletion the API server counts). No sleep stands in for that.
//!
//! Probes run from inside the source pod's network namespace, each on a
//! worker thread of a bounded pool that enters the namespace itself
//! (namespaces are per thread), to the destination pod's address. TCP: a
//! connection is allowed, a timeout denied (a policy drops). UDP: a
//! datagram answered is allowed, silence denied. A probe without an answer
//! is tried again (a loaded machine can be slow), but an answer is final:
//! retries never turn a connection that got through into a deny, nor the
//! reverse. Anything else (refused: nothing serves the port; unreachable)
//! is an error, reported and failing the command — never a verdict.
//!
//! SCTP: this kernel has no SCTP sockets (socket(2) with IPPROTO_SCTP
//! answers EPROTONOSUPPORT), so there is no SCTP server to connect to.
//! The probe is the first packet of an association instead: an SCTP INIT,
//! checksummed as RFC 9260 says, sent through a raw socket from the source
//! pod's namespace, and watched for by a raw socket in the destination
//! pod's namespace (raw sockets get every SCTP packet the kernel delivers
//! there). Arrived is allowed, not arrived denied: the INIT crossed (or
//! not) the source node's egress and the destination node's ingress
//! verdicts, which policy takes on a connection's first packet. What is
//! not tested is an answer coming back (no SCTP stack answers); with
//! `--protocols sctp` the report says so. Each probe's INIT carries its
//! own initiate tag, so an INIT is never taken for another probe's.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use strait_lab::Layout;
use strait_linux::NetNs;
use strait_model::{ClusterState, Kind, Object};
use strait_policy::{plan, Cell, Matrix, PodRef, Protocol};

use crate::cli::{LabPolicyMatrixArgs, LabServeArgs, LoopbackCells, MatrixOutput};
use crate::error::Error;
use crate::lab::{lab_error, need_root, running};
use crate::lab_client::{api_resource, LabClient};

/// Where each node's agent serves /healthz, inside the node's namespace
/// (the lab starts it there).
const AGENT_HEALTH: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10256);

/// The kinds the policy verdicts depend on: the agents must have applied
/// the API server's version of each before a probe means anything.
const POLICY_KINDS: [Kind; 4] = [
    Kind::Namespace,
    Kind::Pod,
    Kind::NetworkPolicy,
    Kind::ClusterNetworkPolicy,
];

/// SCTP's IP protocol number.
const IPPROTO_SCTP: i32 = 132;

/// What a UDP probe sends; the server answers with its `namespace/pod`.
const UDP_PROBE: &[u8] = b"strait-probe\n";

/// UDP source ports the prober uses, one per probe, in turn: a repeated
/// source port toward the same destination could meet the conntrack entry
/// of an earlier probe (30 s for UDP) and pass as a reply, whatever the
/// policy says now.
const UDP_SOURCE_PORTS: std::ops::Range<u16> = 20_000..60_000;

// ---------------------------------------------------------------------------
// The server

/// `strait lab serve`: accept TCP connections and answer UDP datagrams on
/// the given ports, with `namespace/pod` (from the lab's POD_NAMESPACE and
/// POD_NAME), until killed. UDP sockets are bound before TCP ones listen,
/// so a readiness probe on the last TCP port means everything is served.
pub fn serve(args: &LabServeArgs) -> Result<(), Error> {
    if args.tcp.is_empty() && args.udp.is_empty() {
        return Err(Error::Flag {
            flag: "--tcp/--udp",
            message: "give at least one port to serve".into(),
        });
    }
    let identity = format!(
        "{}/{}",
        std::env::var("POD_NAMESPACE").unwrap_or_default(),
        std::env::var("POD_NAME").unwrap_or_default()
    );
    let any = |port: u16| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let mut udp = Vec::new();
    for &port in &args.udp {
        let socket = UdpSocket::bind(any(port)).map_err(|e| Error::Flag {
            flag: "--udp",
            message: format!("cannot bind UDP port {port}: {e}"),
        })?;
        udp.push(socket);
    }
    let mut tcp = Vec::new();
    for &port in &args.tcp {
        let listener = TcpListener::bind(any(port)).map_err(|e| Error::Flag {
            flag: "--tcp",
            message: format!("cannot listen on TCP port {port}: {e}"),
        })?;
        tcp.push(listener);
    }
    println!(
        "{identity} serving TCP {:?} and UDP {:?}",
        args.tcp, args.udp
    );
    let mut threads = Vec::new();
    for socket in udp {
        let answer = identity.clone().into_bytes();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            loop {
                match socket.recv_from(&mut buf) {
                    Ok((_, peer)) => {
                        // A lost answer is a probe tried again, nothing more.
                        let _ = socket.send_to(&answer, peer);
                    }
                    Err(e) => {
                        tracing::warn!("UDP receive: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }));
    }
    for listener in tcp {
        let answer = identity.clone().into_bytes();
        threads.push(std::thread::spawn(move || loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = stream.write_all(&answer);
                }
                Err(e) => {
                    // Out of descriptors, a connection reset before
                    // accept: the next one is served.
                    tracing::warn!("TCP accept: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Waiting for the agents

/// Per kind: how many objects, and the newest resourceVersion among them.
type Fingerprint = BTreeMap<Kind, (u64, String)>;

fn fingerprint(lists: &BTreeMap<Kind, Vec<Value>>) -> Fingerprint {
    lists
        .iter()
        .map(|(kind, items)| {
            let newest = items
                .iter()
                .filter_map(|o| {
                    o["metadata"]["resourceVersion"]
                        .as_str()?
                        .parse::<u64>()
                        .ok()
                })
                .max()
                .map(|v| v.to_string())
                .unwrap_or_default();
            (*kind, (items.len() as u64, newest))
        })
        .collect()
}

/// The agent's `appliedObjects` for the kinds it watches; `None` when it
/// cannot say (an agent older than this field).
fn agent_fingerprint(health: &Value) -> Option<Fingerprint> {
    let applied = health.get("appliedObjects")?.as_object()?;
    Some(
        POLICY_KINDS
            .iter()
            .filter_map(|kind| {
                let entry = applied.get(kind.as_str())?;
                Some((
                    *kind,
                    (
                        entry["count"].as_u64()?,
                        entry["newestResourceVersion"].as_str()?.to_owned(),
                    ),
                ))
            })
            .collect(),
    )
}

/// `GET /healthz` of the agent in node namespace `ns`: its JSON body.
fn agent_health(ns: &str) -> Result<Value, String> {
    let netns = NetNs::open(format!("/run/netns/{ns}")).map_err(|e| e.to_string())?;
    netns
        .run(|| -> Result<Value, String> {
            let mut s = TcpStream::connect_timeout(&AGENT_HEALTH, Duration::from_millis(500))
                .map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut answer = Vec::new();
            s.take(1 << 20)
                .read_to_end(&mut answer)
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&answer);
            let body = text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b)
                .ok_or("not an HTTP answer")?;
            serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))
        })
        .map_err(|e| e.to_string())?
}

/// Until every node's agent has applied what the API server holds now (of
/// the kinds it watches among [`POLICY_KINDS`]); the objects, read in the
/// round that agreed.
fn wait_for_agents(
    layout: &Layout,
    nodes: usize,
    client: &LabClient,
    timeout: Duration,
) -> Result<BTreeMap<Kind, Vec<Value>>, Error> {
    let lab = &layout.name;
    let started = Instant::now();
    loop {
        let mut lists = BTreeMap::new();
        for kind in POLICY_KINDS.iter().chain([&Kind::Node]) {
            let items = client.list(*kind, None).map_err(|e| {
                lab_error(
                    lab,
                    format!("list {}: {}", api_resource(*kind).plural, e.message),
                )
            })?;
            lists.insert(*kind, items);
        }
        let wanted = fingerprint(&lists);
        let mut behind = Vec::new();
        for i in 0..nodes {
            let ns = layout.node_ns(i);
            match agent_health(&ns) {
                Err(e) => behind.push(format!("node {}: /healthz: {e}", i + 1)),
                Ok(health) => match agent_fingerprint(&health) {
                    None => {
                        return Err(lab_error(
                            lab,
                            format!(
                                "node {}'s agent does not say what it applied (no appliedObjects in /healthz): restart the lab with this strait",
                                i + 1
                            ),
                        ))
                    }
                    Some(has) => {
                        for (kind, applied) in &has {
                            let want = wanted.get(kind).cloned().unwrap_or_default();
                            if *applied != want {
                                behind.push(format!(
                                    "node {}: {kind} {} object(s) up to resourceVersion {:?} applied, the API server has {} up to {:?}",
                                    i + 1,
                                    applied.0,
                                    applied.1,
                                    want.0,
                                    want.1
                                ));
                            }
                        }
                    }
                },
            }
        }
        if behind.is_empty() {
            tracing::info!(
                waited_ms = started.elapsed().as_millis() as u64,
                "every agent applied the API server's objects"
            );
            return Ok(lists);
        }
        if started.elapsed() > timeout {
            return Err(lab_error(
                lab,
                format!(
                    "the agents did not apply the current objects within {}s: {}",
                    timeout.as_secs(),
                    behind.join("; ")
                ),
            ));
        }
        // Polling a condition with a deadline: the agents apply in
        // milliseconds; this only bounds how often they are asked.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cluster state of the API server's lists, admitted as the agents
/// admit it; an object refused is said and left out.
fn state_of(lists: BTreeMap<Kind, Vec<Value>>) -> Result<ClusterState, Error> {
    let mut objects: Vec<(Object, Option<strait_model::Origin>)> = Vec::new();
    for (kind, items) in lists {
        for item in items {
            match Object::admit_json(kind, &item) {
                Ok(o) => objects.push((o, None)),
                Err((field, why)) => tracing::warn!(
                    "{kind} {}/{}: {field}: {why}; left out of the planned matrix",
                    item["metadata"]["namespace"].as_str().unwrap_or_default(),
                    item["metadata"]["name"].as_str().unwrap_or_default()
                ),
            }
        }
    }
    Ok(ClusterState::from_objects(objects)?)
}

// ---------------------------------------------------------------------------
// Probing

/// What one attempt saw.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Attempt {
    /// Connected (TCP) or answered (UDP): the policy let it through.
    Answered,
    /// Nothing came back in time: what a policy's drop looks like.
    Silent,
    /// Anything else: no verdict.
    Failed(String),
}

/// One probe to run.
#[derive(Clone, Debug)]
struct Probe {
    from: usize,
    to: usize,
    port: u16,
    protocol: Protocol,
    /// The UDP or SCTP source port this probe uses.
    source_port: u16,
    /// The initiate tag of an SCTP probe's INIT: its number in the run
    /// (from 1: a tag is never 0).
    tag: u32,
}

/// A probe's result: allowed or denied, or an error.
type Verdict = Result<bool, String>;

struct Target {
    pod: PodRef,
    /// `/run/netns/...` of the pod, when the lab runs it.
    netns: Option<String>,
    address: Option<IpAddr>,
}

fn tcp_attempt(to: SocketAddr, expected: &str, timeout: Duration) -> Attempt {
    match TcpStream::connect_timeout(&to, timeout) {
        Ok(mut s) => {
            // Connected is allowed; the server's name, when it comes,
            // proves the right pod answered.
            let _ = s.set_read_timeout(Some(timeout));
            let mut buf = [0u8; 256];
            match s.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let who = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
                    if who == expected {
                        Attempt::Answered
                    } else {
                        Attempt::Failed(format!("{to} answered as {who:?}, not {expected}"))
                    }
                }
                _ => Attempt::Answered,
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            Attempt::Silent
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Attempt::Failed(format!(
            "TCP {to} refused: nothing serves the port (strait lab serve --tcp)"
        )),
        Err(e) => Attempt::Failed(format!("TCP {to}: {e}")),
    }
}

fn udp_attempt(to: SocketAddr, source_port: u16, expected: &str, timeout: Duration) -> Attempt {
    // A fixed source port (see UDP_SOURCE_PORTS); taken (another program
    // in the pod holds it): the kernel picks one.
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), source_port);
    let socket = match UdpSocket::bind(local)
        .or_else(|_| UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)))
    {
        Ok(s) => s,
        Err(e) => return Attempt::Failed(format!("UDP socket: {e}")),
    };
    if let Err(e) = socket.connect(to) {
        return Attempt::Failed(format!("UDP {to}: {e}"));
    }
    // The datagram again every quarter of the timeout: one lost to a
    // busy server or queue is not a deny.
    let resend = (timeout / 4).max(Duration::from_millis(10));
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 256];
    loop {
        if let Err(e) = socket.send(UDP_PROBE) {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                return Attempt::Failed(format!(
                    "UDP {to} refused: nothing serves the port (strait lab serve --udp)"
                ));
            }
            return Attempt::Failed(format!("UDP {to}: {e}"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Attempt::Silent;
        }
        let _ = socket.set_read_timeout(Some(resend.min(left)));
        match socket.recv(&mut buf) {
            Ok(n) => {
                let who = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
                return if who == expected {
                    Attempt::Answered
                } else {
                    Attempt::Failed(format!("{to} answered as {who:?}, not {expected}"))
                };
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                if Instant::now() >= deadline {
                    return Attempt::Silent;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Attempt::Failed(format!(
                    "UDP {to} refused: nothing serves the port (strait lab serve --udp)"
                ))
            }
            Err(e) => return Attempt::Failed(format!("UDP {to}: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------
// SCTP: an INIT sent raw, watched for raw

/// CRC32c (Castagnoli), as SCTP checksums its packets (RFC 9260
/// appendix A): reflected polynomial 0x82F63B78, initial and final
/// inversion.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SCTP packet of one INIT chunk from `source` to `destination` port
/// with initiate tag `tag`: the common header (verification tag 0, as an
/// INIT has), the chunk (a_rwnd 64 KiB, 1 stream each way, initial TSN =
/// tag), and the CRC32c over all of it, stored as Linux stores it (the
/// value's little-endian bytes).
fn sctp_init(source: u16, destination: u16, tag: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(32);
    p.extend_from_slice(&source.to_be_bytes());
    p.extend_from_slice(&destination.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes()); // verification tag
    p.extend_from_slice(&0u32.to_be_bytes()); // checksum, filled below
    p.push(1); // chunk type: INIT
    p.push(0); // flags
    p.extend_from_slice(&20u16.to_be_bytes()); // chunk length
    p.extend_from_slice(&tag.to_be_bytes()); // initiate tag
    p.extend_from_slice(&65_536u32.to_be_bytes()); // a_rwnd
    p.extend_from_slice(&1u16.to_be_bytes()); // outbound streams
    p.extend_from_slice(&1u16.to_be_bytes()); // inbound streams
    p.extend_from_slice(&tag.to_be_bytes()); // initial TSN
    let crc = crc32c(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

/// What an INIT that arrived says: from which address, to which port,
/// with which initiate tag. `packet` is what a raw IPv4 socket reads (the
/// IP header first).
fn read_init(packet: &[u8]) -> Option<(Ipv4Addr, u16, u32)> {
    let ihl = usize::from(*packet.first()? & 0x0f) * 4;
    if packet.get(9) != Some(&(IPPROTO_SCTP as u8)) || ihl < 20 {
        return None;
    }
    let source = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let sctp = packet.get(ihl..)?;
    if sctp.len() < 32 || sctp[12] != 1 {
        return None;
    }
    let port = u16::from_be_bytes([sctp[2], sctp[3]]);
    let tag = u32::from_be_bytes([sctp[16], sctp[17], sctp[18], sctp[19]]);
    Some((source, port, tag))
}

/// INITs seen in the destination pods: initiate tag → (namespace of the
/// pod that saw it, source address, destination port).
#[derive(Default)]
struct Arrivals {
    seen: Mutex<BTreeMap<u32, (usize, Ipv4Addr, u16)>>,
    changed: std::sync::Condvar,
}

fn raw_sctp_socket() -> std::io::Result<socket2::Socket> {
    socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::from(libc::SOCK_RAW),
        Some(socket2::Protocol::from(IPPROTO_SCTP)),
    )
}

/// Watch for INITs in the namespace of every target with one (on a thread
/// each, inside it) until `stop`; returns once every watcher's socket is
/// open, so no probe is sent before it can be seen.
fn watch_inits<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    targets: &'s [Target],
    arrivals: &'s Arrivals,
    stop: &'s std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut watching = 0;
    for (i, target) in targets.iter().enumerate() {
        let Some(path) = target.netns.clone() else {
            continue;
        };
        watching += 1;
        let ready = ready_tx.clone();
        scope.spawn(move || {
            let opened = NetNs::open(&path)
                .map_err(|e| e.to_string())
                .and_then(|ns| {
                    // This thread stays in the pod's namespace until it ends.
                    let guard = ns.enter().map_err(|e| e.to_string())?;
                    let socket = raw_sctp_socket().map_err(|e| format!("raw SCTP socket: {e}"))?;
                    socket
                        .set_read_timeout(Some(Duration::from_millis(100)))
                        .map_err(|e| e.to_string())?;
                    Ok((guard, socket))
                });
            let (_guard, socket) = match opened {
                Ok(o) => {
                    let _ = ready.send(Ok(()));
                    o
                }
                Err(e) => {
                    let _ = ready.send(Err(format!("{}: {e}", target.pod)));
                    return;
                }
            };
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Ok(n) = (&socket).read(&mut buf) else {
                    continue;
                };
                if let Some((from, port, tag)) = read_init(&buf[..n]) {
                    if let Ok(mut seen) = arrivals.seen.lock() {
                        seen.insert(tag, (i, from, port));
                    }
                    arrivals.changed.notify_all();
                }
            }
        });
    }
    drop(ready_tx);
    for _ in 0..watching {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("an SCTP watcher ended at start".into()),
        }
    }
    Ok(())
}

/// Send the probe's INIT from the calling thread (inside the source pod)
/// until it is seen where it should arrive, or `timeout` passes.
fn sctp_attempt(
    probe: &Probe,
    from: IpAddr,
    to: SocketAddr,
    arrivals: &Arrivals,
    timeout: Duration,
) -> Attempt {
    let socket = match raw_sctp_socket() {
        Ok(s) => s,
        Err(e) => return Attempt::Failed(format!("raw SCTP socket: {e}")),
    };
    let packet = sctp_init(probe.source_port, probe.port, probe.tag);
    let address = socket2::SockAddr::from(SocketAddr::new(to.ip(), 0));
    let resend = (timeout / 4).max(Duration::from_millis(10));
    let deadline = Instant::now() + timeout;
    let Ok(mut seen) = arrivals.seen.lock() else {
        return Attempt::Failed("the SCTP watchers failed".into());
    };
    loop {
        if let Err(e) = socket.send_to(&packet, &address) {
            return Attempt::Failed(format!("SCTP INIT to {to}: {e}"));
        }
        let next = (Instant::now() + resend).min(deadline);
        while Instant::now() < next {
            if let Some(&(at, source, port)) = seen.get(&probe.tag) {
                return if at == probe.to && IpAddr::V4(source) == from && port == probe.port {
                    Attempt::Answered
                } else {
                    Attempt::Failed(format!(
                        "the INIT to {to} arrived elsewhere (target {at}, from {source}, port {port})"
                    ))
                };
            }
            let wait = next.saturating_duration_since(Instant::now());
            seen = match arrivals.changed.wait_timeout(seen, wait) {
                Ok((guard, _)) => guard,
                Err(_) => return Attempt::Failed("the SCTP watchers failed".into()),
            };
        }
        if Instant::now() >= deadline {
            return Attempt::Silent;
        }
    }
}

/// Run one probe inside the source pod's namespace (the calling thread
/// enters it and leaves it again), up to `attempts` times until answered.
fn run_probe(
    probe: &Probe,
    targets: &[Target],
    arrivals: &Arrivals,
    namespaces: &mut BTreeMap<String, NetNs>,
    timeout: Duration,
    attempts: u32,
) -> Verdict {
    let from = &targets[probe.from];
    let to = &targets[probe.to];
    let Some(path) = &from.netns else {
        return Err(format!("{} does not run in the lab", from.pod));
    };
    let Some(address) = to.address else {
        return Err(format!("{} has no address", to.pod));
    };
    if !namespaces.contains_key(path) {
        let ns = NetNs::open(path).map_err(|e| e.to_string())?;
        namespaces.insert(path.clone(), ns);
    }
    let ns = &namespaces[path];
    let _inside = ns.enter().map_err(|e| e.to_string())?;
    let target = SocketAddr::new(address, probe.port);
    let expected = to.pod.to_string();
    let mut last = Attempt::Silent;
    for _ in 0..attempts {
        last = match probe.protocol {
            Protocol::Tcp => tcp_attempt(target, &expected, timeout),
            Protocol::Udp => udp_attempt(target, probe.source_port, &expected, timeout),
            Protocol::Sctp => match from.address {
                Some(source) => sctp_attempt(probe, source, target, arrivals, timeout),
                None => return Err(format!("{} has no address", from.pod)),
            },
        };
        if last == Attempt::Answered {
            return Ok(true);
        }
    }
    match last {
        Attempt::Silent => Ok(false),
        Attempt::Failed(e) => Err(e),
        Attempt::Answered => Ok(true),
    }
}

/// Run every probe on `parallel` threads; verdicts in probe order.
fn run_probes(
    probes: &[Probe],
    targets: &[Target],
    parallel: usize,
    timeout: Duration,
    attempts: u32,
) -> Vec<Verdict> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Verdict>>> = Mutex::new(vec![None; probes.len()]);
    let arrivals = Arrivals::default();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        if probes.iter().any(|p| p.protocol == Protocol::Sctp) {
            if let Err(e) = watch_inits(scope, targets, &arrivals, &stop) {
                stop.store(true, Ordering::Relaxed);
                if let Ok(mut r) = results.lock() {
                    for (i, p) in probes.iter().enumerate() {
                        if p.protocol == Protocol::Sctp {
                            r[i] = Some(Err(format!("cannot watch for SCTP: {e}")));
                        }
                    }
                }
            }
        }
        let workers: Vec<_> = (0..parallel.min(probes.len()).max(1))
            .map(|_| {
                scope.spawn(|| {
                    // Each worker is a thread of its own: entering a pod's
                    // namespace moves this thread only.
                    let mut namespaces = BTreeMap::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(probe) = probes.get(i) else {
                            break;
                        };
                        let done = results.lock().map(|r| r[i].is_some()).unwrap_or(false);
                        if done {
                            continue;
                        }
                        let verdict = run_probe(
                            probe,
                            targets,
                            &arrivals,
                            &mut namespaces,
                            timeout,
                            attempts,
                        );
                        if let Ok(mut r) = results.lock() {
                            r[i] = Some(verdict);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        stop.store(true, Ordering::Relaxed);
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.unwrap_or_else(|| Err("the probe did not run".into())))
        .collect()
}

/// The first of `count` UDP source ports for this run: the lab keeps a
/// counter (`probe-ports` in its directory, under a lock), so that runs one
/// after another never reuse a port within the 40,000 of the range.
fn udp_source_ports(layout: &Layout, count: usize) -> u16 {
    use nix::fcntl::{Flock, FlockArg};
    let span = (UDP_SOURCE_PORTS.end - UDP_SOURCE_PORTS.start) as usize;
    let path = layout.dir.join("probe-ports");
    let taken = (|| -> Option<usize> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ok()?;
        let mut file = Flock::lock(file, FlockArg::LockExclusive).ok()?;
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        let first = text.trim().parse::<usize>().unwrap_or(0) % span;
        let after = (first + count) % span;
        use std::io::Seek;
        file.set_len(0).ok()?;
        file.rewind().ok()?;
        file.write_all(after.to_string().as_bytes()).ok()?;
        Some(first)
    })();
    // Without the counter: a place from the clock, as good as random.
    let first = taken.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as usize % span)
            .unwrap_or(0)
    });
    UDP_SOURCE_PORTS.start + first as u16
}

fn port_at(first: u16, i: usize) -> u16 {
    let span = (UDP_SOURCE_PORTS.end - UDP_SOURCE_PORTS.start) as usize;
    let offset = (first - UDP_SOURCE_PORTS.start) as usize;
    UDP_SOURCE_PORTS.start + ((offset + i) % span) as u16
}

// ---------------------------------------------------------------------------
// The command

/// A probe without a verdict, and why.
#[derive(Serialize)]
struct Unanswered {
    from: String,
    to: String,
    port: u16,
    protocol: Protocol,
    error: String,
}

/// One cell where planned and probed differ.
#[derive(Serialize)]
struct Differs {
    from: String,
    to: String,
    port: u16,
    protocol: Protocol,
    planned: bool,
    probed: bool,
}

impl std::fmt::Display for Differs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = |b: bool| if b { "allowed" } else { "denied" };
        write!(
            f,
            "{} -> {} {}/{}: planned {}, probed {}",
            self.from,
            self.to,
            self.protocol.as_str(),
            self.port,
            word(self.planned),
            word(self.probed)
        )
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    planned: Vec<Cell>,
    probed: Vec<Cell>,
    differences: Vec<Differs>,
    loopback_differences: Vec<Differs>,
    errors: Vec<Unanswered>,
    sync_seconds: f64,
    probe_seconds: f64,
    probes: usize,
}

pub fn matrix(args: &LabPolicyMatrixArgs) -> Result<(), Error> {
    let lab = &args.lab.name;
    need_root(lab)?;
    let layout = running(lab)?;
    let config = layout.read_config()?;
    let client = LabClient::connect(&layout)?;

    let sync_started = Instant::now();
    let lists = wait_for_agents(
        &layout,
        config.nodes,
        &client,
        Duration::from_secs(args.sync_timeout),
    )?;
    let sync_seconds = sync_started.elapsed().as_secs_f64();
    let state = state_of(lists)?;

    // Planned over the whole cluster (policies may name any pod); shown
    // for the pods of the chosen namespaces.
    let chosen = |namespace: &str| {
        if args.namespaces.is_empty() {
            namespace != "kube-system"
        } else {
            args.namespaces.iter().any(|n| n == namespace)
        }
    };
    let mut planned = plan::traced_matrix(&state, &args.ports, &args.protocols)?;
    planned.pods.retain(|p| chosen(&p.namespace));
    let names: BTreeSet<String> = planned.pods.iter().map(ToString::to_string).collect();
    planned
        .cells
        .retain(|c| names.contains(&c.from) && names.contains(&c.to));
    if planned.pods.is_empty() {
        tracing::warn!("no pod to probe: the matrix is empty");
    }

    let lab_state = layout.read_state();
    let targets: Vec<Target> = planned
        .pods
        .iter()
        .map(|p| {
            // The controller's record, keyed `namespace/name`.
            let record = lab_state.pods.get(&format!("{}/{}", p.namespace, p.name));
            let netns = record
                .map(|r| r.netns.clone())
                .filter(|ns| layout.owns_netns(ns))
                .map(|ns| format!("/run/netns/{ns}"));
            let address = state
                .pods
                .get(&p.namespace, &p.name)
                .and_then(|pod| pod.pod_ip())
                .and_then(|ip| ip.parse().ok());
            Target {
                pod: p.clone(),
                netns,
                address,
            }
        })
        .collect();
    let index: BTreeMap<String, usize> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| (t.pod.to_string(), i))
        .collect();

    let mut probes = Vec::new();
    for (i, c) in planned.cells.iter().enumerate() {
        probes.push(Probe {
            from: index[&c.from],
            to: index[&c.to],
            port: c.port,
            protocol: c.protocol,
            source_port: 0,
            tag: u32::try_from(i + 1).unwrap_or(u32::MAX),
        });
    }
    let first_port = udp_source_ports(&layout, probes.len());
    for (i, p) in probes.iter_mut().enumerate() {
        p.source_port = port_at(first_port, i);
    }
    let probe_started = Instant::now();
    let verdicts = run_probes(
        &probes,
        &targets,
        args.parallel as usize,
        Duration::from_millis(args.probe_timeout_ms),
        args.attempts,
    );
    let probe_seconds = probe_started.elapsed().as_secs_f64();

    let mut probed = Matrix {
        pods: planned.pods.clone(),
        cells: Vec::new(),
    };
    let mut errors = Vec::new();
    for (p, verdict) in probes.iter().zip(verdicts) {
        let from = targets[p.from].pod.to_string();
        let to = targets[p.to].pod.to_string();
        match verdict {
            Ok(allowed) => probed.cells.push(Cell {
                from,
                to,
                port: p.port,
                protocol: p.protocol,
                allowed,
            }),
            Err(e) => errors.push(Unanswered {
                from,
                to,
                port: p.port,
                protocol: p.protocol,
                error: e,
            }),
        }
    }
    let probed_index: BTreeMap<(&str, &str, u16, Protocol), bool> = probed
        .cells
        .iter()
        .map(|c| {
            (
                (c.from.as_str(), c.to.as_str(), c.port, c.protocol),
                c.allowed,
            )
        })
        .collect();
    let mut differences = Vec::new();
    let mut loopback_differences = Vec::new();
    for c in &planned.cells {
        let Some(&seen) = probed_index.get(&(c.from.as_str(), c.to.as_str(), c.port, c.protocol))
        else {
            continue;
        };
        if seen != c.allowed {
            let d = Differs {
                from: c.from.clone(),
                to: c.to.clone(),
                port: c.port,
                protocol: c.protocol,
                planned: c.allowed,
                probed: seen,
            };
            if c.from == c.to && args.loopback == LoopbackCells::Ignore {
                loopback_differences.push(d);
            } else {
                differences.push(d);
            }
        }
    }

    let failing = differences.len() + errors.len();
    let report = Report {
        planned: planned.cells.clone(),
        probed: probed.cells.clone(),
        differences,
        loopback_differences,
        errors,
        sync_seconds,
        probe_seconds,
        probes: probes.len(),
    };
    let text = match args.output {
        MatrixOutput::Json => {
            let mut t =
                serde_json::to_string_pretty(&report).map_err(|e| Error::Output(e.to_string()))?;
            t.push('\n');
            t
        }
        MatrixOutput::Text => text_report(&report, &planned, &probed, args),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Output(e.to_string()))?;
    match failing {
        0 => Ok(()),
        differ => Err(Error::MatrixDiffers { differ }),
    }
}

fn text_report(
    report: &Report,
    planned: &Matrix,
    probed: &Matrix,
    args: &LabPolicyMatrixArgs,
) -> String {
    let mut out = String::new();
    out.push_str("planned (the packet tracer over each node's planned rules):\n");
    out.push_str(&planned.to_text());
    out.push_str(&format!(
        "\nprobed ({} real connections from inside the pods, up to {} attempt(s) of {} ms, {} at once, in {:.1} s; the agents had applied the API server's objects {:.2} s after the command started):\n",
        report.probes,
        args.attempts,
        args.probe_timeout_ms,
        args.parallel,
        report.probe_seconds,
        report.sync_seconds
    ));
    // Cells without a verdict (SCTP, errors) show as `?`.
    out.push_str(&probed_text(planned, probed));
    if report.differences.is_empty() {
        out.push_str("\nprobed = planned on every probed cell");
        if !report.loopback_differences.is_empty() {
            out.push_str(" but loopback ones");
        }
        out.push('\n');
    } else {
        out.push_str(&format!("\n{} cell(s) differ:\n", report.differences.len()));
        for d in &report.differences {
            out.push_str(&format!("  {d}\n"));
        }
    }
    if !report.loopback_differences.is_empty() {
        out.push_str(&format!(
            "\n{} loopback cell(s) differ, not counted (a pod's connection to its own address never leaves its network namespace, so no policy judges it; upstream's e2e ignores these cells too; --loopback compare counts them):\n",
            report.loopback_differences.len()
        ));
        for d in &report.loopback_differences {
            out.push_str(&format!("  {d}\n"));
        }
    }
    if args.protocols.contains(&Protocol::Sctp) {
        out.push_str("\nSCTP (no SCTP sockets in this kernel): a probe is an INIT sent raw from the source pod and seen arriving (or not) by a raw socket in the destination pod; no answer comes back\n");
    }
    if !report.errors.is_empty() {
        out.push_str(&format!(
            "\n{} probe(s) failed without a verdict (counted as differing):\n",
            report.errors.len()
        ));
        for e in &report.errors {
            out.push_str(&format!(
                "  {} -> {} {}/{}: {}\n",
                e.from,
                e.to,
                e.protocol.as_str(),
                e.port,
                e.error
            ));
        }
    }
    out
}

/// The probed tables, with the planned matrix's probes (so that SCTP and
/// failed cells show as `?` rather than vanish).
fn probed_text(planned: &Matrix, probed: &Matrix) -> String {
    let mut m = probed.clone();
    // Order tables as the planned ones: every (protocol, port) it has.
    let mut cells = Vec::new();
    let index: BTreeMap<(&str, &str, u16, Protocol), bool> = probed
        .cells
        .iter()
        .map(|c| {
            (
                (c.from.as_str(), c.to.as_str(), c.port, c.protocol),
                c.allowed,
            )
        })
        .collect();
    let mut placeholder_done = BTreeSet::new();
    for c in &planned.cells {
        if let Some(&allowed) = index.get(&(c.from.as_str(), c.to.as_str(), c.port, c.protocol)) {
            cells.push(Cell {
                allowed,
                ..c.clone()
            });
        } else if placeholder_done.insert((c.protocol, c.port)) {
            // Matrix::to_text makes one table per (protocol, port) it has
            // a cell for: keep the table, its cells print `?`.
            cells.push(Cell {
                from: String::new(),
                to: String::new(),
                ..c.clone()
            });
        }
    }
    m.cells = cells;
    m.to_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_castagnolis() {
        // The check value of CRC-32C (RFC 3720 B.4's parameters).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }

    #[test]
    fn an_init_reads_back_from_an_ip_packet() {
        let init = sctp_init(20_001, 80, 7);
        assert_eq!(init.len(), 32);
        // The checksum covers the packet with the field zeroed.
        let mut zeroed = init.clone();
        zeroed[8..12].fill(0);
        assert_eq!(&init[8..12], &crc32c(&zeroed).to_le_bytes());
        let mut ip = vec![
            0x45, 0, 0, 52, 0, 0, 0, 0, 64, 132, 0, 0, 10, 244, 0, 3, 10, 244, 1, 2,
        ];
        ip.extend_from_slice(&init);
        assert_eq!(read_init(&ip), Some((Ipv4Addr::new(10, 244, 0, 3), 80, 7)));
        // Another protocol, or a chunk that is no INIT: not ours.
        let mut udp = ip.clone();
        udp[9] = 17;
        assert_eq!(read_init(&udp), None);
        let mut data = ip.clone();
        data[32] = 0;
        assert_eq!(read_init(&data), None);
        assert_eq!(read_init(&ip[..30]), None);
    }

    #[test]
    fn udp_source_ports_wrap_inside_their_range() {
        assert_eq!(port_at(20_000, 0), 20_000);
        assert_eq!(port_at(59_999, 1), 20_000);
        assert_eq!(port_at(59_999, 0), 59_999);
        assert_eq!(port_at(30_000, 40_000), 30_000);
    }

    #[test]
    fn the_fingerprint_counts_and_takes_the_newest_version() {
        let mut lists = BTreeMap::new();
        lists.insert(
            Kind::NetworkPolicy,
            vec![
                serde_json::json!({"metadata": {"resourceVersion": "9"}}),
                serde_json::json!({"metadata": {"resourceVersion": "12"}}),
            ],
        );
        lists.insert(Kind::Namespace, vec![]);
        let f = fingerprint(&lists);
        assert_eq!(f[&Kind::NetworkPolicy], (2, "12".to_owned()));
        assert_eq!(f[&Kind::Namespace], (0, String::new()));
        let health = serde_json::json!({"appliedObjects": {
            "NetworkPolicy": {"count": 2, "newestResourceVersion": "12"},
            "Namespace": {"count": 0, "newestResourceVersion": ""},
            "Service": {"count": 4, "newestResourceVersion": "3"},
        }});
        let has = agent_fingerprint(&health).unwrap();
        // Only the kinds policy verdicts depend on, and only those watched.
        assert_eq!(has.len(), 2);
        assert_eq!(has[&Kind::NetworkPolicy], f[&Kind::NetworkPolicy]);
        assert!(agent_fingerprint(&serde_json::json!({"synced": true})).is_none());
    }

    #[test]
    fn a_silent_tcp_port_is_a_deny_and_a_refused_one_an_error() {
        // A listener that never accepts still completes the handshake:
        // connected, allowed.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(
            tcp_attempt(addr, "x/a", Duration::from_millis(200)),
            Attempt::Answered
        );
        drop(listener);
        // Nothing listens: refused is no verdict.
        assert!(matches!(
            tcp_attempt(addr, "x/a", Duration::from_millis(200)),
            Attempt::Failed(_)
        ));
    }

    #[test]
    fn udp_answers_name_who_answered() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (_, peer) = server.recv_from(&mut buf).unwrap();
            server.send_to(b"x/b", peer).unwrap();
            let (_, peer) = server.recv_from(&mut buf).unwrap();
            server.send_to(b"y/c", peer).unwrap();
        });
        assert_eq!(
            udp_attempt(addr, 0, "x/b", Duration::from_secs(5)),
            Attempt::Answered
        );
        assert!(matches!(
            udp_attempt(addr, 0, "x/b", Duration::from_secs(5)),
            Attempt::Failed(e) if e.contains("y/c")
        ));
        t.join().unwrap();
    }
}
