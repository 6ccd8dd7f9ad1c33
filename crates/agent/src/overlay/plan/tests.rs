use super::*;

/// Nodes (and whatever else) from YAML, as the agent's sources admit them.
fn state(yaml: &str) -> ClusterState {
    let loaded = strait_model::parse_str("nodes.yaml", yaml, strait_model::Format::Yaml).unwrap();
    ClusterState::from_objects(
        loaded
            .objects
            .into_iter()
            .map(|(o, origin)| (o, Some(origin))),
    )
    .unwrap()
}

/// A Node as strait publishes it (or with `extra` annotations / spec).
fn node(name: &str, cidr: &str, ip: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\nspec: {{podCIDR: {cidr}, podCIDRs: [{cidr}]}}\nstatus: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n---\n"
    )
}

fn vxlan_annotations(ip: &str, mac: &str) -> String {
    format!(
        "flannel.alpha.coreos.com/backend-type: vxlan, flannel.alpha.coreos.com/backend-data: '{{\"VNI\":1,\"VtepMAC\":\"{mac}\"}}', flannel.alpha.coreos.com/public-ip: {ip}, flannel.alpha.coreos.com/kube-subnet-manager: \"true\""
    )
}

/// Exactly what flanneld v0.2x writes on a kubeadm node (kube subnet
/// manager, vxlan backend), key order and all.
const FLANNEL_NODE: &str = r#"apiVersion: v1
kind: Node
metadata:
  name: flannel-worker
  annotations:
    flannel.alpha.coreos.com/backend-data: '{"VNI":1,"VtepMAC":"d6:0f:7b:3c:91:5e"}'
    flannel.alpha.coreos.com/backend-type: vxlan
    flannel.alpha.coreos.com/kube-subnet-manager: "true"
    flannel.alpha.coreos.com/public-ip: 192.168.56.12
    kubeadm.alpha.kubernetes.io/cri-socket: unix:///var/run/containerd/containerd.sock
    node.alpha.kubernetes.io/ttl: "0"
spec:
  podCIDR: 10.244.2.0/24
  podCIDRs: [10.244.2.0/24]
status:
  addresses:
  - {type: InternalIP, address: 192.168.56.12}
  - {type: Hostname, address: flannel-worker}
---
"#;

fn local() -> LocalNode {
    LocalNode {
        name: "a".into(),
        public_ip: "192.168.56.10".parse().unwrap(),
        pod_cidr: "10.244.0.0/24".parse().unwrap(),
    }
}

fn vxlan() -> OverlayConfig {
    OverlayConfig::new(Backend::Vxlan)
}

#[test]
fn the_local_node_comes_from_its_node_object_and_the_overwrite_wins() {
    let s = state(&node("a", "10.244.0.0/24", "192.168.56.10", ""));
    assert_eq!(local_node(&s, "a", None).unwrap(), local());
    // --node-ip beats the Node's InternalIP …
    let ip: Ipv4Addr = "10.0.0.1".parse().unwrap();
    assert_eq!(local_node(&s, "a", Some(ip)).unwrap().public_ip, ip);
    // … and the user's public-ip-overwrite beats both, as in flannel.
    let s = state(&node(
        "a",
        "10.244.0.0/24",
        "192.168.56.10",
        "flannel.alpha.coreos.com/public-ip-overwrite: 203.0.113.7",
    ));
    assert_eq!(
        local_node(&s, "a", Some(ip)).unwrap().public_ip,
        "203.0.113.7".parse::<Ipv4Addr>().unwrap()
    );
    let missing = local_node(&s, "zz", None).unwrap_err();
    assert_eq!(missing.node, "zz");
    let s = state("apiVersion: v1\nkind: Node\nmetadata: {name: a}\n");
    let e = local_node(&s, "a", None).unwrap_err();
    assert_eq!(e.field, "spec.podCIDRs");
}

#[test]
fn a_flannel_written_node_is_reached_through_its_vtep() {
    let s = state(&(node("a", "10.244.0.0/24", "192.168.56.10", "") + FLANNEL_NODE));
    let p = plan(&s, &local(), &vxlan());
    assert_eq!(p.problems, vec![]);
    assert_eq!(
        p.remotes,
        vec![Remote {
            node: "flannel-worker".into(),
            pod_cidr: "10.244.2.0/24".parse().unwrap(),
            public_ip: "192.168.56.12".parse().unwrap(),
            vtep_mac: Some([0xd6, 0x0f, 0x7b, 0x3c, 0x91, 0x5e]),
        }]
    );
    // The route flannel would make: the range via its .0 address, onlink.
    assert_eq!(
        p.remotes[0].gateway(Backend::Vxlan),
        "10.244.2.0".parse::<Ipv4Addr>().unwrap()
    );
}

