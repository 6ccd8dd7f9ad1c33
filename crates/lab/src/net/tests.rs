//! The lab's network built against the fake kernel: what each node gets
//! (devices, MTUs, addresses, routes, neighbour and FDB entries, sysctls)
//! for both backends, without root.

use std::future::Future;

use strait_linux::fake::FakeKernel;

use super::*;
use crate::layout::Backend;

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

/// The controller gives a node its underlay and what kubeadm asks of a
/// node, and nothing of the overlay: the node's agent builds that (`strait
/// agent --overlay`, tested in crates/agent/tests/overlay_netns.rs), for
/// either backend.
#[test]
fn a_node_gets_its_underlay_and_the_overlay_is_its_agents() {
    for backend in [Backend::Vxlan, Backend::HostGw] {
        let kernel = build_fake(&config(3, backend));
        assert_eq!(
            kernel.describe("node2"),
            [
                "addr eth0 172.18.0.3/16",
                "link eth0 veth mtu 1500 up peer in underlay",
                "link lo loopback mtu 65536 up",
                "route 0.0.0.0/0 via 172.18.0.1 dev eth0",
                "sysctl net.bridge.bridge-nf-call-iptables = 1",
                "sysctl net.ipv4.ip_forward = 1",
            ]
        );
    }
    // The pods leave room for VXLAN's headers only when it is used.
    assert_eq!(config(3, Backend::HostGw).pod_mtu(), 1500);
    assert_eq!(config(3, Backend::Vxlan).pod_mtu(), 1450);
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
