//! The lab's wiring: an underlay bridge in a namespace of its own, a node
//! namespace per node attached to it; the nodes' agents join their pod
//! ranges by VXLAN or by plain routes (host-gw), as flannel does.

use std::future::Future;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use strait_linux::{NetNs, NetOps, Netlink};
use strait_nft::{Chain, ChainType, Expr, Family, Field, Hook, Priority, Table, Value};

use crate::layout::{LabConfig, Layout};
use crate::{Error, Result};

/// The node's own table: traffic leaving the pod network for the underlay
/// is masqueraded; pod to pod, across nodes too, keeps its source.
pub fn masquerade_table(pod_cidr: Ipv4Net) -> Result<Table> {
    let mut table = Table::new(Family::Ip, "strait-lab");
    let pods = Value::Net(pod_cidr.into());
    table
        .chain(
            "postrouting",
            Chain::base(ChainType::Nat, Hook::Postrouting, Priority::Srcnat),
        )
        .rule(vec![
            Expr::eq(Field::IpSaddr, pods.clone()),
            Expr::ne(Field::IpDaddr, pods),
            Expr::eq(Field::Oifname, Value::ifname("eth0")?),
            Expr::Masquerade {
                fully_random: false,
            },
        ]);
    table.validate()?;
    Ok(table)
}

/// Run `f` with a netlink connection inside `ns`: on a thread of its own that
/// entered the namespace, so the socket belongs to it, with a runtime of its
/// own for the connection. An error names the namespace.
fn netlink_in<T, F, Fut>(ns: &NetNs, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let path = ns.path().display().to_string();
    let out = ns.run(move || -> Result<T> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(crate::error::io("start a netlink runtime"))?;
        runtime.block_on(async move { f(Netlink::connect()?).await })
    })?;
    out.map_err(|e| Error::Step(format!("in {path}: {e}")))
}

async fn index_of<N: NetOps>(nl: &N, name: &str) -> Result<u32> {
    nl.link_by_name(name)
        .await?
        .map(|l| l.index)
        .ok_or_else(|| Error::Step(format!("link {name} is missing")))
}

fn open_or_create(name: &str) -> Result<NetNs> {
    match NetNs::open(format!("/run/netns/{name}")) {
        Ok(ns) => Ok(ns),
        Err(_) => Ok(NetNs::create(name)?),
    }
}

/// Build the underlay and every node, all over netlink: no `ip` or `bridge`
/// process, one thread per namespace.
pub fn build(layout: &Layout, config: &LabConfig) -> Result<Vec<NetNs>> {
    let underlay = open_or_create(&layout.underlay_ns())?;
    let mut nodes = Vec::new();
    for i in 0..config.nodes {
        nodes.push(open_or_create(&layout.node_ns(i))?);
    }
    // The underlay: a bridge with the gateway address, and one veth per
    // node whose other end is created directly in the node as `eth0`.
    let node_fds: Vec<i32> = nodes.iter().map(|ns| ns.fd()).collect();
    netlink_in(&underlay, move |nl| async move {
        wire_underlay(&nl, &node_fds).await
    })?;
    for (i, ns) in nodes.iter().enumerate() {
        let config = config.clone();
        netlink_in(ns, move |nl| async move {
            wire_node(&nl, &config, i).await?;
            masquerade(&config)
        })?;
    }
    Ok(nodes)
}

/// The underlay, from inside its namespace: a bridge with the gateway
/// address, and one veth per node (`node_fds`, in order) whose other end is
/// created directly in the node as `eth0`.
async fn wire_underlay<N: NetOps>(nl: &N, node_fds: &[i32]) -> Result<()> {
    let lo = index_of(nl, "lo").await?;
    nl.set_up(lo).await?;
    let br0 = nl.ensure_bridge("br0", None).await?.index;
    nl.add_address_without_broadcast(br0, "172.18.0.1/16".parse().expect("an address"))
        .await?;
    for (i, fd) in node_fds.iter().enumerate() {
        let uplink = format!("u-node{}", i + 1);
        nl.add_veth(&uplink, "eth0", *fd, None).await?;
        let index = index_of(nl, &uplink).await?;
        nl.set_up_in(index, Some(br0)).await?;
    }
    Ok(())
}

/// Node `i`, from inside its namespace: its underlay address and default
/// route, and what kubeadm asks of a node.
async fn wire_node<N: NetOps>(nl: &N, config: &LabConfig, i: usize) -> Result<()> {
    let node_ip = config.node_ip(i);
    let lo = index_of(nl, "lo").await?;
    nl.set_up(lo).await?;
    let eth0 = index_of(nl, "eth0").await?;
    nl.add_address_without_broadcast(eth0, Ipv4Net::new(node_ip, 16).expect("a /16").into())
        .await?;
    nl.set_up(eth0).await?;
    let any = Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("0/0");
    nl.add_route_v4(any, Ipv4Addr::new(172, 18, 0, 1), eth0, false)
        .await?;
    // What kubeadm requires of a node, set here explicitly: new namespaces
    // inherit some of the host's values and not others.
    nl.write_sysctl("net.ipv4.ip_forward", "1")?;
    nl.write_sysctl("net.bridge.bridge-nf-call-iptables", "1")?;
    // The way to the other nodes' pod ranges (VXLAN or host-gw) is the
    // node agent's overlay part, from the Nodes' flannel annotations, as
    // on a production node: `strait agent --overlay`.
    Ok(())
}

/// Program the node's masquerade table. Run in the node's namespace.
/// Over netlink; through `nft` only if netlink refuses.
fn masquerade(config: &LabConfig) -> Result<()> {
    let table = masquerade_table(config.pod_cidr)?;
    let sent = strait_nft::netlink::Socket::open().and_then(|mut s| s.replace(&table));
    if let Err(e) = sent {
        tracing::debug!("netlink refused the node's table ({e}); trying nft");
        strait_linux::nft_apply(&strait_nft::text::table_script(&table))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
