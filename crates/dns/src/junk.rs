//! Hostile packets for stress tests: random bytes and malformed-but-
//! plausible queries (compression loops, over-long names, qdcount ≠ 1,
//! unknown opcodes, classes and types, truncations, bad EDNS). Seeded and
//! deterministic, so that a failure can be replayed; no dependencies.
//! With drivers that send it over UDP and TCP at the server's pace, and
//! probes that check valid questions are still answered.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// A seeded generator (xorshift64*).
pub struct Junk {
    state: u64,
}

/// The cluster names junk is built around, so that much of it reaches the
/// zone lookup and not only the parser.
const NAMES: [&str; 4] = [
    "web.default.svc.cluster.local",
    "_http._tcp.maker.default.svc.cluster.local",
    "10-244-1-1.default.pod.cluster.local",
    "dns-version.cluster.local",
];

impl Junk {
    pub fn new(seed: u64) -> Junk {
        Junk {
            state: seed | 1, // never zero
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    /// A header: `id`, flags, and the four counts.
    fn header(&mut self, out: &mut Vec<u8>, flags: u16, counts: [u16; 4]) {
        out.extend_from_slice(&(self.next_u64() as u16).to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        for c in counts {
            out.extend_from_slice(&c.to_be_bytes());
        }
    }

    /// A cluster name, a random one in the cluster domain, or one outside.
    fn name(&mut self, out: &mut Vec<u8>) {
        let random;
        let text = match self.below(4) {
            0 | 1 => NAMES[self.below(NAMES.len())],
            2 => {
                random = format!("x{:x}.default.svc.cluster.local", self.next_u64() % 4096);
                &random
            }
            _ => "example.org",
        };
        for label in text.split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
    }

    /// Type and class: mostly ordinary, sometimes anything.
    fn type_class(&mut self, out: &mut Vec<u8>) {
        let qtype: u16 = match self.below(6) {
            0 => 1,
            1 => 28,
            2 => 33,
            3 => [2, 6, 12, 13, 16, 41, 251, 252, 255][self.below(9)],
            _ => self.next_u64() as u16,
        };
        let class: u16 = match self.below(4) {
            0 | 1 => 1,
            2 => [3, 4, 254, 255][self.below(4)],
            _ => self.next_u64() as u16,
        };
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&class.to_be_bytes());
    }

    /// A plausible query: header, one question.
    fn query(&mut self, out: &mut Vec<u8>) {
        self.header(out, 0x0100, [1, 0, 0, 0]);
        self.name(out);
        self.type_class(out);
    }

    /// One hostile packet into `out` (cleared first).
    pub fn packet(&mut self, out: &mut Vec<u8>) {
        out.clear();
        match self.below(12) {
            // Random bytes, any length (a header or not).
            0 => {
                let n = self.below(600);
                out.extend((0..n).map(|_| self.byte()));
            }
            // A name that points at itself, or two pointers at each other.
            1 => {
                self.header(out, 0x0100, [1, 0, 0, 0]);
                if self.below(2) == 0 {
                    out.extend_from_slice(&[0xc0, 12]);
                } else {
                    out.extend_from_slice(&[1, b'a', 0xc0, 16, 1, b'b', 0xc0, 12]);
                }
                self.type_class(out);
            }
            // Names past 255 bytes: 255 one-letter labels, or 5 of 63.
            2 => {
                self.header(out, 0x0100, [1, 0, 0, 0]);
                if self.below(2) == 0 {
                    for _ in 0..255 {
                        out.extend_from_slice(&[1, b'a']);
                    }
                } else {
                    for _ in 0..5 {
                        out.push(63);
                        out.extend(std::iter::repeat_n(b'x', 63));
                    }
                }
                out.push(0);
                self.type_class(out);
            }
            // qdcount ≠ 1 (0, 2, 65535) over one question.
            3 => {
                let qd = [0u16, 2, 3, 65535][self.below(4)];
                self.header(out, 0x0100, [qd, 0, 0, 0]);
                self.name(out);
                self.type_class(out);
            }
            // Unknown or unimplemented opcodes (IQUERY, STATUS, 3, 6..15).
            4 => {
                let opcode = [1u16, 2, 3, 4, 5, 6, 9, 15][self.below(8)];
                self.header(out, 0x0100 | (opcode << 11), [1, 0, 0, 0]);
                self.name(out);
                self.type_class(out);
            }
            // Counts that promise records that are not there.
            5 => {
                let counts = [1, self.next_u64() as u16, self.next_u64() as u16, 65535];
                self.header(out, 0x0100, counts);
                self.name(out);
                self.type_class(out);
            }
            // A valid-looking query cut short anywhere.
            6 => {
                self.query(out);
                let keep = self.below(out.len());
                out.truncate(keep);
            }
            // A query with bytes flipped.
            7 => {
                self.query(out);
                for _ in 0..1 + self.below(4) {
                    let at = self.below(out.len());
                    out[at] = self.byte();
                }
            }
            // EDNS: an OPT whose length overruns, two OPTs, odd versions.
            8 => {
                let two = self.below(2) == 0;
                self.header(out, 0x0100, [1, 0, 0, if two { 2 } else { 1 }]);
                self.name(out);
                self.type_class(out);
                for _ in 0..if two { 2 } else { 1 } {
                    out.extend_from_slice(&[0, 0, 41]);
                    out.extend_from_slice(&(self.next_u64() as u16).to_be_bytes());
                    out.extend_from_slice(&[0, self.byte(), 0, 0]);
                    let rdlen = [0u16, 4, 200, 65535][self.below(4)];
                    out.extend_from_slice(&rdlen.to_be_bytes());
                    out.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4]);
                }
            }
            // A response, not a query (must be dropped, never answered).
            9 => {
                self.header(out, 0x8180, [1, 0, 0, 0]);
                self.name(out);
                self.type_class(out);
            }
            // Labels with binary bytes, dots and 0x20 case.
            10 => {
                self.header(out, 0x0100, [1, 0, 0, 0]);
                for _ in 0..1 + self.below(6) {
                    let n = 1 + self.below(20);
                    out.push(n as u8);
                    out.extend((0..n).map(|_| self.byte()));
                }
                out.push(0);
                self.type_class(out);
            }
            // A plausible query (the zone lookup, under any type and class).
            _ => self.query(out),
        }
    }
}

