//! kube-proxy's behaviours, checked through the packet tracer over the
//! tables the real planner and renderer produce (`plan` → `render` →
//! `to_table`, exactly what `strait proxy` programs). No kernel, no root.
//!
//! Each case is a packet and what Kubernetes says happens to it; the
//! expected values come from kube-proxy's documented semantics (Service
//! docs, KEP-1669 terminating endpoints, KEP-2086 internalTrafficPolicy,
//! kube-proxy's nftables mode), not from the renderer's output.
//!
//! The cluster is tests/fixtures/proxy-features.yaml (every Service feature
//! on node-1) plus the few Services declared in `EXTRA` below.

use std::net::{IpAddr, SocketAddr};

use strait_model::controllers::{reconcile, ClusterConfig};
use strait_model::{parse_str, ClusterState, Format};
use strait_nft::trace::{self, Fate, Node, Outcome, Packet, Route};
use strait_nft::{ct_state, protocol, Reject, Table, Value};
use strait_proxy::{family_in_use, plan, render, to_table, Family, NodeContext};

/// Services the shared fixture lacks: a dual-stack one, an
/// internalTrafficPolicy: Local one with a local endpoint, a NodePort with
/// internalTrafficPolicy: Local and only a remote endpoint, and an
/// externalTrafficPolicy: Local one whose only local endpoint is
/// terminating (the case KEP-1669 was written for); one whose endpoints
/// are all unusable, and an externalTrafficPolicy: Local one whose local
/// endpoint is not ready.
const EXTRA: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: dual}
spec:
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIP: 10.96.2.1
  clusterIPs: [10.96.2.1, "fd00:96::21"]
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dual-4, labels: {kubernetes.io/service-name: dual}}
addressType: IPv4
ports: [{name: http, port: 80}]
endpoints:
  - {addresses: [10.244.1.30], nodeName: node-1, conditions: {ready: true, serving: true, terminating: false}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dual-6, labels: {kubernetes.io/service-name: dual}}
addressType: IPv6
ports: [{name: http, port: 80}]
endpoints:
  - {addresses: ["fd00:10:244:1::30"], nodeName: node-1, conditions: {ready: true, serving: true, terminating: false}}
  - {addresses: ["fd00:10:244:2::30"], nodeName: node-2, conditions: {ready: true, serving: true, terminating: false}}
---
apiVersion: v1
kind: Service
metadata: {name: itp-here}
spec:
  clusterIP: 10.96.2.2
  internalTrafficPolicy: Local
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: itp-here-1, labels: {kubernetes.io/service-name: itp-here}}
addressType: IPv4
ports: [{name: http, port: 80}]
endpoints:
  - {addresses: [10.244.1.31], nodeName: node-1, conditions: {ready: true, serving: true, terminating: false}}
  - {addresses: [10.244.2.31], nodeName: node-2, conditions: {ready: true, serving: true, terminating: false}}
---
apiVersion: v1
kind: Service
metadata: {name: itp-np}
spec:
  type: NodePort
  clusterIP: 10.96.2.3
  internalTrafficPolicy: Local
  ports: [{name: http, port: 80, nodePort: 30090}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: itp-np-1, labels: {kubernetes.io/service-name: itp-np}}
addressType: IPv4
ports: [{name: http, port: 80}]
endpoints:
  - {addresses: [10.244.2.33], nodeName: node-2, conditions: {ready: true, serving: true, terminating: false}}
---
apiVersion: v1
kind: Service
metadata: {name: term-local}
spec:
  type: NodePort
  clusterIP: 10.96.2.4
  externalTrafficPolicy: Local
  ports: [{name: http, port: 80, nodePort: 30091}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: term-local-1, labels: {kubernetes.io/service-name: term-local}}
addressType: IPv4
ports: [{name: http, port: 80}]
endpoints:
  - {addresses: [10.244.1.34], nodeName: node-1, conditions: {ready: false, serving: true, terminating: true}}
  - {addresses: [10.244.2.34], nodeName: node-2, conditions: {ready: true, serving: true, terminating: false}}
