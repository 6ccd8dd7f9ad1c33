//! The server: UDP and TCP on one address. Cluster names are answered on
//! the receiving thread from the current zone (a pointer swap away from the
//! newest); forwarded names go to worker threads so that a slow upstream
//! never holds up the cluster's own answers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::answer::{answer, response, Outcome};
use crate::fast::{parse, rotate_addresses, AnswerCache, Stored};
use crate::forward::Forwarder;
use crate::metrics::DnsMetrics;
use crate::zone::Zone;

/// What we advertise as our EDNS UDP payload size (the DNS flag day value).
const OUR_PAYLOAD: u16 = 1232;
/// How many times `--listen IP:0` looks for a port free over UDP and TCP.
const BIND_ATTEMPTS: usize = 64;

/// What a TCP client may hold. A whole message must arrive within
/// `message_timeout` of its first byte (a client trickling bytes cannot
/// keep a connection for long), a connection with no message under way
/// closes after `idle_timeout`, and when `max_connections` are open a new
/// client evicts an idle connection first, then the one whose message has
/// been arriving longest: a real client is served even under a slow-loris
/// attack.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub message_timeout: Duration,
}

impl Default for TcpLimits {
    /// CoreDNS's (miekg/dns) values: 8 s idle, 2 s to read a message.
    fn default() -> Self {
        TcpLimits {
            max_connections: 256,
            idle_timeout: Duration::from_secs(8),
            message_timeout: Duration::from_secs(2),
        }
    }
}

/// The zone in use, with the answers already given from it; both are
/// replaced whole when the cluster changes.
#[derive(Clone)]
pub struct SharedZone(Arc<RwLock<(Arc<Zone>, Arc<AnswerCache>)>>);

impl SharedZone {
    pub fn new(zone: Zone) -> SharedZone {
        SharedZone(Arc::new(RwLock::new((
            Arc::new(zone),
            Arc::new(AnswerCache::default()),
        ))))
    }

    pub fn get(&self) -> Arc<Zone> {
        self.current().0
    }

    fn current(&self) -> (Arc<Zone>, Arc<AnswerCache>) {
        self.0
            .read()
            .map(|z| z.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn swap(&self, zone: Zone) {
        let mut guard = self.0.write().unwrap_or_else(|p| p.into_inner());
        *guard = (Arc::new(zone), Arc::new(AnswerCache::default()));
    }
}

struct Shared {
    zone: SharedZone,
    forwarder: Forwarder,
    metrics: Arc<DnsMetrics>,
}

/// A running server; stops when dropped.
pub struct DnsServer {
    pub udp_address: SocketAddr,
    pub tcp_address: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

struct Job {
    query: Message,
    /// An answer that ends in a CNAME out of the cluster, and its target:
    /// the upstream's answer for the target completes it.
    chase: Option<(Message, Name)>,
    client: SocketAddr,
    limit: usize,
    started: Instant,
}

/// A UDP socket and a TCP listener on the same port. For port 0 the port
/// UDP got may be taken over TCP: try again (holding the ports already
/// tried, so that the kernel offers others), a bounded number of times.
fn bind_both(listen: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut tried = Vec::new();
    loop {
        let udp = UdpSocket::bind(listen)?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(listen.ip(), port)) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e)
                if listen.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && tried.len() + 1 < BIND_ATTEMPTS =>
            {
                tried.push(udp);
            }
            Err(e) => return Err(e),
        }
    }
}

impl DnsServer {
    pub fn start(
        listen: SocketAddr,
        zone: SharedZone,
        forwarder: Forwarder,
        metrics: Arc<DnsMetrics>,
    ) -> std::io::Result<DnsServer> {
        DnsServer::start_with(listen, zone, forwarder, metrics, TcpLimits::default())
    }