/// What a flood did: packets sent, answers read back, time taken.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flood {
    pub sent: u64,
    pub answered: u64,
    pub elapsed: Duration,
}

/// How many packets may be unanswered before the sender waits: the flood
/// runs at the server's pace instead of overflowing its socket buffer
/// (256 junk packets of up to 600 bytes overflow the default 208 KiB, and
/// a probe among them is lost).
const WINDOW: u64 = 64;

fn any_address(server: SocketAddr) -> SocketAddr {
    match server {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Send `count` junk packets to `server` over UDP (stopping at `deadline`).
pub fn flood_udp(
    server: SocketAddr,
    seed: u64,
    count: u64,
    deadline: Instant,
) -> std::io::Result<Flood> {
    let started = Instant::now();
    let socket = UdpSocket::bind(any_address(server))?;
    socket.set_read_timeout(Some(Duration::from_millis(5)))?;
    let mut junk = Junk::new(seed);
    let (mut packet, mut buf) = (Vec::new(), vec![0u8; 65535]);
    let mut flood = Flood::default();
    let mut unanswered = 0u64;
    while flood.sent < count && Instant::now() < deadline {
        junk.packet(&mut packet);
        let _ = socket.send_to(&packet, server);
        flood.sent += 1;
        unanswered += 1;
        while unanswered >= WINDOW {
            match socket.recv(&mut buf) {
                Ok(_) => {
                    flood.answered += 1;
                    unanswered -= 1;
                }
                // The rest will not be answered (junk the server drops).
                Err(_) => unanswered = 0,
            }
        }
    }
    while socket.recv(&mut buf).is_ok() {
        flood.answered += 1;
    }
    flood.elapsed = started.elapsed();
    Ok(flood)
}

/// Send `count` junk packets to `server` over TCP, a few dozen frames per
/// connection, each connection ending in a truncated frame (a length and
/// fewer bytes), a bare length byte, an empty frame or nothing, then EOF.
pub fn flood_tcp(
    server: SocketAddr,
    seed: u64,
    count: u64,
    deadline: Instant,
) -> std::io::Result<Flood> {
    let started = Instant::now();
    let mut junk = Junk::new(seed);
    let mut packet = Vec::new();
    let mut flood = Flood::default();
    while flood.sent < count && Instant::now() < deadline {
        let mut s = TcpStream::connect(server)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut frames = Vec::new();
        for _ in 0..(1 + junk.below(40)).min((count - flood.sent) as usize) {
            junk.packet(&mut packet);
            frames.extend_from_slice(&(packet.len() as u16).to_be_bytes());
            frames.extend_from_slice(&packet);
            flood.sent += 1;
        }
        match junk.below(4) {
            0 => {
                junk.packet(&mut packet);
                frames.extend_from_slice(&(packet.len() as u16 + 7).to_be_bytes());
                frames.extend_from_slice(&packet);
            }
            1 => frames.push(0),
            2 => frames.extend_from_slice(&[0, 0]),
            _ => {}
        }
        // The server may close first (a frame it drops): that is fine.
        let _ = s.write_all(&frames);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut len = [0u8; 2];
        while s.read_exact(&mut len).is_ok() {
            let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
            if s.read_exact(&mut body).is_err() {
                break;
            }
            flood.answered += 1;
        }
    }
    flood.elapsed = started.elapsed();
    Ok(flood)
}

/// A plain query for `name` A, with `id`.
pub fn query(name: &str, id: u16) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.extend_from_slice(&[0, 0, 1, 0, 1]);
    out
}

/// Whether `answer` answers `query` (same id) with NOERROR and records.
fn answers(query: &[u8], answer: &[u8]) -> bool {
    answer.len() >= 12
        && answer[..2] == query[..2]
        && answer[2] & 0x80 != 0
        && answer[3] & 0x0f == 0
        && answer[6..8] != [0, 0]
}

/// Ask `name` A over UDP; how long the answer took, `None` when none came
/// within `wait` (UDP under a flood may drop it: callers retry).
pub fn probe_udp(server: SocketAddr, name: &str, id: u16, wait: Duration) -> Option<Duration> {
    let started = Instant::now();
    let socket = UdpSocket::bind(any_address(server)).ok()?;
    socket.set_read_timeout(Some(wait)).ok()?;
    let q = query(name, id);
    socket.send_to(&q, server).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    answers(&q, &buf[..n]).then(|| started.elapsed())
}

/// Ask `name` A over a new TCP connection; how long the answer took.
pub fn probe_tcp(server: SocketAddr, name: &str, id: u16, wait: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&server, wait).ok()?;
    s.set_read_timeout(Some(wait)).ok()?;
    let q = query(name, id);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    answers(&q, &body).then(|| started.elapsed())
}

/// The resident set of process `pid`, in KiB (Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{decide, encode, udp_limit, Decision};

    /// Every kind of junk, decided and encoded without a panic; junk that
    /// is answered gets no more than its question back plus our records.
    #[test]
    fn junk_is_decided_without_panicking() {
        let zone = crate::zone::test_zone();
        let mut junk = Junk::new(7);
        let mut packet = Vec::new();
        for _ in 0..20_000 {
            junk.packet(&mut packet);
            match decide(&zone, &packet) {
                Decision::Reply(q, m) | Decision::Chase(q, m, _) => {
                    let _ = encode(&q, m, udp_limit(&q));
                }
                Decision::Raw(raw) => assert_eq!(raw.len(), 12),
                Decision::Forward(_) | Decision::Drop => {}
            }
        }
    }
}