---
apiVersion: v1
kind: Service
metadata: {name: unready}
spec:
  clusterIP: 10.96.2.5
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: unready-1, labels: {kubernetes.io/service-name: unready}}
addressType: IPv4
ports: [{name: http, port: 80}]
endpoints:
  - {addresses: [10.244.1.35], nodeName: node-1, conditions: {ready: false, serving: false, terminating: false}}
  - {addresses: [10.244.2.35], nodeName: node-2, conditions: {ready: false, serving: false, terminating: true}}
---
apiVersion: v1
kind: Service
metadata: {name: etp-unready-local}
spec:
  type: NodePort
  clusterIP: 10.96.2.6
  externalTrafficPolicy: Local
  ports: [{name: http, port: 80, nodePort: 30092}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: etp-unready-local-1, labels: {kubernetes.io/service-name: etp-unready-local}}
addressType: IPv4
ports: [{name: http, port: 80}]
endpoints:
  - {addresses: [10.244.1.36], nodeName: node-1, conditions: {ready: false, serving: false, terminating: false}}
  - {addresses: [10.244.2.36], nodeName: node-2, conditions: {ready: true, serving: true, terminating: false}}
"#;

fn cluster() -> ClusterState {
    let text = format!(
        "{}\n---\n{}",
        include_str!("../../../tests/fixtures/proxy-features.yaml"),
        EXTRA
    );
    let loaded = parse_str("behaviour.yaml", &text, Format::Yaml).expect("manifests parse");
    let desired = ClusterState::from_objects(
        loaded
            .objects
            .into_iter()
            .map(|(o, origin)| (o, Some(origin))),
    )
    .expect("a valid cluster");
    let config = ClusterConfig::default()
        .with_service_cidrs(&["10.96.0.0/12".to_owned(), "fd00:96::/108".to_owned()])
        .expect("service CIDRs");
    reconcile(desired, None, &config).expect("reconciled")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

/// node-1 as kube-proxy sees it (`--cluster-cidr`, `--service-cidr`,
/// default `--nodeport-addresses primary`).
fn context() -> NodeContext {
    NodeContext {
        node_name: "node-1".to_owned(),
        node_ips: vec![ip("172.18.0.2"), ip("fd00:18::2")],
        cluster_cidrs: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:10:244::/56".parse().unwrap(),
        ],
        service_cidrs: vec![
            "10.96.0.0/12".parse().unwrap(),
            "fd00:96::/108".parse().unwrap(),
        ],
        nodeport_addresses: vec![],
    }
}

/// The proxy's tables for node-1, as `strait proxy` programs them.
fn tables(state: &ClusterState) -> Vec<Table> {
    tables_with(state, &context())
}

fn tables_with(state: &ClusterState, ctx: &NodeContext) -> Vec<Table> {
    let planned = plan(state, ctx);
    Family::ALL
        .into_iter()
        .filter(|f| *f == Family::V4 || family_in_use(&planned, *f))
        .map(|f| to_table(f, [&render(&planned, f)]))
        .collect()
}

/// node-1's addresses and routes: pods on cni0, other nodes' pods over
/// flannel.1, the underlay on eth0 (primary IP 172.18.0.2) and a second,
/// non-primary address 192.168.50.2 on eth1.
fn node() -> Node {
    let route = |to: &str, oif: &str, src: Option<&str>| Route {
        to: to.parse().unwrap(),
        oif: oif.to_owned(),
        src: src.map(ip),
    };
    Node {
        local: [
            "172.18.0.2",
            "10.244.1.1",
            "192.168.50.2",
            "fd00:18::2",
            "fd00:10:244:1::1",
        ]
        .into_iter()
        .map(ip)
        .collect(),
        routes: vec![
            route("10.244.1.0/24", "cni0", Some("10.244.1.1")),
            route("10.244.0.0/16", "flannel.1", Some("10.244.1.0")),
            route("172.18.0.0/16", "eth0", Some("172.18.0.2")),
            route("192.168.50.0/24", "eth1", Some("192.168.50.2")),
            route("0.0.0.0/0", "eth0", Some("172.18.0.2")),
            route("fd00:10:244:1::/64", "cni0", Some("fd00:10:244:1::1")),
            route("fd00:10:244::/56", "flannel.1", Some("fd00:10:244:1::")),
            route("::/0", "eth0", Some("fd00:18::2")),
        ],
        sets: Default::default(),
    }
}