    /// [`DnsServer::start`] with other TCP limits (tests use small ones).
    pub fn start_with(
        listen: SocketAddr,
        zone: SharedZone,
        forwarder: Forwarder,
        metrics: Arc<DnsMetrics>,
        limits: TcpLimits,
    ) -> std::io::Result<DnsServer> {
        let (udp, tcp) = bind_both(listen)?;
        let udp_address = udp.local_addr()?;
        let tcp_address = tcp.local_addr()?;
        udp.set_read_timeout(Some(Duration::from_millis(200)))?;
        tcp.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            zone,
            forwarder,
            metrics,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (jobs_tx, jobs_rx) = sync_channel::<Job>(1024);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let mut threads = Vec::new();
        for _ in 0..2 {
            let (socket, shared, rx, stop) = (
                udp.try_clone()?,
                shared.clone(),
                jobs_rx.clone(),
                stop.clone(),
            );
            threads.push(std::thread::spawn(move || {
                forward_worker(&socket, &shared, &rx, &stop)
            }));
        }
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                udp_loop(&udp, &shared, &jobs_tx, &stop)
            }));
        }
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                tcp_loop(&tcp, &shared, &stop, limits)
            }));
        }
        Ok(DnsServer {
            udp_address,
            tcp_address,
            stop,
            threads,
        })
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A FORMERR for a packet that has at least a header; nothing otherwise.
fn formerr(packet: &[u8]) -> Option<Vec<u8>> {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None; // not even a header, or a response: drop it
    }
    let mut out = packet[..12].to_vec();
    out[2] = (out[2] & 0x79) | 0x80; // QR, keep opcode and RD
    out[3] = 0x80 | 1; // RA, FORMERR
    out[4..12].fill(0);
    Some(out)
}

/// The size an answer over UDP may have for this query.
pub fn udp_limit(query: &Message) -> usize {
    match &query.edns {
        Some(edns) => usize::from(edns.max_payload().clamp(512, 4096)),
        None => 512,
    }
}

/// Encode, with our OPT if the query had one, truncated (TC, no records)
/// when it does not fit in `limit`.
pub fn encode(query: &Message, mut m: Message, limit: usize) -> Option<Vec<u8>> {
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(OUR_PAYLOAD);
        m.edns = Some(edns);
    }
    let turn = usize::from(query.metadata.id);
    let mut bytes = m.to_vec().ok()?;
    if bytes.len() <= limit {
        rotate_addresses(&mut bytes, turn);
        return Some(bytes);
    }
    // Additional records are a convenience: when only they do not fit,
    // they go and TC stays clear (RFC 2181 §9; CoreDNS does the same), so
    // that an SRV answer is not retried over TCP for its addresses.
    if !m.additionals.is_empty() {
        m.additionals.clear();
        let mut bytes = m.to_vec().ok()?;
        if bytes.len() <= limit {
            rotate_addresses(&mut bytes, turn);
            return Some(bytes);
        }
    }
    m.answers.clear();
    m.authorities.clear();
    m.additionals.clear();
    m.metadata.truncation = true;
    m.to_vec().ok()
}

fn record(shared: &Shared, query: &Message, m: &Message, started: Instant) {
    let qtype = query
        .queries
        .first()
        .map(|q| q.query_type().to_string())
        .unwrap_or_default();
    shared.metrics.answered(
        &qtype,
        &m.metadata.response_code.to_string(),
        started.elapsed().as_secs_f64(),
    );
}

/// What to do with one packet.
pub enum Decision {
    /// Answer with this message.
    Reply(Message, Message),
    /// Not the cluster's name: forward it.
    Forward(Message),
    /// The query, our answer so far (ending in a CNAME out of the cluster)
    /// and the CNAME's target, to ask upstream for (recursion desired).
    Chase(Message, Message, Name),
    /// Bytes to send as they are (FORMERR for a broken query).
    Raw(Vec<u8>),
    /// Nothing at all (not even a header, or not a query).
    Drop,
}

/// Parse `packet` and decide, from `zone` alone. Pure, and total: any bytes
/// give a decision, never a panic.
pub fn decide(zone: &Zone, packet: &[u8]) -> Decision {
    let query = match Message::from_vec(packet) {
        Ok(q) if q.metadata.message_type == hickory_proto::op::MessageType::Query => q,
        Ok(_) => return Decision::Drop,
        Err(_) => return formerr(packet).map_or(Decision::Drop, Decision::Raw),
    };
    match answer(zone, &query) {
        Outcome::Answer(m) => Decision::Reply(query, m),
        Outcome::Forward => Decision::Forward(query),
        Outcome::Chase(m, target) => Decision::Chase(query, m, target),
    }
}

fn without_edns(m: &Message) -> Message {
    let mut m = m.clone();
    m.edns = None;
    m
}

