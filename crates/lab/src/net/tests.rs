//! The lab's network built against the fake kernel: what each node gets
//! (devices, MTUs, addresses, routes, neighbour and FDB entries, sysctls)
//! for both backends, without root.

use std::future::Future;

use strait_linux::fake::{FakeKernel, NetnsState};
use strait_linux::mac_string;

use super::*;

fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn config(nodes: usize, backend: Backend) -> LabConfig {
    LabConfig {
        name: "t".into(),
        nodes,
        backend,
        pod_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".into(),
    }
}

/// Build a lab of `config.nodes` nodes in the fake: the underlay at
/// `underlay`, node `i` at `node{i+1}`.
fn build_fake(config: &LabConfig) -> FakeKernel {
    let kernel = FakeKernel::new();
    let underlay = kernel.add_netns("underlay");
    let nodes: Vec<_> = (0..config.nodes)
        .map(|i| kernel.add_netns(&format!("node{}", i + 1)))
        .collect();
    let fds: Vec<i32> = nodes.iter().map(|n| n.fd()).collect();
    block_on(wire_underlay(&kernel.netlink(&underlay), &fds)).unwrap();
    for (i, node) in nodes.iter().enumerate() {
        block_on(wire_node(&kernel.netlink(node), config, i)).unwrap();
    }
    kernel
}

#[test]
fn the_underlay_is_a_bridge_with_one_port_per_node() {
    let kernel = build_fake(&config(2, Backend::Vxlan));
    assert_eq!(
        kernel.describe("underlay"),
        [
            "addr br0 172.18.0.1/16",
            "link br0 bridge mtu 1500 up",
            "link lo loopback mtu 65536 up",
            "link u-node1 veth mtu 1500 up master br0 peer in node1",
            "link u-node2 veth mtu 1500 up master br0 peer in node2",
        ]
    );
}

#[test]
fn a_vxlan_node_has_flannels_device_routes_neighbours_and_fdb() {
    let kernel = build_fake(&config(2, Backend::Vxlan));
    assert_eq!(
        kernel.describe("node1"),
        [
            "addr eth0 172.18.0.2/16",
            "addr flannel.1 10.244.0.0/32",
            "fdb flannel.1 0a:58:ac:12:00:03 dst 172.18.0.3",
            "link eth0 veth mtu 1500 up peer in underlay",
            "link flannel.1 vxlan mtu 1450 up vni 1 dstport 8472 dev eth0 local 172.18.0.2 nolearning mac 0a:58:ac:12:00:02",
            "link lo loopback mtu 65536 up",
            "neigh flannel.1 10.244.1.0 lladdr 0a:58:ac:12:00:03",
            "route 0.0.0.0/0 via 172.18.0.1 dev eth0",
            "route 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink",
            "sysctl net.bridge.bridge-nf-call-iptables = 1",
            "sysctl net.ipv4.ip_forward = 1",
        ]
    );
}

#[test]
fn a_host_gw_node_routes_the_other_ranges_via_their_nodes() {
    let kernel = build_fake(&config(3, Backend::HostGw));
    assert_eq!(
        kernel.describe("node2"),
        [
            "addr eth0 172.18.0.3/16",
            "link eth0 veth mtu 1500 up peer in underlay",
            "link lo loopback mtu 65536 up",
            "route 0.0.0.0/0 via 172.18.0.1 dev eth0",
            "route 10.244.0.0/24 via 172.18.0.2 dev eth0",
            "route 10.244.2.0/24 via 172.18.0.4 dev eth0",
            "sysctl net.bridge.bridge-nf-call-iptables = 1",
            "sysctl net.ipv4.ip_forward = 1",
        ]
    );
    assert_eq!(config(3, Backend::HostGw).pod_mtu(), 1500);
}

fn eth0_ip(node: &NetnsState) -> std::net::IpAddr {
    let eth0 = node.link("eth0").unwrap().index;
    node.addresses
        .iter()
        .find(|(i, _)| *i == eth0)
        .map(|(_, a)| a.addr())
        .unwrap()
}

/// Across nodes, what one node says of another is what that node is: the
/// MAC its FDB and neighbour entries use is the other VTEP's, the remote
/// the other's underlay address, the route the other's pod range; and the
/// pods' MTU leaves room for the VXLAN headers on the underlay.
#[test]
fn vxlan_nodes_agree_with_each_other() {
    let config = config(4, Backend::Vxlan);
    let kernel = build_fake(&config);
    let nodes: Vec<NetnsState> = (0..4)
        .map(|i| kernel.netns_state(&format!("node{}", i + 1)))
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        let vtep = node.link("flannel.1").unwrap();
        let eth0 = node.link("eth0").unwrap();
        assert_eq!(vtep.mtu + crate::layout::VXLAN_OVERHEAD, eth0.mtu);
        assert_eq!(config.pod_mtu(), vtep.mtu);
        assert_eq!(node.fdb.len(), 3);
        assert_eq!(node.neighbours.len(), 3);
        assert_eq!(node.routes.len(), 4, "default and three ranges");
        for (j, other) in nodes.iter().enumerate().filter(|(j, _)| *j != i) {
            let other_vtep = other.link("flannel.1").unwrap();
            assert_ne!(vtep.mac, other_vtep.mac);
            let remote = eth0_ip(other);
            assert!(
                node.fdb
                    .contains(&(vtep.index, other_vtep.mac, ip4(remote))),
                "node{} has no fdb entry for node{} ({} dst {remote})",
                i + 1,
                j + 1,
                mac_string(&other_vtep.mac)
            );
            let range = config.node_pod_cidr(j);
            let route = node
                .routes
                .iter()
                .find(|r| r.destination == range.into())
                .unwrap_or_else(|| panic!("node{} has no route to {range}", i + 1));
            assert_eq!(route.output, vtep.index);
            assert!(route.onlink);
            let gw = ip4(route.gateway.unwrap());
            assert_eq!(
                node.neighbours.get(&(vtep.index, gw)),
                Some(&other_vtep.mac)
            );
            // The gateway is the address the other VTEP holds.
            assert!(other
                .addresses
                .contains(&(other_vtep.index, Ipv4Net::new(gw, 32).unwrap().into())));
        }
    }
}

fn ip4(ip: std::net::IpAddr) -> Ipv4Addr {
    match ip {
        std::net::IpAddr::V4(v4) => v4,
        std::net::IpAddr::V6(v6) => panic!("{v6} is not IPv4"),
    }
}

/// A node whose underlay link is missing says which link, and stops.
#[test]
fn a_missing_underlay_link_is_named() {
    let kernel = FakeKernel::new();
    let node = kernel.add_netns("node1");
    let err = block_on(wire_node(
        &kernel.netlink(&node),
        &config(1, Backend::Vxlan),
        0,
    ))
    .unwrap_err();
    assert!(err.to_string().contains("link eth0 is missing"), "{err}");
}

#[test]
fn the_node_masquerades_only_what_leaves_the_pod_network() {
    let table = masquerade_table("10.244.0.0/16".parse().unwrap()).unwrap();
    let text = strait_nft::text::table_script(&table);
    assert!(
        text.contains(
            "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 oifname \"eth0\" masquerade\n"
        ),
        "{text}"
    );
    assert!(text.contains("type nat hook postrouting priority srcnat; policy accept;"));
}
