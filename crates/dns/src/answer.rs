//! Answers for the cluster's own names, from a [`Zone`], as CoreDNS's
//! `kubernetes` plugin gives them with the default Corefile.

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, HINFO, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::zone::{parse_reverse, Records, Rr, Zone};

/// TTL of `dns-version.<domain>` TXT, as CoreDNS gives it.
const DNS_VERSION_TTL: u32 = 28800;

/// The largest TTL CoreDNS gives its SOA record.
const SOA_TTL_CAP: u32 = 300;

/// What to do with a query.
pub enum Outcome {
    Answer(Message),
    /// Not ours: ask the upstream servers.
    Forward,
    /// Our answer so far ends in a CNAME to a name outside the cluster and
    /// the client wants recursion: ask upstream for the target (this type)
    /// and add its records, as CoreDNS does for ExternalName Services.
    Chase(Message, Name),
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{name}.")).ok()
}

/// A response to `query` with `code`, the question copied.
pub fn response(query: &Message, code: ResponseCode) -> Message {
    let mut m = Message::response(query.metadata.id, query.metadata.op_code);
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.response_code = code;
    m.queries = query.queries.clone();
    m
}

/// The apex a question falls under, spelled as the question spells it:
/// CoreDNS keeps the query's letter case in the zone part of every name it
/// makes (SOA owner and fields, SRV targets, NS).
struct Apex {
    /// Lowercase (`cluster.local`, `in-addr.arpa`).
    zone: String,
    /// As asked (`Cluster.LOCAL`).
    asked: String,
}

impl Apex {
    fn of(asked_name: &str, zone: &str) -> Apex {
        let asked = asked_name
            .len()
            .checked_sub(zone.len())
            .and_then(|at| asked_name.get(at..))
            .filter(|tail| tail.eq_ignore_ascii_case(zone))
            .unwrap_or(zone);
        Apex {
            zone: zone.to_owned(),
            asked: asked.to_owned(),
        }
    }

    /// `name` (lowercase, inside the zone) with the zone part as asked.
    fn spell(&self, name: &str) -> Option<Name> {
        match name.strip_suffix(self.zone.as_str()) {
            Some(head) if head.is_empty() || head.ends_with('.') => {
                fqdn(&format!("{head}{}", self.asked))
            }
            _ => fqdn(name),
        }
    }

    fn soa(&self, zone: &Zone) -> Option<Record> {
        let rdata = SOA::new(
            fqdn(&format!("ns.dns.{}", self.asked))?,
            fqdn(&format!("hostmaster.{}", self.asked))?,
            zone.serial,
            7200,
            1800,
            86400,
            zone.ttl,
        );
        // CoreDNS: the SOA's own TTL is the zone's, at most 300 s; its
        // minimum (the negative-caching TTL) the zone's TTL as it is.
        Some(Record::from_rdata(
            fqdn(&self.asked)?,
            zone.ttl.min(SOA_TTL_CAP),
            RData::SOA(rdata),
        ))
    }
}

/// Answer `query` from `zone` if the name is the cluster's.
pub fn answer(zone: &Zone, query: &Message) -> Outcome {
    if query.metadata.op_code != OpCode::Query {
        return Outcome::Answer(response(query, ResponseCode::NotImp));
    }
    if query.queries.len() != 1 {
        return Outcome::Answer(response(query, ResponseCode::FormErr));
    }
    // An EDNS version we do not speak: BADVERS with our version (0), before
    // anything else, as RFC 6891 §6.1.3 says and CoreDNS's server does.
    if query.edns.as_ref().is_some_and(|e| e.version() != 0) {
        return Outcome::Answer(response(query, ResponseCode::BADVERS));
    }
    let q = &query.queries[0];
    // CoreDNS refuses every class but IN (CH, ANY, …), whatever the name.
    if q.query_class() != DNSClass::IN {
        return Outcome::Answer(response(query, ResponseCode::Refused));
    }
    let qtype = q.query_type();
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return Outcome::Answer(response(query, ResponseCode::Refused));
    }
    let asked = q.name().to_ascii();
    let asked = asked.trim_end_matches('.');
    let name = asked.to_ascii_lowercase();
    let reverse = parse_reverse(&name).and_then(|ip| zone.reverse.get(&ip));
    if !zone.is_cluster_name(&name) && reverse.is_none() {
        return Outcome::Forward;
    }

    let mut m = response(query, ResponseCode::NoError);
    m.metadata.authoritative = true;
    let owner = q.name().clone();
    let ttl = zone.ttl;

    if let Some(targets) = reverse {
        let apex = if name.ends_with(".ip6.arpa") {
            "ip6.arpa"
        } else {
            "in-addr.arpa"
        };
        if matches!(qtype, RecordType::PTR | RecordType::ANY) {
            m.answers.extend(
                targets
                    .iter()
                    .filter_map(|t| fqdn(t))
                    .map(|t| Record::from_rdata(owner.clone(), ttl, RData::PTR(PTR(t)))),
            );
        } else {
            m.authorities.extend(Apex::of(asked, apex).soa(zone));
        }
        return Outcome::Answer(m);
    }
    let apex = Apex::of(asked, &zone.domain);
    if let Some(ip) = zone.pod_address(&name) {
        let records = Records::new(vec![Rr::address(ip)]);
        add_records(zone, &apex, &mut m, &owner, &records, qtype, ttl);
        return Outcome::Answer(m);
    }
    let Some(records) = zone.names.get(name.as_str()) else {
        m.metadata.response_code = ResponseCode::NXDomain;
        m.authorities.extend(apex.soa(zone));
        return Outcome::Answer(m);
    };
    if name == zone.domain {
        match qtype {
            RecordType::SOA => {
                m.answers.extend(apex.soa(zone));
                return Outcome::Answer(m);
            }
            RecordType::NS => {
                // `ns.dns.<domain>`, the SOA's primary, with its addresses.
                let server = format!("ns.dns.{}", zone.domain);
                if let Some(target) = apex.spell(&server) {
                    m.answers.push(Record::from_rdata(
                        owner,
                        ttl,
                        RData::NS(NS(target.clone())),
                    ));
                    if let Some(addresses) = zone.names.get(server.as_str()) {
                        add_addresses(&mut m, &target, addresses, ttl);
                    }
                }
                if m.answers.is_empty() {
                    m.authorities.extend(apex.soa(zone));
                }
                return Outcome::Answer(m);
            }
            _ => {}
        }
    }
    let ttl = match name.strip_prefix("dns-version.") {
        Some(rest) if rest == zone.domain => DNS_VERSION_TTL,
        _ => ttl,
    };
    let outside = add_records(zone, &apex, &mut m, &owner, records, qtype, ttl);
    match outside {
        // CoreDNS completes A, AAAA and TXT this way; a recursive server
        // completes every type (RFC 1034 §4.3.2), so we do too, but ANY.
        Some(target)
            if query.metadata.recursion_desired
                && !matches!(qtype, RecordType::CNAME | RecordType::ANY) =>
        {
            Outcome::Chase(m, target)
        }
        _ => Outcome::Answer(m),
    }
}

