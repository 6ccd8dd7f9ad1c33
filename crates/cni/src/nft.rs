//! The plugin's nftables rules, in a table of its own (`inet strait-cni`):
//! masquerade for `ipMasq` and DNAT for `portMappings`. Per-pod state lives
//! in map and set elements keyed by the pod's address, so that ADD and DEL
//! change elements only, each in one atomic transaction, and concurrent ADDs
//! never fight over rules.

use std::fmt::Write;
use std::net::IpAddr;

use ipnet::IpNet;

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
    let chain = format!("masq-{}", chain_safe(network));
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

fn chain_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
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
    pub owner: String,
    pub ips: &'a [IpNet],
    pub masquerade: bool,
    pub port_mappings: &'a [PortMapping],
}

impl Entries<'_> {
    fn elements(&self, out: &mut String, chain: Option<&str>, verb: &str) {
        let owner = &self.owner;
        let comment = |verb: &str| {
            if verb == "add" {
                format!(" comment \"{owner}\"")
            } else {
                String::new()
            }
        };
        if self.masquerade {
            let chain = chain
                .map(str::to_owned)
                .unwrap_or_else(|| format!("masq-{}", chain_safe(self.network)));
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
            match pm
                .host_ip
                .as_deref()
                .filter(|h| !h.is_empty() && *h != "0.0.0.0")
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
