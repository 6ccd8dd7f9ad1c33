//! The plugin's nftables rules, in a table of its own (`inet strait-cni`):
//! masquerade for `ipMasq` and DNAT for `portMappings`. Per-pod state lives
//! in map and set elements keyed by the pod's address, so that ADD and DEL
//! change elements only, each in one atomic transaction, and concurrent ADDs
//! never fight over rules.

use std::fmt::Write;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::ident;
use crate::types::PortMapping;

const TABLE: &str = "inet strait-cni";

/// Declarations every transaction starts with; `add` of what exists is a
/// no-op, and the base chains' rules are rewritten whole (flush + add) so
/// they are the same however many times this runs.
fn skeleton(out: &mut String) {
    let t = TABLE;
    let _ = writeln!(out, "add table {t}");
    for (map, ty) in [
        ("masq4", "ipv4_addr : verdict"),
        ("masq6", "ipv6_addr : verdict"),
        (
            "hostports4",
            "inet_proto . inet_service : ipv4_addr . inet_service",
        ),
        (
            "hostip_ports4",
            "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
        ),
    ] {
        let _ = writeln!(out, "add map {t} {map} {{ type {ty}; }}");
    }
    let _ = writeln!(
        out,
        "add set {t} hairpin4 {{ type ipv4_addr . ipv4_addr; }}"
    );
    let _ = writeln!(
        out,
        "add chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"
    );
    let _ = writeln!(
        out,
        "add chain {t} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}"
    );
    // nft 1.0.6 wants a numeric priority in output chains.
    let _ = writeln!(
        out,
        "add chain {t} output {{ type nat hook output priority -100; policy accept; }}"
    );
    let _ = writeln!(out, "add chain {t} hostports");
    let _ = writeln!(out, "flush chain {t} postrouting");
    // A pod reaching its own hostPort, and localhost reaching a hostPort,
    // must come back through the node: masquerade them.
    let _ = writeln!(
        out,
        "add rule {t} postrouting ct status dnat ip saddr . ip daddr @hairpin4 masquerade"
    );
    let _ = writeln!(
        out,
        "add rule {t} postrouting ct status dnat ip saddr 127.0.0.0/8 masquerade"
    );
    let _ = writeln!(out, "add rule {t} postrouting ip saddr vmap @masq4");
    let _ = writeln!(out, "add rule {t} postrouting ip6 saddr vmap @masq6");
    for hook in ["prerouting", "output"] {
        let _ = writeln!(out, "flush chain {t} {hook}");
        let _ = writeln!(
            out,
            "add rule {t} {hook} fib daddr type local jump hostports"
        );
    }
    let _ = writeln!(out, "flush chain {t} hostports");
    let _ = writeln!(out, "add rule {t} hostports meta nfproto ipv4 meta l4proto {{ tcp, udp, sctp }} dnat ip to ip daddr . meta l4proto . th dport map @hostip_ports4");
    let _ = writeln!(out, "add rule {t} hostports meta nfproto ipv4 meta l4proto {{ tcp, udp, sctp }} dnat ip to meta l4proto . th dport map @hostports4");
}

/// The masquerade chain of one network: everything leaving the pod network
/// except to the network itself and to multicast, as the bridge plugin does.
fn masq_chain(out: &mut String, network: &str, subnets: &[IpNet]) -> String {
    let chain = masq_chain_name(network);
    let _ = writeln!(out, "add chain {TABLE} {chain}");
    let _ = writeln!(out, "flush chain {TABLE} {chain}");
    for net in subnets {
        let (family, mcast) = if net.addr().is_ipv4() {
            ("ip", "224.0.0.0/4")
        } else {
            ("ip6", "ff00::/8")
        };
        let _ = writeln!(out, "add rule {TABLE} {chain} {family} daddr {net} return");
        let _ = writeln!(
            out,
            "add rule {TABLE} {chain} {family} daddr {mcast} return"
        );
    }
    let _ = writeln!(out, "add rule {TABLE} {chain} masquerade");
    chain
}

/// The network's masquerade chain: named from a digest of the network name,
/// never from the name itself (input stays out of nft text).
fn masq_chain_name(network: &str) -> String {
    format!("masq-{}", ident::network_key(network))
}

fn proto(p: &str) -> &'static str {
    match p.to_ascii_lowercase().as_str() {
        "udp" => "udp",
        "sctp" => "sctp",
        _ => "tcp",
    }
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
    fn elements(&self, out: &mut String, chain: Option<&str>, verb: &str) {
        // The key is ours (hex digits); anything else would be a bug that
        // could open the nft grammar to input: refuse to write it.
        let key = if self.key.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.key.as_str()
        } else {
            ""
        };
        let comment = |verb: &str| {
            if verb == "add" && !key.is_empty() {
                format!(" comment \"{key}\"")
            } else {
                String::new()
            }
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
                let value = if verb == "add" {
                    format!(" : jump {chain}")
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "{verb} element {TABLE} {map} {{ {}{}{value} }}",
                    ip.addr(),
                    comment(verb)
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
            let value = if verb == "add" {
                format!(" : {v4} . {}", pm.container_port)
            } else {
                String::new()
            };
            // The parsed address, not the text it came in: only nft's own
            // rendering of an address reaches the script.
            match pm
                .host_ip
                .as_deref()
                .and_then(|h| h.parse::<std::net::Ipv4Addr>().ok())
                .filter(|h| !h.is_unspecified())
            {
                Some(host_ip) => {
                    let _ = writeln!(
                        out,
                        "{verb} element {TABLE} hostip_ports4 {{ {host_ip} . {p} . {}{}{value} }}",
                        pm.host_port,
                        comment(verb)
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{verb} element {TABLE} hostports4 {{ {p} . {}{}{value} }}",
                        pm.host_port,
                        comment(verb)
                    );
                }
            }
        }
        if !self.port_mappings.is_empty() {
            let _ = writeln!(
                out,
                "{verb} element {TABLE} hairpin4 {{ {v4} . {v4}{} }}",
                comment(verb)
            );
        }
    }

    /// ADD when the table is in place: the pod's elements only. Fails (and
    /// changes nothing) when the table or the network's chain is missing.
    pub fn fast_add_script(&self) -> String {
        self.fast_script("add")
    }

    /// ADD from scratch: the whole table, rewritten, plus the elements.
    pub fn full_add_script(&self, subnets: &[IpNet]) -> String {
        self.full_script(subnets, &["add"])
    }

    /// DEL when the elements are there.
    pub fn fast_del_script(&self) -> String {
        self.fast_script("delete")
    }

    /// DEL whatever is there: adding first makes deleting succeed whether or
    /// not the elements existed (nft 1.0.6 has no `destroy`).
    pub fn full_del_script(&self, subnets: &[IpNet]) -> String {
        self.full_script(subnets, &["add", "delete"])
    }

    fn fast_script(&self, verb: &str) -> String {
        let mut out = String::new();
        self.elements(&mut out, None, verb);
        out
    }

    /// The table rewritten, then the pod's elements under each verb in turn.
    fn full_script(&self, subnets: &[IpNet], verbs: &[&str]) -> String {
        let mut out = String::new();
        skeleton(&mut out);
        let chain = self
            .masquerade
            .then(|| masq_chain(&mut out, self.network, subnets));
        for verb in verbs {
            self.elements(&mut out, chain.as_deref(), verb);
        }
        out
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