/// An answer the fast path may keep: not one ending in a CNAME whose
/// target was (or, with RD, would be) chased upstream.
fn storable(m: &Message) -> bool {
    m.answers
        .last()
        .is_none_or(|r| r.record_type() != RecordType::CNAME)
}

/// Complete `partial` (ending in a CNAME to `target`) with the upstream's
/// answer for the target, as CoreDNS does for an ExternalName Service;
/// without an answer from upstream the CNAME alone stands.
fn chase(shared: &Shared, query: &Message, mut partial: Message, target: Name) -> Message {
    let Some(q) = query.queries.first() else {
        return partial;
    };
    if shared.forwarder.has_no_upstreams() {
        return partial;
    }
    let mut ask = Message::query();
    ask.metadata.recursion_desired = true;
    ask.add_query(Query::query(target, q.query_type()));
    let upstream = shared.forwarder.resolve(&ask, &shared.metrics);
    if upstream.metadata.response_code == ResponseCode::NoError {
        partial.answers.extend(upstream.answers);
    }
    partial
}

/// What the receiving thread does with a packet.
enum Handled {
    Answer(Message, Message),
    Forward(Message),
    Chase(Message, Message, Name),
    Raw(Vec<u8>),
    Nothing,
}

fn handle_with(zone: &Zone, shared: &Shared, packet: &[u8]) -> Handled {
    match decide(zone, packet) {
        Decision::Reply(q, m) => Handled::Answer(q, m),
        Decision::Forward(q) if shared.forwarder.has_no_upstreams() => {
            let m = response(&q, ResponseCode::ServFail);
            Handled::Answer(q, m)
        }
        Decision::Forward(q) => Handled::Forward(q),
        Decision::Chase(q, m, _) if shared.forwarder.has_no_upstreams() => Handled::Answer(q, m),
        Decision::Chase(q, m, target) => Handled::Chase(q, m, target),
        Decision::Raw(bytes) => Handled::Raw(bytes),
        Decision::Drop => Handled::Nothing,
    }
}

fn udp_loop(socket: &UdpSocket, shared: &Shared, jobs: &SyncSender<Job>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let (n, client) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let started = Instant::now();
        let packet = &buf[..n];
        let quick = parse(packet);
        let (zone, cache) = shared.zone.current();
        if let Some(q) = &quick {
            if let Some(bytes) = cache.get(q.question).and_then(|s| s.answer(q)) {
                let _ = socket.send_to(&bytes, client);
                shared.metrics.answered_fast(
                    q.qtype,
                    bytes[3] & 0x0f,
                    started.elapsed().as_secs_f64(),
                );
                continue;
            }
        }
        let (query, chase) = match handle_with(&zone, shared, packet) {
            Handled::Answer(query, m) => {
                record(shared, &query, &m, started);
                // Keep plain answers for the next identical question.
                if let Some(q) = quick.as_ref().filter(|_| storable(&m)) {
                    if let Ok(wire) = without_edns(&m).to_vec() {
                        if let Some(stored) = Stored::from_wire(&wire, q.question.len()) {
                            cache.put(q.question, stored);
                        }
                    }
                }
                if let Some(bytes) = encode(&query, m, udp_limit(&query)) {
                    let _ = socket.send_to(&bytes, client);
                }
                continue;
            }
            Handled::Forward(query) => (query, None),
            Handled::Chase(query, m, target) => (query, Some((m, target))),
            Handled::Raw(bytes) => {
                let _ = socket.send_to(&bytes, client);
                continue;
            }
            Handled::Nothing => continue,
        };
        let limit = udp_limit(&query);
        // A full queue means the upstreams are too slow: SERVFAIL now.
        if let Err(std::sync::mpsc::TrySendError::Full(job)) = jobs.try_send(Job {
            query,
            chase,
            client,
            limit,
            started,
        }) {
            let m = response(&job.query, ResponseCode::ServFail);
            record(shared, &job.query, &m, started);
            if let Some(bytes) = encode(&job.query, m, limit) {
                let _ = socket.send_to(&bytes, client);
            }
        }
    }
}

