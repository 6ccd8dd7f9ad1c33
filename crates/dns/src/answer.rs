//! Answers for the cluster's own names, from a [`Zone`].

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, HINFO, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::zone::{parse_reverse, Records, Rr, Zone};

/// What to do with a query.
pub enum Outcome {
    Answer(Message),
    /// Not ours: ask the upstream servers.
    Forward,
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

fn soa(zone: &Zone) -> Option<Record> {
    let apex = fqdn(&zone.domain)?;
    let rdata = SOA::new(
        fqdn(&format!("ns.dns.{}", zone.domain))?,
        fqdn(&format!("hostmaster.{}", zone.domain))?,
        zone.serial,
        7200,
        1800,
        86400,
        zone.ttl,
    );
    Some(Record::from_rdata(apex, zone.ttl, RData::SOA(rdata)))
}

/// Answer `query` from `zone` if the name is the cluster's.
pub fn answer(zone: &Zone, query: &Message) -> Outcome {
    if query.metadata.op_code != OpCode::Query {
        return Outcome::Answer(response(query, ResponseCode::NotImp));
    }
    if query.queries.len() != 1 {
        return Outcome::Answer(response(query, ResponseCode::FormErr));
    }
    let q = &query.queries[0];
    let qtype = q.query_type();
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return Outcome::Answer(response(query, ResponseCode::Refused));
    }
    let name = q
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let reverse = parse_reverse(&name).and_then(|ip| zone.reverse.get(&ip));
    if !zone.is_cluster_name(&name) && reverse.is_none() {
        return Outcome::Forward;
    }

    let mut m = response(query, ResponseCode::NoError);
    m.metadata.authoritative = true;
    let owner = q.name().clone();
    let ttl = zone.ttl;

    if let Some(targets) = reverse {
        if matches!(qtype, RecordType::PTR | RecordType::ANY) {
            m.answers.extend(
                targets
                    .iter()
                    .filter_map(|t| fqdn(t))
                    .map(|t| Record::from_rdata(owner.clone(), ttl, RData::PTR(PTR(t)))),
            );
        } else {
            m.authorities.extend(soa(zone));
        }
        return Outcome::Answer(m);
    }
    if let Some(ip) = zone.pod_address(&name) {
        let records = Records::new(vec![Rr::address(ip)]);
        add_records(zone, &mut m, &owner, &records, qtype, ttl);
        return Outcome::Answer(m);
    }
    let Some(records) = zone.names.get(name.as_str()) else {
        m.metadata.response_code = ResponseCode::NXDomain;
        m.authorities.extend(soa(zone));
        return Outcome::Answer(m);
    };
    if name == zone.domain && qtype == RecordType::SOA {
        m.answers.extend(soa(zone));
        return Outcome::Answer(m);
    }
    add_records(zone, &mut m, &owner, records, qtype, ttl);
    Outcome::Answer(m)
}

/// Put the records of `qtype` in the answer (following an in-zone CNAME),
/// or an SOA in the authority section when there are none (NODATA).
fn add_records(
    zone: &Zone,
    m: &mut Message,
    owner: &Name,
    records: &Records,
    qtype: RecordType,
    ttl: u32,
) {
    let mut owner = owner.clone();
    let mut records = records;
    for _ in 0..8 {
        let Some(target) = records.cname().filter(|_| qtype != RecordType::CNAME) else {
            break;
        };
        let Some(target_name) = fqdn(target) else {
            break;
        };
        m.answers.push(Record::from_rdata(
            owner.clone(),
            ttl,
            RData::CNAME(CNAME(target_name.clone())),
        ));
        match zone.names.get(target.to_ascii_lowercase().as_str()) {
            // The target is ours too: answer it as well.
            Some(next) => {
                owner = target_name;
                records = next;
            }
            // The client's resolver follows it.
            None => return,
        }
    }
    let before = m.answers.len();
    let qtype = if qtype == RecordType::ANY {
        minimal_any(records)
    } else {
        qtype
    };
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
            for srv in records.srv() {
                let Some(target) = fqdn(&srv.target) else {
                    continue;
                };
                m.answers.push(Record::from_rdata(
                    owner.clone(),
                    ttl,
                    RData::SRV(SRV::new(srv.priority, srv.weight, srv.port, target.clone())),
                ));
                // The target's addresses, so that no second query is needed.
                if let Some(t) = zone.names.get(&*srv.target) {
                    m.additionals.extend(
                        t.a()
                            .map(|ip| Record::from_rdata(target.clone(), ttl, RData::A(A(ip)))),
                    );
                    m.additionals.extend(
                        t.aaaa().map(|ip| {
                            Record::from_rdata(target.clone(), ttl, RData::AAAA(AAAA(ip)))
                        }),
                    );
                }
            }
        }
        RecordType::HINFO => {
            // RFC 8482: a minimal answer to ANY.
            m.answers.push(Record::from_rdata(
                owner.clone(),
                ttl,
                RData::HINFO(HINFO::new("RFC8482".into(), String::new())),
            ));
        }
        _ => {}
    }
    if m.answers.len() == before && m.answers.is_empty() {
        m.authorities.extend(soa(zone));
    }
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
