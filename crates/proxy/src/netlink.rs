//! Partial syncs over nf_tables netlink. The nft text stays the one source
//! of truth (it is what `--dry-run` prints and what full syncs load); this
//! translates the small grammar the renderer emits into expressions. Any
//! step it does not know returns `None`, and the sync goes through `nft`.

use std::net::{IpAddr, SocketAddr};

use strait_linux::{Batch, Data, Expr, NlVerdict, REG32_00, REG_1, REG_2, REG_VERDICT};

use crate::plan::Family;
use crate::sync::Op;

/// The batch for `ops` in `family`'s table, if every step can be encoded.
pub fn batch(ops: &[Op], family: Family) -> Option<Batch> {
    let mut batch = match family {
        Family::V4 => Batch::new("strait"),
        Family::V6 => Batch::new_ipv6("strait"),
    };
    let t = Translator { family };
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
            Op::AddRule { chain, rule: text } => batch.add_rule(chain, &t.rule(text)?),
            Op::DeleteElements { set, keys } => {
                let keys: Option<Vec<Vec<u8>>> = keys.iter().map(|k| t.key(set, k)).collect();
                batch.delete_elements(set, &keys?);
            }
            Op::AddElements { set, elements } => {
                let mut encoded = Vec::new();
                for (k, v) in elements {
                    let value = if v.is_empty() {
                        None
                    } else if set.ends_with("-endpoints") {
                        Some(Data::Value(t.key("endpoint", v)?))
                    } else {
                        Some(Data::Verdict(verdict(v)?))
                    };
                    encoded.push((t.key(set, k)?, value));
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

/// The translation for one family's table.
struct Translator {
    family: Family,
}

impl Translator {
    /// `ip` or `ip6`, as the rules spell the family.
    fn ip(&self) -> &'static str {
        match self.family {
            Family::V4 => "ip ",
            Family::V6 => "ip6 ",
        }
    }

    /// Where the source and destination addresses are in the network header.
    fn saddr(&self) -> (u32, u32) {
        match self.family {
            Family::V4 => (12, 4),
            Family::V6 => (8, 16),
        }
    }

    /// The source address into `REG_1`.
    fn load_saddr(&self) -> Expr {
        let (offset, len) = self.saddr();
        Expr::NetworkPayload {
            offset,
            len,
            dreg: REG_1,
        }
    }

    fn daddr(&self) -> (u32, u32) {
        match self.family {
            Family::V4 => (16, 4),
            Family::V6 => (24, 16),
        }
    }

    fn address(&self, text: &str) -> Option<Vec<u8>> {
        match (self.family, text.parse::<IpAddr>().ok()?) {
            (Family::V4, IpAddr::V4(ip)) => Some(ip.octets().to_vec()),
            (Family::V6, IpAddr::V6(ip)) => Some(ip.octets().to_vec()),
            _ => None,
        }
    }

    /// Keys of concatenations take 4 bytes per field (16 for an IPv6
    /// address), as registers do.
    fn key(&self, set: &str, text: &str) -> Option<Vec<u8>> {
        let parts: Vec<&str> = text.split(" . ").collect();
        let ip = |s: &str| self.address(s);
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
    fn rule(&self, text: &str) -> Option<Vec<Expr>> {
        if let Some(r) = text.strip_prefix(&format!("dnat {}to ", self.ip())) {
            return self.dnat_by_slot(r);
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
        if let Some(r) = rest
            .strip_prefix(self.ip())
            .and_then(|r| r.strip_prefix("saddr "))
        {
            let (inverted, r) = match r.strip_prefix("!= ") {
                Some(r) => (true, r),
                None => (false, r),
            };
            let (set, r) = r.strip_prefix('@')?.split_once(' ')?;
            exprs.push(self.load_saddr());
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
            let set = r.strip_suffix(&format!(" {{ {}saddr }}", self.ip()))?;
            exprs.push(self.load_saddr());
            exprs.push(Expr::DynsetUpdate {
                set: set.to_owned(),
                sreg_key: REG_1,
            });
            return Some(exprs);
        }
        if let Some(r) = rest.strip_prefix("meta l4proto ") {
            let (p, target) = r.split_once(" dnat to ")?;
            let target: SocketAddr = target.parse().ok()?;
            exprs.push(Expr::MetaL4Proto { dreg: REG_1 });
            exprs.push(Expr::Cmp {
                sreg: REG_1,
                equal: true,
                data: vec![proto(p)?],
            });
            exprs.push(Expr::Immediate {
                dreg: REG_1,
                data: Data::Value(self.address(&target.ip().to_string())?),
            });
            exprs.push(Expr::Immediate {
                dreg: REG_2,
                data: Data::Value(target.port().to_be_bytes().to_vec()),
            });
            exprs.push(Expr::Dnat {
                ipv6: self.family == Family::V6,
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
    /// the key's fields in consecutive 4-byte registers, the endpoint's
    /// address and port looked up into the first ones, then DNAT.
    fn dnat_by_slot(&self, text: &str) -> Option<Vec<Expr>> {
        let (key, set) = text.split_once(" map @")?;
        let (fields, modulus) = key.split_once(" . numgen random mod ")?;
        let daddr = format!("{}daddr", self.ip());
        let mut next = REG32_00;
        let mut exprs = Vec::new();
        for field in fields.split(" . ") {
            let dreg = next;
            exprs.push(if field == daddr {
                let (offset, len) = self.daddr();
                next += len / 4;
                Expr::NetworkPayload { offset, len, dreg }
            } else if field == "meta l4proto" {
                next += 1;
                Expr::MetaL4Proto { dreg }
            } else if field == "th dport" {
                next += 1;
                Expr::TransportPayload {
                    offset: 2,
                    len: 2,
                    dreg,
                }
            } else {
                return None;
            });
        }
        exprs.push(Expr::NumgenRandom {
            dreg: next,
            modulus: modulus.parse().ok()?,
        });
        exprs.push(Expr::MapLookup {
            set: set.to_owned(),
            sreg: REG32_00,
            dreg: REG32_00,
        });
        // The value is the address, then the port in the next register.
        let address_registers = self.daddr().1 / 4;
        exprs.push(Expr::Dnat {
            ipv6: self.family == Family::V6,
            addr: REG32_00,
            port: REG32_00 + address_registers,
        });
        Some(exprs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: Translator = Translator { family: Family::V4 };
    const V6: Translator = Translator { family: Family::V6 };

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
            assert!(V4.rule(text).is_some(), "{text}");
            let v6 = text
                .replace("ip ", "ip6 ")
                .replace("10.244.1.2:", "[fd00::2]:")
                .replace("10.244.1.3:", "[fd00::3]:");
            assert!(V6.rule(&v6).is_some(), "{v6}");
        }
        assert!(V4.rule("counter").is_none());
        // A rule of the other family is not guessed at.
        assert!(V6.rule("meta l4proto udp dnat to 10.244.1.3:53").is_none());
        assert_eq!(
            V4.rule("numgen random mod 3 == 0 meta l4proto tcp dnat to 10.244.1.2:8080")
                .unwrap()
                .len(),
            7
        );
    }

    #[test]
    fn slot_lookups_use_consecutive_registers_per_family() {
        let v4 = V4
            .rule("dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @service-endpoints")
            .unwrap();
        assert_eq!(
            v4.last(),
            Some(&Expr::Dnat {
                ipv6: false,
                addr: REG32_00,
                port: REG32_00 + 1
            })
        );
        let v6 = V6
            .rule("dnat ip6 to ip6 daddr . meta l4proto . th dport . numgen random mod 3 map @service-endpoints")
            .unwrap();
        // The 16-byte address takes four registers; l4proto, port, slot follow.
        assert_eq!(
            v6[3],
            Expr::NumgenRandom {
                dreg: REG32_00 + 6,
                modulus: 3
            }
        );
        assert_eq!(
            v6.last(),
            Some(&Expr::Dnat {
                ipv6: true,
                addr: REG32_00,
                port: REG32_00 + 4
            })
        );
    }

    #[test]
    fn keys_are_four_bytes_per_field() {
        assert_eq!(
            V4.key("service-ips", "10.96.0.10 . udp . 53").unwrap(),
            vec![10, 96, 0, 10, 17, 0, 0, 0, 0, 53, 0, 0]
        );
        assert_eq!(
            V4.key("service-nodeports", "tcp . 30080").unwrap(),
            vec![6, 0, 0, 0, 0x75, 0x80, 0, 0]
        );
        assert_eq!(V4.key("hairpin", "10.0.0.1 . 10.0.0.1").unwrap().len(), 8);
        assert_eq!(
            V4.key("service-endpoints", "10.96.0.10 . udp . 53 . 2")
                .unwrap(),
            [
                vec![10, 96, 0, 10, 17, 0, 0, 0, 0, 53, 0, 0],
                2u32.to_ne_bytes().to_vec()
            ]
            .concat()
        );
        assert_eq!(
            V4.key("endpoint", "10.244.1.2 . 8080").unwrap(),
            vec![10, 244, 1, 2, 0x1f, 0x90, 0, 0]
        );
        assert_eq!(
            V6.key("service-endpoints", "fd00::a . tcp . 80 . 0")
                .unwrap()
                .len(),
            28
        );
        assert_eq!(V6.key("endpoint", "fd00::2 . 80").unwrap().len(), 20);
        assert!(V6.key("cluster-ips", "10.96.0.1").is_none());
        assert!(V4.key("cluster-cidrs", "10.244.0.0/16").is_none());
    }
}
