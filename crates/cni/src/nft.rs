//! The plugin's nftables rules, in a table of its own (`inet strait-cni`):
//! masquerade for `ipMasq` and DNAT for `portMappings`. Per-pod state lives
//! in map and set elements keyed by the pod's address, so that ADD and DEL
//! change elements only, each in one atomic transaction, and concurrent ADDs
//! never fight over rules.

use std::net::IpAddr;

use ipnet::IpNet;
use strait_nft::{
    addr_type, ct_status, Chain, ChainType, DataType, Element, ElementValue, Expr, Family, Field,
    Hook, MapData, Op, Priority, Rule, Set, Transaction, Value, Verdict, L3,
};

use crate::ident;
use crate::types::PortMapping;

const TABLE: &str = "strait-cni";

fn rule(chain: &str, exprs: Vec<Expr>) -> Op {
    Op::AddRule {
        chain: chain.to_owned(),
        rule: Rule::new(exprs),
    }
}

/// Declarations every transaction starts with; `add` of what exists is a
/// no-op, and the base chains' rules are rewritten whole (flush + add) so
/// they are the same however many times this runs.
fn skeleton(tx: &mut Transaction) {
    use DataType::{InetProto, InetService, Ipv4Addr, Ipv6Addr};
    tx.ops.push(Op::AddTable);
    for (name, set) in [
        ("masq4", Set::map(&[Ipv4Addr], MapData::Verdict)),
        ("masq6", Set::map(&[Ipv6Addr], MapData::Verdict)),
        (
            "hostports4",
            Set::map(
                &[InetProto, InetService],
                MapData::Value(vec![Ipv4Addr, InetService]),
            ),
        ),
        (
            "hostip_ports4",
            Set::map(
                &[Ipv4Addr, InetProto, InetService],
                MapData::Value(vec![Ipv4Addr, InetService]),
            ),
        ),
        ("hairpin4", Set::new(&[Ipv4Addr, Ipv4Addr])),
    ] {
        tx.ops.push(Op::AddSet {
            name: name.into(),
            set,
        });
    }
    for (name, hook, priority) in [
        ("postrouting", Hook::Postrouting, Priority::Srcnat),
        ("prerouting", Hook::Prerouting, Priority::Dstnat),
        // nft 1.0.6 wants a numeric priority in output chains.
        ("output", Hook::Output, Priority::Value(-100)),
    ] {
        tx.ops.push(Op::AddChain {
            name: name.into(),
            base: Chain::base(ChainType::Nat, hook, priority).base,
        });
    }
    tx.ops.push(Op::AddChain {
        name: "hostports".into(),
        base: None,
    });
    tx.ops.push(Op::FlushChain("postrouting".into()));
    // A pod reaching its own hostPort, and localhost reaching a hostPort,
    // must come back through the node: masquerade them.
    let dnat = || Expr::eq(Field::CtStatus, Value::CtStatus(ct_status::DNAT));
    tx.ops.push(rule(
        "postrouting",
        vec![
            dnat(),
            Expr::lookup(&[Field::IpSaddr, Field::IpDaddr], "hairpin4"),
            Expr::Masquerade {
                fully_random: false,
            },
        ],
    ));
    tx.ops.push(rule(
        "postrouting",
        vec![
            dnat(),
            Expr::eq(
                Field::IpSaddr,
                Value::Net("127.0.0.0/8".parse().expect("a network")),
            ),
            Expr::Masquerade {
                fully_random: false,
            },
        ],
    ));
    tx.ops.push(rule(
        "postrouting",
        vec![Expr::vmap(&[Field::IpSaddr], "masq4")],
    ));
    tx.ops.push(rule(
        "postrouting",
        vec![Expr::vmap(&[Field::Ip6Saddr], "masq6")],
    ));
    for hook in ["prerouting", "output"] {
        tx.ops.push(Op::FlushChain(hook.into()));
        tx.ops.push(rule(
            hook,
            vec![
                Expr::eq(Field::FibDaddrType, Value::AddrType(addr_type::LOCAL)),
                Expr::jump("hostports"),
            ],
        ));
    }
    tx.ops.push(Op::FlushChain("hostports".into()));
    for (key, map) in [
        (
            vec![Field::IpDaddr, Field::L4Proto, Field::ThDport],
            "hostip_ports4",
        ),
        (vec![Field::L4Proto, Field::ThDport], "hostports4"),
    ] {
        tx.ops.push(rule(
            "hostports",
            vec![
                Expr::eq(Field::NfProto, Value::NfProto(L3::V4)),
                Expr::OneOf {
                    field: Field::L4Proto,
                    values: vec![Value::TCP, Value::UDP, Value::SCTP],
                },
                Expr::DnatMap {
                    l3: L3::V4,
                    key,
                    map: map.into(),
                },
            ],
        ));
    }
}