fn forward_worker(
    socket: &UdpSocket,
    shared: &Shared,
    jobs: &Mutex<Receiver<Job>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(job) => job,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(_) => return,
            }
        };
        let m = match job.chase {
            Some((partial, target)) => chase(shared, &job.query, partial, target),
            None => shared.forwarder.resolve(&job.query, &shared.metrics),
        };
        record(shared, &job.query, &m, job.started);
        if let Some(bytes) = encode(&job.query, m, job.limit) {
            let _ = socket.send_to(&bytes, job.client);
        }
    }
}

/// Where a TCP connection is: what eviction looks at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a message to begin.
    Idle,
    /// A message has begun and is not complete.
    Reading,
    /// Answering (perhaps waiting for an upstream): never evicted.
    Answering,
}

struct Connection {
    /// A handle on the same socket, to shut it down when evicted.
    stream: TcpStream,
    phase: Phase,
    since: Instant,
}

/// The open TCP connections, by id.
struct Connections {
    limits: TcpLimits,
    open: Mutex<HashMap<u64, Connection>>,
    next: AtomicU64,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Connection>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make room for `stream` (evicting if full) and register it; `None`
    /// when every open connection is busy answering.
    fn admit(&self, stream: &TcpStream) -> Option<u64> {
        let mut open = self.lock();
        if open.len() >= self.limits.max_connections {
            // Idle ones first, longest idle first; then the message that
            // has been arriving longest (a trickling client).
            let victim = open
                .iter()
                .filter(|(_, c)| c.phase != Phase::Answering)
                .min_by_key(|(_, c)| (c.phase == Phase::Reading, c.since))
                .map(|(id, _)| *id)?;
            if let Some(c) = open.remove(&victim) {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
        }
        let handle = stream.try_clone().ok()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        open.insert(
            id,
            Connection {
                stream: handle,
                phase: Phase::Idle,
                since: Instant::now(),
            },
        );
        Some(id)
    }

    /// Move `id` to `phase`; false when it was evicted meanwhile.
    fn enter(&self, id: u64, phase: Phase) -> bool {
        match self.lock().get_mut(&id) {
            Some(c) => {
                c.phase = phase;
                c.since = Instant::now();
                true
            }
            None => false,
        }
    }

    fn leave(&self, id: u64) {
        self.lock().remove(&id);
    }
}

fn tcp_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    stop: &Arc<AtomicBool>,
    limits: TcpLimits,
) {
    let connections = Arc::new(Connections {
        limits,
        open: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
    });
    while !stop.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let Some(id) = connections.admit(&stream) else {
            continue; // dropped: every connection is busy answering
        };
        let (shared, stop, connections) = (shared.clone(), stop.clone(), connections.clone());
        std::thread::spawn(move || {
            tcp_connection(stream, &shared, &stop, &connections, id);
            connections.leave(id);
        });
    }
}

fn timed_out() -> std::io::Error {
    std::io::ErrorKind::TimedOut.into()
}

/// One `read` that returns by `deadline` (or when the server stops).
fn read_by(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    stop: &AtomicBool,
) -> std::io::Result<usize> {
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(timed_out)?;
        // In slices, so that a stopping server is noticed.
        stream.set_read_timeout(Some(left.min(Duration::from_millis(500))))?;
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Fill `buf` by `deadline`.
fn read_exact_by(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match read_by(stream, &mut buf[at..], deadline, stop)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => at += n,
        }
    }
    Ok(())
}