const POD: &str = "10.244.1.20"; // a pod on node-1
const CLIENT: &str = "198.51.100.7"; // outside the cluster, inside local-lb's source range
const STRANGER: &str = "192.0.2.99"; // outside the cluster and every source range

fn tcp(iif: &str, from: &str, to: &str) -> Packet {
    packet(protocol::TCP, iif, from, to)
}

fn packet(protocol: u8, iif: &str, from: &str, to: &str) -> Packet {
    let to: SocketAddr = to.parse().expect("addr:port");
    Packet::new(iif, protocol, ip(from), 40000, to.ip(), to.port())
}

/// From a pod of this node.
fn from_pod(to: &str) -> Packet {
    tcp("cni0", POD, to)
}

/// From a client outside the cluster, in on the underlay.
fn from_outside(from: &str, to: &str) -> Packet {
    tcp("eth0", from, to)
}

/// From a process of the node itself (source: the primary IP).
fn from_node(to: &str) -> Packet {
    tcp("lo", "172.18.0.2", to).local()
}

enum Expect {
    /// Translated to these endpoints with these chances; whether each way is
    /// masqueraded (false: the client's address is kept).
    Reaches(&'static [(&'static str, f64, bool)]),
    /// Stopped for certain, by a rule of a chain whose name starts so; with
    /// whether a DNAT happened before.
    Stopped {
        fate: Fate,
        chain: &'static str,
        dnat: bool,
    },
    /// Left alone: no DNAT, no masquerade, this fate.
    Untouched(Fate),
}

