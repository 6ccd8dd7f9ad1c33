//! The server: UDP and TCP on one address. Cluster names are answered on
//! the receiving thread from the current zone (a pointer swap away from the
//! newest); forwarded names go to worker threads so that a slow upstream
//! never holds up the cluster's own answers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, ResponseCode};

use crate::answer::{answer, response, Outcome};
use crate::fast::{parse, AnswerCache, Stored};
use crate::forward::Forwarder;
use crate::metrics::DnsMetrics;
use crate::zone::Zone;

/// What we advertise as our EDNS UDP payload size (the DNS flag day value).
const OUR_PAYLOAD: u16 = 1232;
const MAX_TCP_CONNECTIONS: usize = 256;

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
    client: SocketAddr,
    limit: usize,
    started: Instant,
}

impl DnsServer {
    pub fn start(
        listen: SocketAddr,
        zone: SharedZone,
        forwarder: Forwarder,
        metrics: Arc<DnsMetrics>,
    ) -> std::io::Result<DnsServer> {
        let udp = UdpSocket::bind(listen)?;
        let udp_address = udp.local_addr()?;
        // The same port over TCP (when asked for port 0, the one UDP got).
        let tcp = TcpListener::bind(SocketAddr::new(listen.ip(), udp_address.port()))?;
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
            threads.push(std::thread::spawn(move || tcp_loop(&tcp, &shared, &stop)));
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
    let bytes = m.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
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
    }
}

fn without_edns(m: &Message) -> Message {
    let mut m = m.clone();
    m.edns = None;
    m
}

/// Parse and answer, or say it must be forwarded.
fn handle(shared: &Shared, packet: &[u8]) -> Result<(Message, Option<Message>), Option<Vec<u8>>> {
    handle_with(&shared.zone.get(), shared, packet)
}

fn handle_with(
    zone: &Zone,
    shared: &Shared,
    packet: &[u8],
) -> Result<(Message, Option<Message>), Option<Vec<u8>>> {
    match decide(zone, packet) {
        Decision::Reply(q, m) => Ok((q, Some(m))),
        Decision::Forward(q) if shared.forwarder.has_no_upstreams() => {
            let m = response(&q, ResponseCode::ServFail);
            Ok((q, Some(m)))
        }
        Decision::Forward(q) => Ok((q, None)),
        Decision::Raw(bytes) => Err(Some(bytes)),
        Decision::Drop => Err(None),
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
        match handle_with(&zone, shared, packet) {
            Ok((query, Some(m))) => {
                record(shared, &query, &m, started);
                // Keep plain answers for the next identical question.
                if let Some(q) = &quick {
                    if let Ok(wire) = without_edns(&m).to_vec() {
                        if let Some(stored) = Stored::from_wire(&wire, q.question.len()) {
                            cache.put(q.question, stored);
                        }
                    }
                }
                if let Some(bytes) = encode(&query, m, udp_limit(&query)) {
                    let _ = socket.send_to(&bytes, client);
                }
            }
            Ok((query, None)) => {
                let limit = udp_limit(&query);
                // A full queue means the upstreams are too slow: SERVFAIL now.
                if let Err(std::sync::mpsc::TrySendError::Full(job)) = jobs.try_send(Job {
                    query,
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
            Err(Some(bytes)) => {
                let _ = socket.send_to(&bytes, client);
            }
            Err(None) => {}
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
        let m = shared.forwarder.resolve(&job.query, &shared.metrics);
        record(shared, &job.query, &m, job.started);
        if let Some(bytes) = encode(&job.query, m, job.limit) {
            let _ = socket.send_to(&bytes, job.client);
        }
    }
}

fn tcp_loop(listener: &TcpListener, shared: &Arc<Shared>, stop: &Arc<AtomicBool>) {
    let open = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= MAX_TCP_CONNECTIONS {
            continue; // dropped: too many at once
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (shared, stop, open) = (shared.clone(), stop.clone(), open.clone());
        std::thread::spawn(move || {
            tcp_connection(stream, &shared, &stop);
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Queries on one connection, answered in order; a client may send several
/// before reading. Idle connections close after 10 s.
fn tcp_connection(mut stream: TcpStream, shared: &Shared, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    while !stop.load(Ordering::Relaxed) {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut packet = vec![0u8; u16::from_be_bytes(len) as usize];
        if stream.read_exact(&mut packet).is_err() {
            return;
        }
        let started = Instant::now();
        let bytes = match handle(shared, &packet) {
            Ok((query, answer)) => {
                let m = answer.unwrap_or_else(|| shared.forwarder.resolve(&query, &shared.metrics));
                record(shared, &query, &m, started);
                encode(&query, m, 65535)
            }
            Err(bytes) => bytes,
        };
        let Some(bytes) = bytes else { return };
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).is_err() {
            return;
        }
    }
}
