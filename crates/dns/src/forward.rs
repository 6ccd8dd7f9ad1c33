//! Names that are not the cluster's go to upstream servers, with a bounded
//! cache that honours TTLs (negative answers included), a retry over TCP
//! when the UDP answer was truncated, and SERVFAIL — not a hang — when no
//! upstream answers in time.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::answer::response;
use crate::metrics::DnsMetrics;

const CACHE_CAPACITY: usize = 10_000;
const MAX_TTL: u32 = 3600;
const DEFAULT_NEGATIVE_TTL: u32 = 30;

type Key = (String, RecordType, u16);

struct Entry {
    answer: Message,
    expires: Instant,
}

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    cache: Mutex<HashMap<Key, Entry>>,
}

/// The nameservers of a resolv.conf.
pub fn resolv_conf_upstreams(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder {
            upstreams,
            timeout,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn has_no_upstreams(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// The answer for `query`: from the cache, else from an upstream.
    pub fn resolve(&self, query: &Message, metrics: &DnsMetrics) -> Message {
        let Some(q) = query.queries.first() else {
            return response(query, ResponseCode::FormErr);
        };
        let key = (
            q.name().to_ascii().to_ascii_lowercase(),
            q.query_type(),
            u16::from(q.query_class()),
        );
        if let Some(cached) = self.cached(&key) {
            metrics.cache_hit();
            let mut m = cached;
            m.metadata.id = query.metadata.id;
            m.metadata.recursion_desired = query.metadata.recursion_desired;
            m.queries = query.queries.clone();
            return m;
        }
        metrics.cache_miss();
        let mut ask = Message::query();
        ask.metadata.recursion_desired = true;
        ask.queries = query.queries.clone();
        for upstream in &self.upstreams {
            match self.exchange(&ask, *upstream) {
                Ok(answer)
                    if matches!(
                        answer.metadata.response_code,
                        ResponseCode::NoError | ResponseCode::NXDomain
                    ) =>
                {
                    self.store(key, &answer);
                    let mut m = answer;
                    m.metadata.id = query.metadata.id;
                    m.metadata.recursion_desired = query.metadata.recursion_desired;
                    m.metadata.recursion_available = true;
                    m.queries = query.queries.clone();
                    m.edns = None;
                    return m;
                }
                Ok(answer) => {
                    tracing::debug!(
                        "upstream {upstream} answered {}",
                        answer.metadata.response_code
                    );
                    metrics.upstream_error();
                }
                Err(e) => {
                    tracing::debug!("upstream {upstream}: {e}");
                    metrics.upstream_error();
                }
            }
        }
        response(query, ResponseCode::ServFail)
    }

    fn cached(&self, key: &Key) -> Option<Message> {
        let cache = self.cache.lock().ok()?;
        let entry = cache.get(key)?;
        let left = entry.expires.checked_duration_since(Instant::now())?;
        let mut m = entry.answer.clone();
        // Hand out the remaining TTL, not the original one.
        let secs = left.as_secs() as u32;
        for r in m
            .answers
            .iter_mut()
            .chain(m.authorities.iter_mut())
            .chain(m.additionals.iter_mut())
        {
            r.ttl = r.ttl.min(secs.max(1));
        }
        Some(m)
    }

    fn store(&self, key: Key, answer: &Message) {
        let ttl = if answer.answers.is_empty() {
            // Negative: the SOA's minimum (RFC 2308).
            answer
                .authorities
                .iter()
                .find_map(|r| match &r.data {
                    RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                })
                .unwrap_or(DEFAULT_NEGATIVE_TTL)
        } else {
            answer.answers.iter().map(|r| r.ttl).min().unwrap_or(0)
        }
        .min(MAX_TTL);
        if ttl == 0 {
            return;
        }
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= CACHE_CAPACITY {
            let now = Instant::now();
            cache.retain(|_, e| e.expires > now);
            if cache.len() >= CACHE_CAPACITY {
                // Still full of live entries: drop a tenth, whichever they are.
                let drop: Vec<Key> = cache.keys().take(CACHE_CAPACITY / 10).cloned().collect();
                for k in drop {
                    cache.remove(&k);
                }
            }
        }
        cache.insert(
            key,
            Entry {
                answer: answer.clone(),
                expires: Instant::now() + Duration::from_secs(u64::from(ttl)),
            },
        );
    }

    /// One question to one upstream: UDP, then TCP when truncated.
    fn exchange(&self, ask: &Message, upstream: SocketAddr) -> std::io::Result<Message> {
        let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let mut ask = ask.clone();
        ask.metadata.id =
            (Instant::now().elapsed().subsec_nanos() ^ std::process::id()) as u16 ^ 0x5a5a;
        let bytes = ask.to_vec().map_err(|e| bad(e.to_string()))?;
        let bind: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0".parse().expect("valid")
        } else {
            "[::]:0".parse().expect("valid")
        };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(upstream)?;
        socket.set_read_timeout(Some(self.timeout))?;
        socket.send(&bytes)?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = vec![0u8; 4096];
        let answer = loop {
            let n = socket.recv(&mut buf)?;
            let m = Message::from_vec(&buf[..n]).map_err(|e| bad(e.to_string()))?;
            // Ignore strays: wrong id or question.
            if m.metadata.id == ask.metadata.id && m.queries == ask.queries {
                break m;
            }
            if Instant::now() > deadline {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
        };
        if !answer.metadata.truncation {
            return Ok(answer);
        }
        let mut tcp = TcpStream::connect_timeout(&upstream, self.timeout)?;
        tcp.set_read_timeout(Some(self.timeout))?;
        tcp.set_write_timeout(Some(self.timeout))?;
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        tcp.write_all(&framed)?;
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len)?;
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        tcp.read_exact(&mut body)?;
        Message::from_vec(&body).map_err(|e| bad(e.to_string()))
    }
}