/// The A and AAAA records of `records` as additionals owned by `owner`.
fn add_addresses(m: &mut Message, owner: &Name, records: &Records, ttl: u32) {
    m.additionals.extend(
        records
            .a()
            .map(|ip| Record::from_rdata(owner.clone(), ttl, RData::A(A(ip)))),
    );
    m.additionals.extend(
        records
            .aaaa()
            .map(|ip| Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(ip)))),
    );
}

/// Put the records of `qtype` in the answer (following an in-zone CNAME),
/// or an SOA in the authority section when there are none (NODATA).
/// Returns the target of a CNAME that leads out of the cluster.
fn add_records(
    zone: &Zone,
    apex: &Apex,
    m: &mut Message,
    owner: &Name,
    records: &Records,
    qtype: RecordType,
    ttl: u32,
) -> Option<Name> {
    let mut owner = owner.clone();
    let mut records = records;
    for _ in 0..8 {
        let Some(target) = records.cname().filter(|_| qtype != RecordType::CNAME) else {
            break;
        };
        let target_name = fqdn(target)?;
        m.answers.push(Record::from_rdata(
            owner.clone(),
            ttl,
            RData::CNAME(CNAME(target_name.clone())),
        ));
        let lower = target.to_ascii_lowercase();
        match zone.names.get(lower.as_str()) {
            // The target is ours too: answer it as well.
            Some(next) => {
                owner = target_name;
                records = next;
            }
            // Ours but absent: the CNAME alone.
            None if zone.is_cluster_name(&lower) => return None,
            // Not ours: the upstream completes it when recursion is wanted.
            None => return Some(target_name),
        }
    }
    let any = qtype == RecordType::ANY;
    let qtype = if any { minimal_any(records) } else { qtype };
    match qtype {
        RecordType::A => m.answers.extend(
            records
                .a()
                .map(|ip| Record::from_rdata(owner.clone(), ttl, RData::A(A(ip)))),
        ),
        RecordType::AAAA => m.answers.extend(
            records
                .aaaa()
                .map(|ip| Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(ip)))),
        ),
        RecordType::TXT => m.answers.extend(records.txt().map(|t| {
            Record::from_rdata(owner.clone(), ttl, RData::TXT(TXT::new(vec![t.to_owned()])))
        })),
        RecordType::CNAME => m.answers.extend(
            records
                .cname()
                .and_then(fqdn)
                .map(|t| Record::from_rdata(owner.clone(), ttl, RData::CNAME(CNAME(t)))),
        ),
        RecordType::SRV => {
            let mut seen: Vec<&str> = Vec::new();
            for srv in records.srv() {
                let Some(target) = apex.spell(&srv.target) else {
                    continue;
                };
                m.answers.push(Record::from_rdata(
                    owner.clone(),
                    ttl,
                    RData::SRV(SRV::new(srv.priority, srv.weight, srv.port, target.clone())),
                ));
                // The target's addresses (once), so that no second query is needed.
                if seen.contains(&&*srv.target) {
                    continue;
                }
                seen.push(&srv.target);
                if let Some(t) = zone.names.get(&*srv.target) {
                    add_addresses(m, &target, t, ttl);
                }
            }
        }
        // RFC 8482: the minimal answer to ANY, never to a HINFO question.
        RecordType::HINFO if any => {
            m.answers.push(Record::from_rdata(
                owner.clone(),
                ttl,
                RData::HINFO(HINFO::new("RFC8482".into(), String::new())),
            ));
        }
        _ => {}
    }
    if m.answers.is_empty() {
        m.authorities.extend(apex.soa(zone));
    }
    None
}

/// RFC 8482: answer ANY with one RRset, not everything.
fn minimal_any(records: &Records) -> RecordType {
    if records.a().next().is_some() {
        RecordType::A
    } else if records.aaaa().next().is_some() {
        RecordType::AAAA
    } else if records.srv().next().is_some() {
        RecordType::SRV
    } else if records.txt().next().is_some() {
        RecordType::TXT
    } else {
        RecordType::HINFO
    }
}