#[test]
fn what_strait_publishes_is_what_flannel_writes() {
    let mac = [0xd6, 0x0f, 0x7b, 0x3c, 0x91, 0x5e];
    let mut l = local();
    l.public_ip = "192.168.56.12".parse().unwrap();
    let a = annotations(&vxlan(), &l, Some(mac));
    let s = state(FLANNEL_NODE);
    let flannel = s.nodes.get("", "flannel-worker").unwrap();
    let theirs = flannel.metadata.annotations.as_ref().unwrap();
    for (k, v) in &a {
        assert_eq!(theirs.get(k), Some(v), "{k}");
    }
    assert!(annotations_to_publish(&s, "flannel-worker", &a).is_empty());
    let host_gw = annotations(&OverlayConfig::new(Backend::HostGw), &l, None);
    assert_eq!(host_gw[BACKEND_DATA], "null");
    assert_eq!(host_gw[BACKEND_TYPE], "host-gw");
    // A Node without them: all four to publish.
    let s = state(&node("a", "10.244.0.0/24", "192.168.56.10", ""));
    assert_eq!(annotations_to_publish(&s, "a", &a).len(), 4);
}

/// One Node with something wrong, and the field the error names. Every
/// other Node is still planned.
#[test]
fn each_malformed_node_is_left_out_naming_its_field() {
    let mac_ok = "0a:58:c0:a8:38:0b";
    let cases: Vec<(String, &str)> = vec![
        (
            node("bad-ip", "10.244.5.0/24", "192.168.56.15", &vxlan_annotations("not-an-ip", mac_ok)),
            "metadata.annotations[flannel.alpha.coreos.com/public-ip]",
        ),
        (
            node("loop-ip", "10.244.5.0/24", "192.168.56.15", &vxlan_annotations("127.0.0.1", mac_ok)),
            "metadata.annotations[flannel.alpha.coreos.com/public-ip]",
        ),
        (
            node("own-ip", "10.244.5.0/24", "192.168.56.15", &vxlan_annotations("192.168.56.10", mac_ok)),
            "metadata.annotations[flannel.alpha.coreos.com/public-ip]",
        ),
        (
            node("bad-mac", "10.244.5.0/24", "192.168.56.15", &vxlan_annotations("192.168.56.15", "zz:zz")),
            "metadata.annotations[flannel.alpha.coreos.com/backend-data].VtepMAC",
        ),
        (
            node("group-mac", "10.244.5.0/24", "192.168.56.15", &vxlan_annotations("192.168.56.15", "01:00:5e:00:00:01")),
            "metadata.annotations[flannel.alpha.coreos.com/backend-data].VtepMAC",
        ),
        (
            node("bad-json", "10.244.5.0/24", "192.168.56.15", "flannel.alpha.coreos.com/backend-type: vxlan, flannel.alpha.coreos.com/backend-data: '{VNI', flannel.alpha.coreos.com/public-ip: 192.168.56.15, flannel.alpha.coreos.com/kube-subnet-manager: \"true\""),
            "metadata.annotations[flannel.alpha.coreos.com/backend-data]",
        ),
        (
            node("other-vni", "10.244.5.0/24", "192.168.56.15", "flannel.alpha.coreos.com/backend-type: vxlan, flannel.alpha.coreos.com/backend-data: '{\"VNI\":4096,\"VtepMAC\":\"0a:58:c0:a8:38:0b\"}', flannel.alpha.coreos.com/public-ip: 192.168.56.15, flannel.alpha.coreos.com/kube-subnet-manager: \"true\""),
            "metadata.annotations[flannel.alpha.coreos.com/backend-data].VNI",
        ),
        (
            node("host-gw", "10.244.5.0/24", "192.168.56.15", "flannel.alpha.coreos.com/backend-type: host-gw, flannel.alpha.coreos.com/backend-data: 'null', flannel.alpha.coreos.com/public-ip: 192.168.56.15, flannel.alpha.coreos.com/kube-subnet-manager: \"true\""),
            "metadata.annotations[flannel.alpha.coreos.com/backend-type]",
        ),
        (
            node("overlaps-own", "10.244.0.0/16", "192.168.56.15", &vxlan_annotations("192.168.56.15", mac_ok)),
            "spec.podCIDRs",
        ),
        (
            node("overlaps-own-inside", "10.244.0.128/25", "192.168.56.15", &vxlan_annotations("192.168.56.15", mac_ok)),
            "spec.podCIDRs",
        ),
        (
            format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: no-range\n  annotations: {{{}}}\n---\n",
                vxlan_annotations("192.168.56.15", mac_ok)
            ),
            "spec.podCIDRs",
        ),
    ];
    let good = node(
        "good",
        "10.244.1.0/24",
        "192.168.56.11",
        &vxlan_annotations("192.168.56.11", "0a:58:c0:a8:38:0b"),
    );
    for (bad, field) in cases {
        let yaml = node("a", "10.244.0.0/24", "192.168.56.10", "") + &good + &bad;
        let s = state(&yaml);
        let p = plan(&s, &local(), &vxlan());
        assert_eq!(p.problems.len(), 1, "{bad}: {:?}", p.problems);
        assert_eq!(p.problems[0].field, field, "{}", p.problems[0]);
        assert!(
            p.problems[0].to_string().starts_with("Node \""),
            "{}",
            p.problems[0]
        );
        let names: Vec<&str> = p.remotes.iter().map(|r| r.node.as_str()).collect();
        assert_eq!(names, ["good"], "{bad}");
    }
}