struct Case {
    name: &'static str,
    packet: Packet,
    expect: Expect,
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let reset = Fate::Rejected(Reject::TcpReset);
    vec![
        // ClusterIP: every ready endpoint evenly (the not-ready one never),
        // to the targetPort; pod sources keep their address.
        Case {
            name: "clusterip-from-pod-even-unmasqueraded",
            packet: from_pod("10.96.1.1:80"),
            expect: Reaches(&[
                ("10.244.1.2:8080", 1.0 / 3.0, false),
                ("10.244.1.3:8080", 1.0 / 3.0, false),
                ("10.244.2.2:8080", 1.0 / 3.0, false),
            ]),
        },
        // A source outside --cluster-cidr is masqueraded (kube-proxy's
        // "masquerade off-cluster traffic to ClusterIPs").
        Case {
            name: "clusterip-from-outside-masqueraded",
            packet: from_outside(CLIENT, "10.96.1.1:80"),
            expect: Reaches(&[
                ("10.244.1.2:8080", 1.0 / 3.0, true),
                ("10.244.1.3:8080", 1.0 / 3.0, true),
                ("10.244.2.2:8080", 1.0 / 3.0, true),
            ]),
        },
        Case {
            name: "clusterip-from-node-masqueraded",
            packet: from_node("10.96.1.1:80"),
            expect: Reaches(&[
                ("10.244.1.2:8080", 1.0 / 3.0, true),
                ("10.244.1.3:8080", 1.0 / 3.0, true),
                ("10.244.2.2:8080", 1.0 / 3.0, true),
            ]),
        },
        // A port the Service does not have: rejected (kube-proxy rejects
        // invalid ports of ClusterIPs); TCP gets a reset.
        Case {
            name: "clusterip-wrong-port-rejected",
            packet: from_pod("10.96.1.1:81"),
            expect: Stopped {
                fate: reset.clone(),
                chain: "reject-chain",
                dnat: false,
            },
        },
        // No endpoints at all: rejected, so clients fail fast.
        Case {
            name: "no-endpoints-rejected",
            packet: from_pod("10.96.1.3:80"),
            expect: Stopped {
                fate: reset.clone(),
                chain: "reject-chain",
                dnat: false,
            },
        },
        // An address of the Service CIDR no Service holds: dropped, not
        // routed out by the default route.
        Case {
            name: "unallocated-service-ip-dropped",
            packet: from_pod("10.96.5.5:80"),
            expect: Stopped {
                fate: Fate::Dropped,
                chain: "endpoints-check",
                dnat: false,
            },
        },
        // NodePort (externalTrafficPolicy: Cluster) on the node's primary IP:
        // every endpoint, masqueraded (the reply must come back here).
        Case {
            name: "nodeport-on-primary-ip",
            packet: from_outside(CLIENT, "172.18.0.2:30080"),
            expect: Reaches(&[("10.244.1.5:80", 0.5, true), ("10.244.2.5:80", 0.5, true)]),
        },
        // nftables-mode kube-proxy serves NodePorts neither on loopback nor,
        // by default (--nodeport-addresses primary), on other local addresses.
        Case {
            name: "nodeport-not-on-loopback",
            packet: tcp("lo", "127.0.0.1", "127.0.0.1:30080").local(),
            expect: Untouched(Fate::Local),
        },
        Case {
            name: "nodeport-not-on-secondary-address",
            packet: tcp("eth1", "192.168.50.9", "192.168.50.2:30080"),
            expect: Untouched(Fate::Local),
        },
        // externalIPs: like a NodePort with externalTrafficPolicy: Cluster.
        Case {
            name: "external-ip-masqueraded-to-all",
            packet: from_outside(CLIENT, "192.0.2.10:80"),
            expect: Reaches(&[("10.244.1.5:80", 0.5, true), ("10.244.2.5:80", 0.5, true)]),
        },
        // LoadBalancer with loadBalancerSourceRanges and
        // externalTrafficPolicy: Local: an allowed outside client reaches
        // only this node's endpoint and keeps its address...
        Case {
            name: "lb-allowed-source-local-endpoint-source-kept",
            packet: from_outside(CLIENT, "203.0.113.5:80"),
            expect: Reaches(&[("10.244.1.6:80", 1.0, false)]),
        },
        // ...another source is dropped before any DNAT.
        Case {
            name: "lb-source-outside-ranges-dropped-before-dnat",
            packet: from_outside(STRANGER, "203.0.113.5:80"),
            expect: Stopped {
                fate: Fate::Dropped,
                chain: "firewall-check",
                dnat: false,
            },
        },
        // externalTrafficPolicy: Local on the NodePort too.
        Case {
            name: "etp-local-nodeport-local-endpoint-only",
            packet: from_outside(STRANGER, "172.18.0.2:30081"),
            expect: Reaches(&[("10.244.1.6:80", 1.0, false)]),
        },
        // Pods and the node itself are not bound by externalTrafficPolicy:
        // they use every endpoint (the node masqueraded, pods not).
        Case {
            name: "etp-local-lb-from-pod-all-endpoints",
            packet: tcp("cni0", POD, "203.0.113.6:80"),
            expect: Reaches(&[("10.244.2.7:80", 1.0, false)]),
        },
        Case {
            name: "etp-local-nodeport-from-node-all-endpoints",
            packet: from_node("172.18.0.2:30081"),
            expect: Reaches(&[("10.244.1.6:80", 0.5, true), ("10.244.2.6:80", 0.5, true)]),
        },
        // No local endpoint: outside traffic is dropped (the LB's health
        // check steers it elsewhere), not sent to another node.
        Case {
            name: "etp-local-no-local-endpoint-dropped",
            packet: from_outside(CLIENT, "203.0.113.6:80"),
            expect: Stopped {
                fate: Fate::Dropped,
                chain: "ext-",
                dnat: false,
            },
        },
        Case {
            name: "etp-local-nodeport-no-local-endpoint-dropped",
            packet: from_outside(CLIENT, "172.18.0.2:30082"),
            expect: Stopped {
                fate: Fate::Dropped,
                chain: "ext-",
                dnat: false,
            },
        },
        // An LB address with ipMode: Proxy is the load balancer's own, not
        // programmed: left to routing.
        Case {
            name: "lb-ipmode-proxy-not-programmed",
            packet: from_outside(CLIENT, "203.0.113.7:80"),
            expect: Untouched(Fate::Forwarded),
        },
        // internalTrafficPolicy: Local: only this node's endpoints...
        Case {
            name: "itp-local-only-local-endpoints",
            packet: from_pod("10.96.2.2:80"),
            expect: Reaches(&[("10.244.1.31:80", 1.0, false)]),
        },
        // ...and none here: dropped (not rejected, not sent elsewhere).
        Case {
            name: "itp-local-no-local-endpoint-dropped",
            packet: from_pod("10.96.1.7:80"),
            expect: Stopped {
                fate: Fate::Dropped,
                chain: "endpoints-check",
                dnat: false,
            },
        },
        // Session affinity, a client never seen: even pick (each way
        // remembers the client, checked in `affinity_*` below).
        Case {
            name: "affinity-new-client-even",
            packet: from_pod("10.96.1.2:80"),
            expect: Reaches(&[("10.244.1.4:80", 0.5, false), ("10.244.2.4:80", 0.5, false)]),
        },
        // A pod reaching itself through its Service is masqueraded (else the
        // reply would skip conntrack's reverse translation); the ways to
        // other endpoints are not.
        Case {
            name: "hairpin-masqueraded",
            packet: tcp("cni0", "10.244.1.2", "10.96.1.1:80"),
            expect: Reaches(&[
                ("10.244.1.2:8080", 1.0 / 3.0, true),
                ("10.244.1.3:8080", 1.0 / 3.0, false),
                ("10.244.2.2:8080", 1.0 / 3.0, false),
            ]),
        },
        // Only serving-terminating endpoints (KEP-1669): they are used
        // rather than none; the not-serving one never.
        Case {
            name: "terminating-fallback",
            packet: from_pod("10.96.1.8:80"),
            expect: Reaches(&[("10.244.1.9:80", 1.0, false)]),
        },
        // Dual-stack: each ClusterIP to the endpoints of its family.
        Case {
            name: "dual-stack-ipv6-clusterip",
            packet: tcp("cni0", "fd00:10:244:1::20", "[fd00:96::21]:80"),
            expect: Reaches(&[
                ("[fd00:10:244:1::30]:80", 0.5, false),
                ("[fd00:10:244:2::30]:80", 0.5, false),
            ]),
        },
        Case {
            name: "dual-stack-ipv4-clusterip",
            packet: from_pod("10.96.2.1:80"),
            expect: Reaches(&[("10.244.1.30:80", 1.0, false)]),
        },
        Case {
            name: "dual-stack-ipv6-from-node-masqueraded",
            packet: tcp("lo", "fd00:18::2", "[fd00:96::21]:80").local(),
            expect: Reaches(&[
                ("[fd00:10:244:1::30]:80", 0.5, true),
                ("[fd00:10:244:2::30]:80", 0.5, true),
            ]),
        },
        // Later packets of a connection get conntrack's translation; the
        // Service rules are not consulted again (checked in the loop: no
        // step in `services`), so no new pick and no masquerade added.
        Case {
            name: "established-keeps-its-endpoint",
            packet: from_pod("10.96.1.1:80").established(Some(socket("10.244.2.2:8080"))),
            expect: Reaches(&[("10.244.2.2:8080", 1.0, false)]),
        },
        // Even when the Service has no endpoints any more: kube-proxy
        // rejects new connections only.
        Case {
            name: "established-not-rejected-when-endpoints-gone",
            packet: from_pod("10.96.1.3:80").established(Some(socket("10.244.2.99:80"))),
            expect: Reaches(&[("10.244.2.99:80", 1.0, false)]),
        },
        // loadBalancerSourceRanges bind pods too: only the ranges (and the
        // LB's own addresses) may use the LB IP.
        Case {
            name: "lb-source-ranges-bind-pods",
            packet: from_pod("203.0.113.5:80"),
            expect: Stopped {
                fate: Fate::Dropped,
                chain: "firewall-check",
                dnat: false,
            },
        },
        // A NodePort with externalTrafficPolicy: Cluster masquerades pods as
        // well (all traffic to an external destination).
        Case {
            name: "nodeport-from-pod-masqueraded",
            packet: from_pod("172.18.0.2:30080"),
            expect: Reaches(&[("10.244.1.5:80", 0.5, true), ("10.244.2.5:80", 0.5, true)]),
        },
        // internalTrafficPolicy binds cluster-internal traffic only: the
        // ClusterIP has no local endpoint (dropped), the NodePort uses
        // every endpoint (KEP-2086).
        Case {
            name: "itp-local-clusterip-no-local-endpoint-dropped",
            packet: from_pod("10.96.2.3:80"),
            expect: Stopped {
                fate: Fate::Dropped,
                chain: "endpoints-check",
                dnat: false,
            },
        },
        Case {
            name: "itp-local-does-not-bind-nodeport",
            packet: from_outside(CLIENT, "172.18.0.2:30090"),
            expect: Reaches(&[("10.244.2.33:80", 1.0, true)]),
        },
        // KEP-1669: externalTrafficPolicy: Local whose only local endpoint
        // is terminating but serving: outside traffic goes to it rather
        // than being dropped, source kept...
        Case {
            name: "etp-local-terminating-local-endpoint-used",
            packet: from_outside(CLIENT, "172.18.0.2:30091"),
            expect: Reaches(&[("10.244.1.34:80", 1.0, false)]),
        },
        // ...while cluster traffic, with a ready endpoint elsewhere, uses
        // only the ready one.
        Case {
            name: "terminating-not-used-when-ready-exists",
            packet: from_pod("10.96.2.4:80"),
            expect: Reaches(&[("10.244.2.34:80", 1.0, false)]),
        },
        // Other protocols: UDP (DNS; an endpoint without conditions counts
        // as ready) and SCTP.
        Case {
            name: "udp-dns-unset-conditions-ready",
            packet: packet(protocol::UDP, "cni0", POD, "10.96.0.10:53"),
            expect: Reaches(&[("10.244.1.10:53", 1.0, false)]),
        },
        Case {
            name: "sctp-clusterip",
            packet: packet(protocol::SCTP, "cni0", POD, "10.96.1.9:3868"),
            expect: Reaches(&[("10.244.2.11:3868", 1.0, false)]),
        },
        // A protocol the Service port does not have is a wrong port: rejected.
        Case {
            name: "udp-to-tcp-only-service-rejected",
            packet: packet(protocol::UDP, "cni0", POD, "10.96.1.1:80"),
            expect: Stopped {
                fate: Fate::Rejected(Reject::Default),
                chain: "reject-chain",
                dnat: false,
            },
        },
        // A pod of another node (in over flannel) is in the pod network:
        // not masqueraded.
        Case {
            name: "clusterip-from-remote-pod-unmasqueraded",
            packet: tcp("flannel.1", "10.244.2.50", "10.96.2.1:80"),
            expect: Reaches(&[("10.244.1.30:80", 1.0, false)]),
        },
        // The node's own connections: rejected without endpoints (output
        // path), and bound by loadBalancerSourceRanges like anyone else.
        Case {
            name: "no-endpoints-from-node-rejected",
            packet: from_node("10.96.1.3:80"),
            expect: Stopped {
                fate: reset.clone(),
                chain: "reject-chain",
                dnat: false,
            },
        },
        Case {
            name: "lb-source-ranges-bind-the-node",
            packet: from_node("203.0.113.5:80"),
            expect: Stopped {
                fate: Fate::Dropped,
                chain: "firewall-check",
                dnat: false,
            },
        },
        // Hairpin through a session-affinity Service (its endpoint chains).
        Case {
            name: "hairpin-with-affinity-masqueraded",
            packet: tcp("cni0", "10.244.1.4", "10.96.1.2:80"),
            expect: Reaches(&[("10.244.1.4:80", 0.5, true), ("10.244.2.4:80", 0.5, false)]),
        },
        Case {
            name: "ipv6-clusterip-wrong-port-rejected",
            packet: tcp("cni0", "fd00:10:244:1::20", "[fd00:96::21]:81"),
            expect: Stopped {
                fate: reset.clone(),
                chain: "reject-chain",
                dnat: false,
            },
        },
        // internalTrafficPolicy: Local binds the node's own connections too.
        Case {
            name: "itp-local-from-node-local-endpoints-masqueraded",
            packet: from_node("10.96.2.2:80"),
            expect: Reaches(&[("10.244.1.31:80", 1.0, true)]),
        },
        // Endpoints that exist but none usable (not ready, not serving):
        // the same as no endpoints, rejected.
        Case {
            name: "only-unusable-endpoints-rejected",
            packet: from_pod("10.96.2.5:80"),
            expect: Stopped {
                fate: reset.clone(),
                chain: "reject-chain",
                dnat: false,
            },
        },
        // externalTrafficPolicy: Local with a local endpoint that is not
        // ready: no usable local endpoint, outside traffic dropped; pods
        // still reach the ready remote one.
        Case {
            name: "etp-local-unready-local-endpoint-dropped",
            packet: from_outside(CLIENT, "172.18.0.2:30092"),
            expect: Stopped {
                fate: Fate::Dropped,
                chain: "ext-",
                dnat: false,
            },
        },
        Case {
            name: "etp-local-unready-local-pods-use-ready-remote",
            packet: from_pod("10.96.2.6:80"),
            expect: Reaches(&[("10.244.2.36:80", 1.0, false)]),
        },
        Case {
            name: "ipv6-unallocated-service-ip-dropped",
            packet: tcp("cni0", "fd00:10:244:1::20", "[fd00:96::99]:80"),
            expect: Stopped {
                fate: Fate::Dropped,
                chain: "endpoints-check",
                dnat: false,
            },
        },
    ]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn socket(s: &str) -> (IpAddr, Option<u16>) {
    let a: SocketAddr = s.parse().expect("addr:port");
    (a.ip(), Some(a.port()))
}

/// What is wrong with `outcomes` for `expect`, if anything.
fn check(outcomes: &[Outcome], expect: &Expect) -> Option<String> {
    let total: f64 = outcomes.iter().map(|o| o.probability).sum();
    if !close(total, 1.0) {
        return Some(format!("outcomes sum to {total}"));
    }
    match expect {
        Expect::Reaches(want) => {
            if let Some(o) = outcomes.iter().find(|o| !o.fate.passes()) {
                return Some(format!(
                    "a way is stopped: {:?} by {:?}",
                    o.fate,
                    o.stopped_by()
                ));
            }
            let got = trace::destinations(outcomes);
            let wanted: Vec<_> = want.iter().map(|(d, p, _)| (socket(d), *p)).collect();
            if got.len() != wanted.len()
                || !got
                    .iter()
                    .zip(&wanted)
                    .all(|(g, w)| g.0 == w.0 && close(g.1, w.1))
            {
                return Some(format!("destinations {got:?}, want {wanted:?}"));
            }
            for (d, _, masquerade) in want.iter() {
                let dest = socket(d);
                for o in outcomes.iter().filter(|o| (o.daddr, o.dport) == dest) {
                    if !o.dnat {
                        return Some(format!("{d} reached without DNAT"));
                    }
                    if o.masquerade != *masquerade {
                        return Some(format!(
                            "{d}: masquerade {}, want {masquerade}",
                            o.masquerade
                        ));
                    }
                    if !masquerade && o.snat.is_some() {
                        return Some(format!("{d}: source changed to {:?}", o.snat));
                    }
                }
            }
            None
        }
        Expect::Stopped { fate, chain, dnat } => {
            for o in outcomes {
                if o.fate != *fate {
                    return Some(format!("fate {:?}, want {fate:?}", o.fate));
                }
                let by = o.stopped_by().map(|s| s.chain.as_str()).unwrap_or("");
                if !by.starts_with(chain) {
                    return Some(format!("stopped by chain {by:?}, want {chain}…"));
                }
                if o.dnat != *dnat {
                    return Some(format!("dnat {}, want {dnat}", o.dnat));
                }
            }
            None
        }
        Expect::Untouched(fate) => {
            for o in outcomes {
                if o.fate != *fate || o.dnat || o.masquerade {
                    return Some(format!(
                        "fate {:?} dnat {} masquerade {}, want {fate:?} untranslated",
                        o.fate, o.dnat, o.masquerade
                    ));
                }
            }
            None
        }
    }
}

/// Trace every case; the failures, one line each.
fn run(tables: &[Table], node: &Node, cases: &[Case]) -> Vec<String> {
    let refs: Vec<&Table> = tables.iter().collect();
    let mut failures = Vec::new();
    for case in cases {
        match trace::trace(&refs, node, &case.packet) {
            Err(e) => failures.push(format!("{}: trace failed: {e}", case.name)),
            Ok(outcomes) => {
                if let Some(why) = check(&outcomes, &case.expect) {
                    failures.push(format!("{}: {why}", case.name));
                }
                let established = case.packet.ct.state & ct_state::NEW == 0;
                let consulted = |o: &Outcome| o.path.iter().any(|s| s.chain == "services");
                if established && outcomes.iter().any(consulted) {
                    failures.push(format!(
                        "{}: an established packet met the Service rules",
                        case.name
                    ));
                }
            }
        }
    }
    failures
}

#[test]
fn kube_proxy_behaviours() {
    let state = cluster();
    let cases = cases();
    let failures = run(&tables(&state), &node(), &cases);
    eprintln!("{} cases traced", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Session affinity (sessionAffinity: ClientIP): a new client is picked
/// evenly and each pick remembers the client for its endpoint; a client
/// remembered for an endpoint goes there, whatever the random pick.
#[test]
fn affinity_remembers_the_client() {
    let state = cluster();
    let tables = tables(&state);
    let refs: Vec<&Table> = tables.iter().collect();
    let mut node = node();
    let client = ip(POD);
    let first = trace::trace(&refs, &node, &from_pod("10.96.1.2:80")).unwrap();
    assert_eq!(
        check(
            &first,
            &Expect::Reaches(&[("10.244.1.4:80", 0.5, false), ("10.244.2.4:80", 0.5, false)])
        ),
        None
    );
    // Each way adds the client to one affinity set, a different one per
    // endpoint.
    let mut remembered = Vec::new();
    for o in first.iter().filter(|o| o.fate.passes()) {
        assert_eq!(o.updates.len(), 1, "one update per way: {:?}", o.updates);
        let (set, key) = &o.updates[0];
        assert_eq!(
            key,
            &vec![Value::Addr(client)],
            "keyed by the client's address"
        );
        remembered.push(((o.daddr, o.dport), set.clone()));
    }
    remembered.dedup_by(|a, b| a.1 == b.1);
    assert_eq!(remembered.len(), 2, "distinct sets per endpoint");
    // Seed the second endpoint's set: the client now always goes there and
    // nothing is picked at random.
    let (dest, set) = remembered
        .iter()
        .find(|(d, _)| *d == socket("10.244.2.4:80"))
        .cloned()
        .expect("a way to 10.244.2.4");
    node.seed(set.0, &set.1, &set.2, vec![Value::Addr(client)]);
    let again = trace::trace(&refs, &node, &from_pod("10.96.1.2:80")).unwrap();
    assert_eq!(trace::destinations(&again), vec![(dest, 1.0)]);
    // Another client is not affected by it.
    let other = tcp("cni0", "10.244.1.21", "10.96.1.2:80");
    let others = trace::trace(&refs, &node, &other).unwrap();
    assert_eq!(
        trace::destinations(&others),
        vec![
            (socket("10.244.1.4:80"), 0.5),
            (socket("10.244.2.4:80"), 0.5)
        ]
    );
}

/// `--nodeport-addresses 192.168.50.0/24`: NodePorts answer on the node's
/// addresses in that network only, no longer on the primary IP.
#[test]
fn nodeport_addresses_choose_where_nodeports_answer() {
    let state = cluster();
    let ctx = NodeContext {
        nodeport_addresses: vec!["192.168.50.0/24".parse().unwrap()],
        ..context()
    };
    let cases = [
        Case {
            name: "nodeport-on-listed-address",
            packet: tcp("eth1", "192.168.50.9", "192.168.50.2:30080"),
            expect: Expect::Reaches(&[("10.244.1.5:80", 0.5, true), ("10.244.2.5:80", 0.5, true)]),
        },
        Case {
            name: "nodeport-not-on-unlisted-primary-ip",
            packet: from_outside(CLIENT, "172.18.0.2:30080"),
            expect: Expect::Untouched(Fate::Local),
        },
    ];
    let failures = run(&tables_with(&state, &ctx), &node(), &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
