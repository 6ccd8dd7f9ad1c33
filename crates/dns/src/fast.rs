//! The hot path. Answers for the cluster's names never change between two
//! zone swaps, so the first answer to a question is kept as wire bytes and
//! later identical questions are answered by copying: the query's id, flags
//! and question, then the stored records. Compression pointers in the stored
//! records point into the question, which has the same length every time,
//! so the bytes stay valid. Anything unusual takes the full path.

use std::collections::HashMap;
use std::sync::Mutex;

/// Rotate the first run of two or more A (or AAAA) records of one owner
/// in the answer section by `turn` places (modulo their number): CoreDNS's
/// default Corefile has `loadbalance`, which reorders A and AAAA records
/// so that clients taking the first address spread over a headless
/// Service's endpoints. The server turns by the query's id, which clients
/// choose at random: as even a spread as a shuffle, with no shared state,
/// and a retransmitted query gets the same answer. Records of one run
/// have the same owner (a compression pointer) and size, so moving them
/// changes no offset that any other part of the message points to.
pub fn rotate_addresses(message: &mut [u8], turn: usize) {
    if let Some((start, size, count)) = address_run(message) {
        message[start..start + size * count].rotate_left(turn % count * size);
    }
}

/// Where the run starts, each record's size and how many there are.
fn address_run(m: &[u8]) -> Option<(usize, usize, usize)> {
    let answers = usize::from(u16::from_be_bytes([*m.get(6)?, *m.get(7)?]));
    if answers < 2 || m.get(4..6)? != [0, 1] {
        return None;
    }
    let mut at = 12;
    loop {
        let len = usize::from(*m.get(at)?);
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // our questions are never compressed
        }
        at += 1 + len;
    }
    at += 5;
    let mut run: Option<Run> = None;
    for _ in 0..answers {
        let owner = [*m.get(at)?, *m.get(at + 1)?];
        if owner[0] & 0xc0 != 0xc0 {
            break; // a name spelt out: where this record ends needs parsing
        }
        let rtype = [*m.get(at + 2)?, *m.get(at + 3)?];
        let size = 12 + usize::from(u16::from_be_bytes([*m.get(at + 10)?, *m.get(at + 11)?]));
        let address = rtype == [0, 1] || rtype == [0, 28];
        match &mut run {
            Some(r) if r.owner == owner && r.rtype == rtype && r.size == size && address => {
                r.count += 1;
            }
            Some(r) if r.count >= 2 => return Some((r.start, r.size, r.count)),
            _ => {
                run = address.then_some(Run {
                    start: at,
                    owner,
                    rtype,
                    size,
                    count: 1,
                })
            }
        }
        at += size;
    }
    m.get(..at)?;
    run.filter(|r| r.count >= 2)
        .map(|r| (r.start, r.size, r.count))
}

/// A run of address records under way.
struct Run {
    start: usize,
    /// The compression pointer every record of the run is owned by.
    owner: [u8; 2],
    rtype: [u8; 2],
    size: usize,
    count: usize,
}

/// The parts of a plain query the fast path needs.
pub struct Quick<'a> {
    pub id: [u8; 2],
    pub recursion_desired: bool,
    /// Question section bytes (name, type, class), as sent.
    pub question: &'a [u8],
    pub qtype: u16,
    /// EDNS UDP payload size, when the query has an OPT record.
    pub edns: Option<u16>,
}