#[test]
fn clashes_between_nodes_leave_out_the_later_one() {
    let yaml = node("a", "10.244.0.0/24", "192.168.56.10", "")
        + &node(
            "b",
            "10.244.1.0/24",
            "192.168.56.11",
            &vxlan_annotations("192.168.56.11", "0a:58:00:00:00:0b"),
        )
        + &node(
            "c",
            "10.244.1.0/24",
            "192.168.56.12",
            &vxlan_annotations("192.168.56.12", "0a:58:00:00:00:0c"),
        )
        + &node(
            "d",
            "10.244.3.0/24",
            "192.168.56.13",
            &vxlan_annotations("192.168.56.13", "0a:58:00:00:00:0b"),
        )
        + &node("e", "10.244.4.0/24", "192.168.56.14", "");
    let p = plan(&state(&yaml), &local(), &vxlan());
    let names: Vec<&str> = p.remotes.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(names, ["b"]);
    let problems: Vec<String> = p.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "Node \"c\": spec.podCIDRs: 10.244.1.0/24 overlaps Node \"b\"'s 10.244.1.0/24",
            "Node \"d\": metadata.annotations[flannel.alpha.coreos.com/backend-data].VtepMAC: 0a:58:00:00:00:0b is Node \"b\"'s VTEP MAC too",
        ]
    );
    // A Node that has not published (no kube-subnet-manager) waits, no error.
    assert_eq!(p.pending, ["e"]);
}

#[test]
fn host_gw_routes_go_via_the_node() {
    let yaml = node("a", "10.244.0.0/24", "192.168.56.10", "")
        + &node("b", "10.244.1.0/24", "192.168.56.11", "flannel.alpha.coreos.com/backend-type: host-gw, flannel.alpha.coreos.com/backend-data: 'null', flannel.alpha.coreos.com/public-ip: 192.168.56.11, flannel.alpha.coreos.com/kube-subnet-manager: \"true\"");
    let p = plan(
        &state(&yaml),
        &local(),
        &OverlayConfig::new(Backend::HostGw),
    );
    assert_eq!(p.problems, vec![]);
    assert_eq!(p.remotes.len(), 1);
    assert_eq!(p.remotes[0].vtep_mac, None);
    assert_eq!(
        p.remotes[0].gateway(Backend::HostGw),
        "192.168.56.11".parse::<Ipv4Addr>().unwrap()
    );
}

#[test]
fn vtep_macs_are_stable_and_locally_administered() {
    let mac = vtep_mac_for("172.18.0.2".parse().unwrap());
    assert_eq!(mac, [0x0a, 0x58, 172, 18, 0, 2]);
    // Locally administered, unicast.
    assert_eq!(mac[0] & 0b11, 0b10);
}
