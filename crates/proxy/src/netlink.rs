//! Partial syncs over nf_tables netlink. The nft text stays the one source
//! of truth (it is what `--dry-run` prints and what full syncs load); this
//! translates the small grammar the renderer emits into expressions. Any
//! step it does not know returns `None`, and the sync goes through `nft`.

use std::net::Ipv4Addr;

use strait_linux::{
    Batch, Data, Expr, NlVerdict, REG32_01, REG32_02, REG32_03, REG_1, REG_2, REG_VERDICT,
};

use crate::sync::Op;

/// The batch for `ops`, if every step can be encoded.
pub fn batch(ops: &[Op]) -> Option<Batch> {
    let mut batch = Batch::new("strait");
    let mut set_id = 1;
    for op in ops {
        match op {
            Op::AddSet { name, timeout } => {
                batch.add_timeout_set(name, *timeout, set_id);
                set_id += 1;
            }
            Op::AddChain(c) => batch.add_chain(c),
            Op::FlushChain(c) => batch.flush_chain(c),
            Op::DeleteChain(c) => batch.delete_chain(c),
            Op::DeleteSet(s) => batch.delete_set(s),
            Op::AddRule { chain, rule: text } => batch.add_rule(chain, &rule(text)?),
            Op::DeleteElements { set, keys } => {
                let keys: Option<Vec<Vec<u8>>> = keys.iter().map(|k| key(set, k)).collect();
                batch.delete_elements(set, &keys?);
            }
            Op::AddElements { set, elements } => {
                let mut encoded = Vec::new();
                for (k, v) in elements {
                    let value = if v.is_empty() {
                        None
                    } else if set.ends_with("-endpoints") {
                        Some(Data::Value(key("endpoint", v)?))
                    } else {
                        Some(Data::Verdict(verdict(v)?))
                    };
                    encoded.push((key(set, k)?, value));
                }
                batch.add_elements(set, &encoded);
            }
        }
    }
    Some(batch)
}

fn verdict(text: &str) -> Option<NlVerdict> {
    if text == "drop" {
        return Some(NlVerdict::Drop);
    }
    if let Some(c) = text.strip_prefix("goto ") {
        return Some(NlVerdict::Goto(c.to_owned()));
    }
    text.strip_prefix("jump ")
        .map(|c| NlVerdict::Jump(c.to_owned()))
}

fn proto(p: &str) -> Option<u8> {
    match p {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        _ => None,
    }
}

/// Keys of concatenations take 4 bytes per field, as registers do.
fn key(set: &str, text: &str) -> Option<Vec<u8>> {
    let parts: Vec<&str> = text.split(" . ").collect();
    let ip = |s: &str| s.parse::<Ipv4Addr>().ok().map(|ip| ip.octets().to_vec());
    let proto_field = |s: &str| proto(s).map(|p| vec![p, 0, 0, 0]);
    let port_field = |s: &str| {
        s.parse::<u16>()
            .ok()
            .map(|p| [p.to_be_bytes().to_vec(), vec![0, 0]].concat())
    };
    // numgen writes its number in host byte order.
    let slot_field = |s: &str| s.parse::<u32>().ok().map(|n| n.to_ne_bytes().to_vec());
    let fields: Vec<Option<Vec<u8>>> = match (set, parts.as_slice()) {
        ("cluster-ips", [a]) => vec![ip(a)],
        ("service-ips" | "no-endpoint-services" | "firewall-ips", [a, p, port]) => {
            vec![ip(a), proto_field(p), port_field(port)]
        }
        ("service-nodeports" | "no-endpoint-nodeports", [p, port]) => {
            vec![proto_field(p), port_field(port)]
        }
        ("hairpin", [a, b]) => vec![ip(a), ip(b)],
        ("service-endpoints", [a, p, port, slot]) => {
            vec![ip(a), proto_field(p), port_field(port), slot_field(slot)]
        }
        ("nodeport-endpoints", [p, port, slot]) => {
            vec![proto_field(p), port_field(port), slot_field(slot)]
        }
        // The value of an endpoint slot.
        ("endpoint", [a, port]) => vec![ip(a), port_field(port)],
        // Interval sets (cluster-cidrs, firewall-allow) need range encoding: nft does it.
        _ => return None,
    };
    let fields: Option<Vec<Vec<u8>>> = fields.into_iter().collect();
    Some(fields?.concat())
}