/// Write all of `bytes` by `deadline` (a client that does not read cannot
/// hold the connection either).
fn write_all_by(stream: &mut TcpStream, bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    let mut at = 0;
    while at < bytes.len() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(timed_out)?;
        stream.set_write_timeout(Some(left))?;
        match stream.write(&bytes[at..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Queries on one connection, answered in order; a client may send several
/// before reading. Each message must arrive whole within the message
/// timeout of its first byte; between messages the idle timeout applies.
fn tcp_connection(
    mut stream: TcpStream,
    shared: &Shared,
    stop: &AtomicBool,
    connections: &Connections,
    id: u64,
) {
    let limits = connections.limits;
    let _ = stream.set_nonblocking(false);
    while !stop.load(Ordering::Relaxed) {
        let mut len = [0u8; 2];
        let idle_until = Instant::now() + limits.idle_timeout;
        let got = match read_by(&mut stream, &mut len, idle_until, stop) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !connections.enter(id, Phase::Reading) {
            return; // evicted
        }
        let deadline = Instant::now() + limits.message_timeout;
        if read_exact_by(&mut stream, &mut len[got..], deadline, stop).is_err() {
            return;
        }
        let mut packet = vec![0u8; u16::from_be_bytes(len) as usize];
        if read_exact_by(&mut stream, &mut packet, deadline, stop).is_err() {
            return;
        }
        if !connections.enter(id, Phase::Answering) {
            return;
        }
        let started = Instant::now();
        let answered = |query: Message, m: Message| {
            record(shared, &query, &m, started);
            encode(&query, m, 65535)
        };
        let bytes = match handle_with(&shared.zone.get(), shared, &packet) {
            Handled::Answer(query, m) => answered(query, m),
            Handled::Forward(query) => {
                let m = shared.forwarder.resolve(&query, &shared.metrics);
                answered(query, m)
            }
            Handled::Chase(query, m, target) => {
                let m = chase(shared, &query, m, target);
                answered(query, m)
            }
            Handled::Raw(bytes) => Some(bytes),
            Handled::Nothing => None,
        };
        let Some(bytes) = bytes else { return };
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        let write_by = Instant::now() + limits.message_timeout;
        if write_all_by(&mut stream, &framed, write_by).is_err() {
            return;
        }
        if !connections.enter(id, Phase::Idle) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;

    fn server(limits: TcpLimits) -> DnsServer {
        let zone = crate::zone::test_zone();
        DnsServer::start_with(
            "127.0.0.1:0".parse().unwrap(),
            SharedZone::new(zone),
            Forwarder::new(Vec::new(), Duration::from_millis(100)),
            Arc::new(DnsMetrics::default()),
            limits,
        )
        .unwrap()
    }

    /// Ask for web's address over `s`; the answer's A record count.
    fn ask(s: &mut TcpStream) -> usize {
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("web.default.svc.cluster.local.").unwrap(),
            RecordType::A,
        ));
        let bytes = q.to_vec().unwrap();
        s.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
        s.write_all(&bytes).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut body).unwrap();
        Message::from_vec(&body).unwrap().answers.len()
    }

    /// Whether the server closed `s` (EOF or reset) within `wait`.
    fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
        s.set_read_timeout(Some(wait)).unwrap();
        let mut byte = [0u8; 1];
        !matches!(s.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    #[test]
    fn idle_connections_close_and_a_full_server_evicts_the_idle_first() {
        let dns = server(TcpLimits {
            max_connections: 4,
            idle_timeout: Duration::from_secs(30),
            message_timeout: Duration::from_secs(30),
        });
        // Connected first, says nothing; then three clients stuck mid-message.
        let mut idle = TcpStream::connect(dns.tcp_address).unwrap();
        let mut stuck: Vec<TcpStream> = (0..3)
            .map(|_| {
                let mut s = TcpStream::connect(dns.tcp_address).unwrap();
                s.write_all(&[0]).unwrap();
                s
            })
            .collect();
        // Full: a real client takes the idle one's place and is answered.
        let mut real = TcpStream::connect(dns.tcp_address).unwrap();
        real.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(ask(&mut real), 1);
        assert!(closed_within(&mut idle, Duration::from_secs(5)));
        for s in &mut stuck {
            assert!(!closed_within(s, Duration::from_millis(50)));
        }
    }

    #[test]
    fn a_message_must_arrive_whole_before_its_deadline() {
        let dns = server(TcpLimits {
            max_connections: 4,
            idle_timeout: Duration::from_millis(300),
            message_timeout: Duration::from_millis(300),
        });
        // Silent: closed at the idle timeout.
        let mut silent = TcpStream::connect(dns.tcp_address).unwrap();
        assert!(closed_within(&mut silent, Duration::from_secs(5)));
        // Half a message: closed at the message deadline.
        let mut half = TcpStream::connect(dns.tcp_address).unwrap();
        half.write_all(&[0, 40, 1, 2]).unwrap();
        assert!(closed_within(&mut half, Duration::from_secs(5)));
        // A prompt client is answered, twice on one connection.
        let mut real = TcpStream::connect(dns.tcp_address).unwrap();
        real.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(ask(&mut real), 1);
        assert_eq!(ask(&mut real), 1);
    }
}
