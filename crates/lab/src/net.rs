//! The lab's wiring: an underlay bridge in a namespace of its own, a node
//! namespace per node attached to it, and the pod ranges of the nodes joined
//! by VXLAN (as flannel does) or by plain routes (host-gw).

use std::process::Command;

use strait_linux::NetNs;

use crate::layout::{Backend, LabConfig, Layout};
use crate::{Error, Result};

/// Run `ip …` (or another tool) inside `ns`; an error names the command.
pub fn run_in(ns: &NetNs, args: &[&str]) -> Result<()> {
    let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = ns
        .run(move || Command::new(&owned[0]).args(&owned[1..]).output())?
        .map_err(crate::error::io(format!("run {}", args[0])))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Step(format!(
            "`{}` in {}: {}",
            args.join(" "),
            ns.path().display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn write_sysctl_in(ns: &NetNs, key: &'static str, value: &'static str) -> Result<()> {
    ns.run(move || strait_linux::write_sysctl(key, value))??;
    Ok(())
}

fn open_or_create(name: &str) -> Result<NetNs> {
    match NetNs::open(format!("/run/netns/{name}")) {
        Ok(ns) => Ok(ns),
        Err(_) => Ok(NetNs::create(name)?),
    }
}

/// A VTEP MAC for node `i`: stable, locally administered.
fn vtep_mac(i: usize) -> String {
    format!("0a:58:ac:12:00:{:02x}", i + 2)
}

/// Build the underlay and every node.
pub fn build(layout: &Layout, config: &LabConfig) -> Result<Vec<NetNs>> {
    let underlay = open_or_create(&layout.underlay_ns())?;
    run_in(&underlay, &["ip", "link", "set", "lo", "up"])?;
    run_in(&underlay, &["ip", "link", "add", "br0", "type", "bridge"])?;
    run_in(
        &underlay,
        &["ip", "addr", "add", "172.18.0.1/16", "dev", "br0"],
    )?;
    run_in(&underlay, &["ip", "link", "set", "br0", "up"])?;
    let mut nodes = Vec::new();
    for i in 0..config.nodes {
        let ns = open_or_create(&layout.node_ns(i))?;
        let node_ip = config.node_ip(i);
        let uplink = format!("u-node{}", i + 1);
        run_in(
            &underlay,
            &[
                "ip",
                "link",
                "add",
                &uplink,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &layout.node_ns(i),
            ],
        )?;
        run_in(
            &underlay,
            &["ip", "link", "set", &uplink, "master", "br0", "up"],
        )?;
        run_in(&ns, &["ip", "link", "set", "lo", "up"])?;
        run_in(
            &ns,
            &["ip", "addr", "add", &format!("{node_ip}/16"), "dev", "eth0"],
        )?;
        run_in(&ns, &["ip", "link", "set", "eth0", "up"])?;
        run_in(&ns, &["ip", "route", "add", "default", "via", "172.18.0.1"])?;
        // What kubeadm requires of a node, set here explicitly: new
        // namespaces inherit some of the host's values and not others.
        write_sysctl_in(&ns, "net.ipv4.ip_forward", "1")?;
        write_sysctl_in(&ns, "net.bridge.bridge-nf-call-iptables", "1")?;
        // Traffic leaving the pod network for the underlay is masqueraded;
        // pod to pod, across nodes too, keeps its source.
        let cidr = config.pod_cidr.to_string();
        let script = format!(
            "table ip strait-lab {{\n chain postrouting {{\n  type nat hook postrouting priority srcnat; policy accept;\n  ip saddr {cidr} ip daddr != {cidr} oifname \"eth0\" masquerade\n }}\n}}\n"
        );
        ns.run(move || strait_linux::nft_apply(&script))??;
        nodes.push(ns);
    }
    for (i, ns) in nodes.iter().enumerate() {
        let local = config.node_ip(i).to_string();
        if config.backend == Backend::Vxlan {
            run_in(
                ns,
                &[
                    "ip",
                    "link",
                    "add",
                    "flannel.1",
                    "type",
                    "vxlan",
                    "id",
                    "1",
                    "dstport",
                    "8472",
                    "dev",
                    "eth0",
                    "local",
                    &local,
                    "nolearning",
                ],
            )?;
            run_in(
                ns,
                &[
                    "ip",
                    "link",
                    "set",
                    "flannel.1",
                    "address",
                    &vtep_mac(i),
                    "mtu",
                    &config.pod_mtu().to_string(),
                    "up",
                ],
            )?;
            run_in(
                ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/32", config.node_pod_cidr(i).network()),
                    "dev",
                    "flannel.1",
                ],
            )?;
        }
        for j in 0..config.nodes {
            if j == i {
                continue;
            }
            let remote_cidr = config.node_pod_cidr(j).to_string();
            let remote_ip = config.node_ip(j).to_string();
            match config.backend {
                Backend::HostGw => {
                    run_in(ns, &["ip", "route", "add", &remote_cidr, "via", &remote_ip])?
                }
                Backend::Vxlan => {
                    let gw = config.node_pod_cidr(j).network().to_string();
                    run_in(
                        ns,
                        &[
                            "ip",
                            "route",
                            "add",
                            &remote_cidr,
                            "via",
                            &gw,
                            "dev",
                            "flannel.1",
                            "onlink",
                        ],
                    )?;
                    run_in(
                        ns,
                        &[
                            "ip",
                            "neigh",
                            "replace",
                            &gw,
                            "lladdr",
                            &vtep_mac(j),
                            "dev",
                            "flannel.1",
                            "nud",
                            "permanent",
                        ],
                    )?;
                    run_in(
                        ns,
                        &[
                            "bridge",
                            "fdb",
                            "append",
                            &vtep_mac(j),
                            "dev",
                            "flannel.1",
                            "dst",
                            &remote_ip,
                        ],
                    )?;
                }
            }
        }
    }
    Ok(nodes)
}