/// The masquerade chain of one network: everything leaving the pod network
/// except to the network itself and to multicast, as the bridge plugin does.
fn masq_chain(tx: &mut Transaction, network: &str, subnets: &[IpNet]) -> String {
    let chain = masq_chain_name(network);
    tx.ops.push(Op::AddChain {
        name: chain.clone(),
        base: None,
    });
    tx.ops.push(Op::FlushChain(chain.clone()));
    for net in subnets {
        let (l3, mcast) = if net.addr().is_ipv4() {
            (L3::V4, "224.0.0.0/4")
        } else {
            (L3::V6, "ff00::/8")
        };
        for to in [*net, mcast.parse().expect("a network")] {
            tx.ops.push(rule(
                &chain,
                vec![Expr::eq(Field::daddr(l3), Value::Net(to)), Expr::ret()],
            ));
        }
    }
    tx.ops.push(rule(
        &chain,
        vec![Expr::Masquerade {
            fully_random: false,
        }],
    ));
    chain
}

/// The network's masquerade chain: named from a digest of the network name,
/// never from the name itself (input stays out of nft text).
fn masq_chain_name(network: &str) -> String {
    format!("masq-{}", ident::network_key(network))
}

fn proto(p: &str) -> Value {
    match p.to_ascii_lowercase().as_str() {
        "udp" => Value::UDP,
        "sctp" => Value::SCTP,
        _ => Value::TCP,
    }
}

/// Adding or deleting the elements of an attachment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Add,
    Delete,
}

/// What one attachment has in the table.
pub struct Entries<'a> {
    pub network: &'a str,
    /// The attachment's derived key ([`ident::attachment_key`]), hex only:
    /// what the elements' comments say, so that an element can be traced to
    /// its state file without any input reaching nft text.
    pub key: String,
    pub ips: &'a [IpNet],
    pub masquerade: bool,
    pub port_mappings: &'a [PortMapping],
}

impl Entries<'_> {
    fn elements(&self, tx: &mut Transaction, chain: Option<&str>, verb: Verb) {
        // The key is ours (hex digits); anything else would be a bug: leave
        // the comment out rather than write it.
        let comment = (verb == Verb::Add
            && !self.key.is_empty()
            && self.key.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| self.key.clone());
        let mut push = |set: &str, key: Vec<Value>, value: Option<ElementValue>| match verb {
            Verb::Add => tx.ops.push(Op::AddElements {
                set: set.into(),
                elements: vec![(
                    key,
                    Element {
                        value,
                        comment: comment.clone(),
                    },
                )],
            }),
            Verb::Delete => tx.ops.push(Op::DeleteElements {
                set: set.into(),
                keys: vec![key],
            }),
        };
        if self.masquerade {
            let chain = chain
                .map(str::to_owned)
                .unwrap_or_else(|| masq_chain_name(self.network));
            for ip in self.ips {
                let map = if ip.addr().is_ipv4() {
                    "masq4"
                } else {
                    "masq6"
                };
                push(
                    map,
                    vec![Value::Addr(ip.addr())],
                    Some(ElementValue::Verdict(Verdict::Jump(chain.clone()))),
                );
            }
        }
        let Some(v4) = self
            .ips
            .iter()
            .find(|ip| ip.addr().is_ipv4())
            .map(|ip| ip.addr())
        else {
            return;
        };
        for pm in self.port_mappings {
            let p = proto(&pm.protocol);
            let value = Some(ElementValue::Data(vec![
                Value::Addr(v4),
                Value::Port(pm.container_port),
            ]));
            // The parsed address, not the text it came in.
            match pm
                .host_ip
                .as_deref()
                .and_then(|h| h.parse::<std::net::Ipv4Addr>().ok())
                .filter(|h| !h.is_unspecified())
            {
                Some(host_ip) => push(
                    "hostip_ports4",
                    vec![
                        Value::Addr(IpAddr::V4(host_ip)),
                        p,
                        Value::Port(pm.host_port),
                    ],
                    value,
                ),
                None => push("hostports4", vec![p, Value::Port(pm.host_port)], value),
            }
        }
        if !self.port_mappings.is_empty() {
            push("hairpin4", vec![Value::Addr(v4), Value::Addr(v4)], None);
        }
    }

    /// ADD when the table is in place: the pod's elements only. Fails (and
    /// changes nothing) when the table or the network's chain is missing.
    pub fn fast_add(&self) -> Transaction {
        self.fast(Verb::Add)
    }

    /// ADD from scratch: the whole table, rewritten, plus the elements.
    pub fn full_add(&self, subnets: &[IpNet]) -> Transaction {
        self.full(subnets, &[Verb::Add])
    }

    /// DEL when the elements are there.
    pub fn fast_del(&self) -> Transaction {
        self.fast(Verb::Delete)
    }

    /// DEL whatever is there: adding first makes deleting succeed whether or
    /// not the elements existed (nft 1.0.6 has no `destroy`).
    pub fn full_del(&self, subnets: &[IpNet]) -> Transaction {
        self.full(subnets, &[Verb::Add, Verb::Delete])
    }

    #[cfg(test)]
    pub fn fast_add_script(&self) -> String {
        strait_nft::text::transaction_script(&self.fast_add())
    }

    #[cfg(test)]
    pub fn full_add_script(&self, subnets: &[IpNet]) -> String {
        strait_nft::text::transaction_script(&self.full_add(subnets))
    }

    #[cfg(test)]
    pub fn fast_del_script(&self) -> String {
        strait_nft::text::transaction_script(&self.fast_del())
    }

    #[cfg(test)]
    pub fn full_del_script(&self, subnets: &[IpNet]) -> String {
        strait_nft::text::transaction_script(&self.full_del(subnets))
    }

    fn fast(&self, verb: Verb) -> Transaction {
        let mut tx = Transaction::new(Family::Inet, TABLE);
        self.elements(&mut tx, None, verb);
        tx
    }

    /// The table rewritten, then the pod's elements under each verb in turn.
    fn full(&self, subnets: &[IpNet], verbs: &[Verb]) -> Transaction {
        let mut tx = Transaction::new(Family::Inet, TABLE);
        skeleton(&mut tx);
        let chain = self
            .masquerade
            .then(|| masq_chain(&mut tx, self.network, subnets));
        for verb in verbs {
            self.elements(&mut tx, chain.as_deref(), *verb);
        }
        tx
    }

    pub fn is_empty(&self) -> bool {
        !self.masquerade && self.port_mappings.is_empty()
    }
}