/// Parse a plain query: one IN question, nothing else but an optional OPT.
/// `None` for anything else — the full path will handle (or refuse) it.
pub fn parse(p: &[u8]) -> Option<Quick<'_>> {
    if p.len() < 17 {
        return None;
    }
    let flags = u16::from_be_bytes([p[2], p[3]]);
    // QR=0, opcode QUERY, TC=0; qdcount 1, ancount 0, nscount 0.
    if flags & 0xfa00 != 0 || p[4..10] != [0, 1, 0, 0, 0, 0] || p[10] != 0 || p[11] > 1 {
        return None;
    }
    let mut at = 12;
    loop {
        let len = *p.get(at)? as usize;
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 || at + 1 + len > p.len() || at - 12 > 255 {
            return None;
        }
        at += 1 + len;
    }
    if at + 4 > p.len() || p[at + 2..at + 4] != [0, 1] {
        return None;
    }
    let qtype = u16::from_be_bytes([p[at], p[at + 1]]);
    let question = &p[12..at + 4];
    at += 4;
    let edns = if p[11] == 1 {
        // Root name, type OPT, class = payload, ttl (ext rcode, version 0, flags), rdlen.
        if at + 11 > p.len() || p[at] != 0 || p[at + 1..at + 3] != [0, 41] || p[at + 6] != 0 {
            return None;
        }
        let payload = u16::from_be_bytes([p[at + 3], p[at + 4]]);
        let rdlen = u16::from_be_bytes([p[at + 9], p[at + 10]]) as usize;
        at += 11 + rdlen;
        Some(payload)
    } else {
        None
    };
    if at != p.len() {
        return None;
    }
    Some(Quick {
        id: [p[0], p[1]],
        recursion_desired: flags & 0x0100 != 0,
        question,
        qtype,
        edns,
    })
}

/// A stored answer: header bits and counts, and the records after the question.
pub struct Stored {
    /// Flags byte 2 without RD, and byte 3 (RA, rcode).
    flags: [u8; 2],
    counts: [u16; 3],
    records: Vec<u8>,
}

impl Stored {
    /// From a full answer's wire bytes (encoded without OPT) to a question
    /// of `question_len` bytes. `None` if it does not have that shape.
    pub fn from_wire(bytes: &[u8], question_len: usize) -> Option<Stored> {
        if bytes.len() < 12 + question_len || bytes[4..6] != [0, 1] {
            return None;
        }
        let count = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        if count(10) != 0 {
            return None; // an OPT or other additional we did not expect to reuse
        }
        Some(Stored {
            flags: [bytes[2] & !0x01, bytes[3]],
            counts: [count(6), count(8), count(10)],
            records: bytes[12 + question_len..].to_vec(),
        })
    }

    /// The answer to `q`, or `None` when it would not fit its size limit
    /// (the full path then truncates).
    pub fn answer(&self, q: &Quick<'_>) -> Option<Vec<u8>> {
        let opt_len = if q.edns.is_some() { 11 } else { 0 };
        let len = 12 + q.question.len() + self.records.len() + opt_len;
        let limit = q.edns.map_or(512, |p| usize::from(p.clamp(512, 4096)));
        if len > limit {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&q.id);
        out.push(self.flags[0] | u8::from(q.recursion_desired));
        out.push(self.flags[1]);
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&self.counts[0].to_be_bytes());
        out.extend_from_slice(&self.counts[1].to_be_bytes());
        out.extend_from_slice(&(self.counts[2] + u16::from(q.edns.is_some())).to_be_bytes());
        out.extend_from_slice(q.question);
        out.extend_from_slice(&self.records);
        if q.edns.is_some() {
            // Our OPT: root, type 41, payload 1232, no extended rcode, no options.
            out.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        }
        rotate_addresses(&mut out, usize::from(u16::from_be_bytes(q.id)));
        Some(out)
    }
}

/// Stored answers of one zone, by exact question bytes (case included, so
/// that a resolver using 0x20 gets its own spelling back).
#[derive(Default)]
pub struct AnswerCache {
    map: Mutex<HashMap<Vec<u8>, std::sync::Arc<Stored>>>,
}

const CAPACITY: usize = 500_000;

impl AnswerCache {
    pub fn get(&self, question: &[u8]) -> Option<std::sync::Arc<Stored>> {
        self.map.lock().ok()?.get(question).cloned()
    }

    pub fn put(&self, question: &[u8], stored: Stored) {
        let Ok(mut map) = self.map.lock() else { return };
        if map.len() >= CAPACITY {
            // Random names can fill it: start over rather than grow.
            map.clear();
        }
        map.insert(question.to_vec(), std::sync::Arc::new(stored));
    }
}