/// The expressions of one rule the renderer wrote.
fn rule(text: &str) -> Option<Vec<Expr>> {
    if let Some(r) = text.strip_prefix("dnat ip to ") {
        return dnat_by_slot(r);
    }
    let mut exprs = Vec::new();
    let mut rest = text;
    if let Some(r) = rest.strip_prefix("numgen random mod ") {
        let (n, r) = r.split_once(" == 0 ")?;
        exprs.push(Expr::NumgenRandom {
            dreg: REG_1,
            modulus: n.parse().ok()?,
        });
        exprs.push(Expr::Cmp {
            sreg: REG_1,
            equal: true,
            data: 0u32.to_ne_bytes().to_vec(),
        });
        rest = r;
    }
    if let Some(r) = rest.strip_prefix("ip saddr ") {
        let (inverted, r) = match r.strip_prefix("!= ") {
            Some(r) => (true, r),
            None => (false, r),
        };
        let (set, r) = r.strip_prefix('@')?.split_once(' ')?;
        exprs.push(Expr::NetworkPayload {
            offset: 12,
            len: 4,
            dreg: REG_1,
        });
        exprs.push(Expr::Lookup {
            set: set.to_owned(),
            sreg: REG_1,
            inverted,
        });
        rest = r;
    }
    if let Some(r) = rest.strip_prefix("fib saddr type local ") {
        const RTN_LOCAL: u32 = 2;
        exprs.push(Expr::FibSaddrType { dreg: REG_1 });
        exprs.push(Expr::Cmp {
            sreg: REG_1,
            equal: true,
            data: RTN_LOCAL.to_ne_bytes().to_vec(),
        });
        rest = r;
    }
    if let Some(r) = rest.strip_prefix("update @") {
        let set = r.strip_suffix(" { ip saddr }")?;
        exprs.push(Expr::NetworkPayload {
            offset: 12,
            len: 4,
            dreg: REG_1,
        });
        exprs.push(Expr::DynsetUpdate {
            set: set.to_owned(),
            sreg_key: REG_1,
        });
        return Some(exprs);
    }
    if let Some(r) = rest.strip_prefix("meta l4proto ") {
        let (p, target) = r.split_once(" dnat to ")?;
        let (ip, port) = target.rsplit_once(':')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let port: u16 = port.parse().ok()?;
        exprs.push(Expr::MetaL4Proto { dreg: REG_1 });
        exprs.push(Expr::Cmp {
            sreg: REG_1,
            equal: true,
            data: vec![proto(p)?],
        });
        exprs.push(Expr::Immediate {
            dreg: REG_1,
            data: Data::Value(ip.octets().to_vec()),
        });
        exprs.push(Expr::Immediate {
            dreg: REG_2,
            data: Data::Value(port.to_be_bytes().to_vec()),
        });
        exprs.push(Expr::Dnat {
            addr: REG_1,
            port: REG_2,
        });
        return Some(exprs);
    }
    exprs.push(Expr::Immediate {
        dreg: REG_VERDICT,
        data: Data::Verdict(verdict(rest)?),
    });
    Some(exprs)
}

/// `[ip daddr . ]meta l4proto . th dport . numgen random mod N map @M`:
/// the key's fields in consecutive 4-byte registers, the endpoint's address
/// and port looked up into the first two, then DNAT.
fn dnat_by_slot(text: &str) -> Option<Vec<Expr>> {
    let (key, set) = text.split_once(" map @")?;
    let (fields, modulus) = key.split_once(" . numgen random mod ")?;
    let mut registers = [REG_1, REG32_01, REG32_02, REG32_03].into_iter();
    let mut exprs = Vec::new();
    for field in fields.split(" . ") {
        let dreg = registers.next()?;
        exprs.push(match field {
            "ip daddr" => Expr::NetworkPayload {
                offset: 16,
                len: 4,
                dreg,
            },
            "meta l4proto" => Expr::MetaL4Proto { dreg },
            "th dport" => Expr::TransportPayload {
                offset: 2,
                len: 2,
                dreg,
            },
            _ => return None,
        });
    }
    exprs.push(Expr::NumgenRandom {
        dreg: registers.next()?,
        modulus: modulus.parse().ok()?,
    });
    exprs.push(Expr::MapLookup {
        set: set.to_owned(),
        sreg: REG_1,
        dreg: REG_1,
    });
    exprs.push(Expr::Dnat {
        addr: REG_1,
        port: REG32_01,
    });
    Some(exprs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_form_the_renderer_writes_is_understood() {
        for text in [
            "ip saddr != @cluster-cidrs jump mark-for-masquerade",
            "ip saddr @cluster-cidrs goto svc-X-a/b/tcp/http",
            "ip saddr @aff-X-10.0.0.1/80 goto ep-X-10.0.0.1/80",
            "numgen random mod 3 == 0 meta l4proto tcp dnat to 10.244.1.2:8080",
            "numgen random mod 2 == 0 goto ep-X-10.0.0.1/80",
            "meta l4proto udp dnat to 10.244.1.3:53",
            "fib saddr type local jump mark-for-masquerade",
            "fib saddr type local goto svc-X",
            "update @aff-X-10.0.0.1/80 { ip saddr }",
            "goto local-X",
            "jump mark-for-masquerade",
            "drop",
            "dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @service-endpoints",
            "dnat ip to meta l4proto . th dport . numgen random mod 1 map @nodeport-endpoints",
        ] {
            assert!(rule(text).is_some(), "{text}");
        }
        assert!(rule("counter").is_none());
        assert_eq!(
            rule("numgen random mod 3 == 0 meta l4proto tcp dnat to 10.244.1.2:8080")
                .unwrap()
                .len(),
            7
        );
    }

    #[test]
    fn keys_are_four_bytes_per_field() {
        assert_eq!(
            key("service-ips", "10.96.0.10 . udp . 53").unwrap(),
            vec![10, 96, 0, 10, 17, 0, 0, 0, 0, 53, 0, 0]
        );
        assert_eq!(
            key("service-nodeports", "tcp . 30080").unwrap(),
            vec![6, 0, 0, 0, 0x75, 0x80, 0, 0]
        );
        assert_eq!(key("hairpin", "10.0.0.1 . 10.0.0.1").unwrap().len(), 8);
        assert_eq!(
            key("service-endpoints", "10.96.0.10 . udp . 53 . 2").unwrap(),
            [
                vec![10, 96, 0, 10, 17, 0, 0, 0, 0, 53, 0, 0],
                2u32.to_ne_bytes().to_vec()
            ]
            .concat()
        );
        assert_eq!(
            key("endpoint", "10.244.1.2 . 8080").unwrap(),
            vec![10, 244, 1, 2, 0x1f, 0x90, 0, 0]
        );
        assert!(key("cluster-cidrs", "10.244.0.0/16").is_none());
    }
}