/// Valid for a hostIP in a mapping: an IPv4 address (IPv6 mappings are not
/// programmed yet and are refused rather than ignored).
pub fn check_mapping(pm: &PortMapping, index: usize) -> crate::error::Result<()> {
    let field = |f: &str| format!("runtimeConfig.portMappings[{index}].{f}");
    if pm.host_port == 0 {
        return Err(crate::error::Error::config(
            &field("hostPort"),
            "must be 1-65535",
        ));
    }
    if pm.container_port == 0 {
        return Err(crate::error::Error::config(
            &field("containerPort"),
            "must be 1-65535",
        ));
    }
    if !matches!(
        pm.protocol.to_ascii_lowercase().as_str(),
        "tcp" | "udp" | "sctp"
    ) {
        return Err(crate::error::Error::config(
            &field("protocol"),
            format!("{:?} is not tcp, udp or sctp", pm.protocol),
        ));
    }
    if let Some(h) = pm.host_ip.as_deref().filter(|h| !h.is_empty()) {
        match h.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => {}
            Ok(IpAddr::V6(_)) => {
                return Err(crate::error::Error::config(
                    &field("hostIP"),
                    "IPv6 host addresses are not supported yet",
                ))
            }
            Err(_) => {
                return Err(crate::error::Error::config(
                    &field("hostIP"),
                    format!("{h:?} is not an IP address"),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ident::attachment_key;

    /// The scripts of a valid but odd attachment: nothing of the container
    /// ID, the interface name or the network name is in them, and every
    /// comment is a key of hex digits.
    #[test]
    fn no_input_reaches_the_nft_text() {
        let network = "Net.with_odd-chars.0";
        let container_id = format!("0.._--X{}", "z".repeat(200));
        let ifname = "e.t-h_0";
        let ips: Vec<IpNet> = vec!["10.9.0.5/24".parse().unwrap()];
        let mappings = vec![PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "TCP".into(),
            host_ip: Some("192.0.2.7".into()),
        }];
        let entries = Entries {
            network,
            key: attachment_key(network, &container_id, ifname),
            ips: &ips,
            masquerade: true,
            port_mappings: &mappings,
        };
        let subnets: Vec<IpNet> = vec!["10.9.0.0/24".parse().unwrap()];
        for script in [
            entries.fast_add_script(),
            entries.full_add_script(&subnets),
            entries.fast_del_script(),
            entries.full_del_script(&subnets),
        ] {
            for input in [network, container_id.as_str(), ifname, "zzzz", "Net", "e.t"] {
                assert!(!script.contains(input), "{input:?} in:\n{script}");
            }
            for (i, part) in script.split("comment \"").enumerate().skip(1) {
                let comment = part.split('"').next().unwrap();
                assert_eq!(comment.len(), 32, "comment {i} in:\n{script}");
                assert!(comment.bytes().all(|b| b.is_ascii_hexdigit()), "{comment}");
            }
            // Every byte is of nft's own vocabulary, addresses and our keys.
            assert!(
                script
                    .bytes()
                    .all(|b| b.is_ascii_graphic() || b == b' ' || b == b'\n'),
                "{script}"
            );
        }
        assert!(entries.fast_add_script().contains("comment \""));
    }

    /// A key that is not hex (a bug elsewhere) is left out, not written.
    #[test]
    fn a_key_that_is_not_hex_is_not_written() {
        let ips: Vec<IpNet> = vec!["10.9.0.5/24".parse().unwrap()];
        let entries = Entries {
            network: "n",
            key: "x\" ; flush ruleset ; \"".into(),
            ips: &ips,
            masquerade: true,
            port_mappings: &[],
        };
        let script = entries.fast_add_script();
        assert!(
            !script.contains("flush") && !script.contains("comment"),
            "{script}"
        );
    }
}
