//! The policy part against the kernel (root): a node namespace routing
//! between three pod namespaces (x/a, x/b, y/c), TCP listeners on ports
//! the kernel chose, and the [`PolicyPart`] programming the node's real
//! tables. Every probe is a real connection, and must agree with the
//! packet tracer's reading of the same planned tables. Then a pod label
//! change (one partial sync) opens a path, and a policy change that takes
//! an allowance away leaves an established connection working while new
//! ones are dropped. Namespaces are removed on drop, also on failure.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use strait_agent::{Part, PolicyPart};
use strait_linux::{is_root, write_sysctl, NetNs};
use strait_policy::fixture::Cluster;
use strait_policy::plan::traced_matrix;
use strait_policy::{Protocol, Sync};

/// How long a connection that gets no answer is waited for.
const SILENCE: Duration = Duration::from_millis(400);

struct Namespaces {
    names: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = NetNs::delete(n);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The pods: (namespace, name, subnet number). Pod k is 10.0.k.2, its
/// node side 10.0.k.1.
const PODS: [(&str, &str, u8); 3] = [("x", "a", 1), ("x", "b", 2), ("y", "c", 3)];

fn pod_ip(k: u8) -> IpAddr {
    IpAddr::from([10, 0, k, 2])
}

struct Lab {
    node: NetNs,
    pods: Vec<NetNs>,
}

/// `tag` keeps the namespaces of tests running side by side apart.
fn build(guard: &mut Namespaces, tag: &str) -> Result<Lab, String> {
    let pid = std::process::id();
    let node_name = format!("strait-polk{tag}-n-{pid}");
    guard.names.push(node_name.clone());
    let node = NetNs::create(&node_name).map_err(|e| e.to_string())?;
    ip(&["-n", &node_name, "link", "set", "lo", "up"])?;
    let mut pods = Vec::new();
    for (_, name, k) in PODS {
        let ns = format!("strait-polk{tag}-{name}-{pid}");
        guard.names.push(ns.clone());
        pods.push(NetNs::create(&ns).map_err(|e| e.to_string())?);
        let veth = format!("v{name}");
        let node_addr = format!("10.0.{k}.1/24");
        let pod_addr = format!("10.0.{k}.2/24");
        let gateway = format!("10.0.{k}.1");
        let steps: Vec<Vec<&str>> = vec![
            vec![
                "-n", &node_name, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ],
            vec!["-n", &node_name, "addr", "add", &node_addr, "dev", &veth],
            vec!["-n", &node_name, "link", "set", &veth, "up"],
            vec!["-n", &ns, "addr", "add", &pod_addr, "dev", "eth0"],
            vec!["-n", &ns, "link", "set", "eth0", "up"],
            vec!["-n", &ns, "link", "set", "lo", "up"],
            vec!["-n", &ns, "route", "add", "default", "via", &gateway],
        ];
        for step in &steps {
            ip(step)?;
        }
    }
    node.run(|| write_sysctl("net.ipv4.ip_forward", "1").map_err(|e| e.to_string()))
        .map_err(|e| e.to_string())??;
    Ok(Lab { node, pods })
}

/// A TCP listener inside `ns` on a port the kernel chose.
fn listen(ns: &NetNs) -> (TcpListener, u16) {
    let l = ns
        .run(|| TcpListener::bind("0.0.0.0:0"))
        .expect("enter the pod")
        .expect("listen");
    let port = l.local_addr().expect("address").port();
    (l, port)
}

/// A new connection from `ns` to `to`, if the handshake completes.
fn connect(ns: &NetNs, to: SocketAddr) -> Option<TcpStream> {
    ns.run(move || TcpStream::connect_timeout(&to, SILENCE).ok())
        .expect("enter the pod")
}

fn cluster(p1: u16, c_is_client: bool, a_is_client: bool) -> Cluster {
    let mut c = Cluster::default();
    c.namespace("x", json!({"ns": "x"}));
    c.namespace("y", json!({"ns": "y"}));
    let role = |on: bool| if on { "client" } else { "none" };
    c.pod(
        "x",
        "a",
        json!({"role": role(a_is_client)}),
        "n",
        "10.0.1.2",
        &[],
    );
    c.pod("x", "b", json!({"app": "web"}), "n", "10.0.2.2", &[]);
    c.pod(
        "y",
        "c",
        json!({"role": role(c_is_client)}),
        "n",
        "10.0.3.2",
        &[],
    );
    // x/b takes clients from any namespace on p1 only.
    c.policy(
        "x",
        "web",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}},
                                      "namespaceSelector": {}}],
                            "ports": [{"port": p1}]}]}),
    );
    // y/c may only talk to 10.0.2.0/24 on p1 (defaulted policyTypes: Ingress
    // and Egress, so nothing comes in to y/c).
    c.policy(
        "y",
        "out",
        json!({"podSelector": {},
               "egress": [{"to": [{"ipBlock": {"cidr": "10.0.2.0/24"}}],
                           "ports": [{"port": p1, "protocol": "TCP"}]}]}),
    );
    c
}

#[test]
fn the_kernel_enforces_what_was_planned_and_follows_label_changes() {
    if !is_root() {
        eprintln!("SKIPPED the_kernel_enforces_what_was_planned: needs root (network namespaces, nf_tables)");
        return;
    }
    let mut guard = Namespaces { names: Vec::new() };
    let lab = build(&mut guard, "").expect("namespaces");
    let (a, b, c) = (&lab.pods[0], &lab.pods[1], &lab.pods[2]);
    let (lb1, p1) = listen(b);
    let (_lb2, p2) = listen(b);
    let (_la1, pa) = listen(a);
    let (_lc1, pc) = listen(c);

    let state = cluster(p1, false, true).state;
    let part = lab
        .node
        .run({
            let state = state.clone();
            move || {
                let mut part = PolicyPart::new("n");
                part.sync_all(&state).map(|()| part)
            }
        })
        .expect("enter the node")
        .expect("full sync");
    // The fast path took the table (concatenated interval sets included).
    assert_eq!(part.applier().last_path(), "netlink");

    // Every probe: the kernel and the tracer agree, and both say what the
    // policies say.
    let probes: Vec<(usize, usize, u16, bool)> = vec![
        (0, 1, p1, true),  // a is a client: in on p1
        (0, 1, p2, false), // but not on another port
        (2, 1, p1, false), // c is no client
        (1, 0, pa, true),  // a is not isolated
        (2, 0, pa, false), // c's egress goes only to 10.0.2.0/24
        (0, 2, pc, false), // c's ingress is isolated with no rule
    ];
    let check = |state: &strait_model::ClusterState, probes: &[(usize, usize, u16, bool)]| {
        let ports: Vec<u16> = probes.iter().map(|p| p.2).collect();
        let traced = traced_matrix(state, &ports, &[Protocol::Tcp]).expect("traced");
        for &(from, to, port, want) in probes {
            let (_, name_from, _) = PODS[from];
            let (ns_to, name_to, k) = PODS[to];
            let kernel = connect(&lab.pods[from], SocketAddr::new(pod_ip(k), port)).is_some();
            let cell = traced
                .cells
                .iter()
                .find(|c| {
                    c.from.ends_with(&format!("/{name_from}"))
                        && c.to == format!("{ns_to}/{name_to}")
                        && c.port == port
                })
                .expect("a traced cell");
            assert_eq!(
                kernel, want,
                "{name_from} -> {name_to}:{port}: the kernel says {kernel}"
            );
            assert_eq!(
                cell.allowed, want,
                "{name_from} -> {name_to}:{port}: the tracer"
            );
        }
    };
    check(&state, &probes);

    // y/c becomes a client: one partial sync opens c -> b:p1.
    let new = cluster(p1, true, true).state;
    let changes = state.diff(&new);
    let (part, sync) = lab
        .node
        .run({
            let (state, new) = (state.clone(), new.clone());
            move || {
                let mut part = part;
                part.sync_changes(&state, &new, &changes)
                    .map(|()| (part.last_sync(), part))
            }
        })
        .expect("enter the node")
        .map(|(s, p)| (p, s))
        .expect("partial sync");
    assert!(matches!(sync, Some(Sync::Partial(_, _))), "{sync:?}");
    assert_eq!(part.applier().last_path(), "netlink");
    check(
        &new,
        &[(2, 1, p1, true), (2, 1, p2, false), (0, 1, p1, true)],
    );

    // An established connection a -> b:p1 outlives a's allowance.
    let mut client = connect(a, SocketAddr::new(pod_ip(2), p1)).expect("a -> b:p1");
    // The backlog also holds the probes' connections: take this one.
    let me = client.local_addr().expect("client address");
    let mut server = loop {
        let (s, from) = lb1.accept().expect("accept");
        if from == me {
            break s;
        }
    };
    let newer = cluster(p1, true, false).state;
    let changes = new.diff(&newer);
    lab.node
        .run({
            let newer = newer.clone();
            move || {
                let mut part = part;
                part.sync_changes(&new, &newer, &changes)
            }
        })
        .expect("enter the node")
        .expect("partial sync");
    check(&newer, &[(0, 1, p1, false), (2, 1, p1, true)]);
    client.write_all(b"still here").expect("write");
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut got = [0u8; 10];
    server
        .read_exact(&mut got)
        .expect("the established connection passes");
    assert_eq!(&got, b"still here");
}

/// ClusterNetworkPolicy tiers in the kernel: the Admin tier's Accept, Deny
/// and Pass around the NetworkPolicies, a Baseline Deny, egress networks —
/// each probe a real connection that must agree with the tracer and with
/// the reference reading. The table's interval verdict maps go in through
/// netlink.
#[test]
fn the_kernel_enforces_the_cluster_policy_tiers() {
    if !is_root() {
        eprintln!("SKIPPED the_kernel_enforces_the_cluster_policy_tiers: needs root (network namespaces, nf_tables)");
        return;
    }
    let mut guard = Namespaces { names: Vec::new() };
    let lab = build(&mut guard, "t").expect("namespaces");
    let (a, b, c) = (&lab.pods[0], &lab.pods[1], &lab.pods[2]);
    let (_lb1, p1) = listen(b);
    let (_lb2, p2) = listen(b);
    let (_lb3, p3) = listen(b);
    let (_la, pa) = listen(a);
    let _ = c;

    // The NetworkPolicies of `cluster`: x/b takes clients (a and c) on p1;
    // y/c sends only to 10.0.2.0/24 on p1.
    let mut cl = cluster(p1, true, true);
    let tcp = |p: u16| json!({"tcp": {"destinationPort": {"number": p}}});
    cl.cluster_policy(
        "x-admin",
        json!({"tier": "Admin", "priority": 1,
               "subject": {"namespaces": {"matchLabels": {"ns": "x"}}},
               "ingress": [
                   {"action": "Deny", "from": [{"namespaces": {"matchLabels": {"ns": "y"}}}],
                    "protocols": [tcp(p1)]},
                   {"action": "Accept", "from": [{"namespaces": {"matchLabels": {"ns": "x"}}}],
                    "protocols": [tcp(p2), tcp(p3)]},
                   {"action": "Pass", "from": [{"namespaces": {"matchLabels": {"ns": "x"}}}]}],
               "egress": [
                   {"action": "Deny", "to": [{"networks": ["10.0.1.0/24"]}]}]}),
    );
    cl.cluster_policy(
        "x-baseline",
        json!({"tier": "Baseline", "priority": 1,
               "subject": {"pods": {"namespaceSelector": {"matchLabels": {"ns": "x"}},
                                    "podSelector": {"matchLabels": {"role": "client"}}}},
               "egress": [{"action": "Deny", "to": [{"namespaces": {}}], "protocols": [tcp(p3)]}]}),
    );
    let state = cl.state;
    // The NetworkPolicies first; the ClusterNetworkPolicies come as a
    // change (a partial sync: new chains and interval maps by diff).
    let before = cluster(p1, true, true).state;
    let changes = before.diff(&state);
    let part = lab
        .node
        .run({
            let (before, state) = (before.clone(), state.clone());
            move || {
                let mut part = PolicyPart::new("n");
                part.sync_all(&before)?;
                part.sync_changes(&before, &state, &changes).map(|()| part)
            }
        })
        .expect("enter the node")
        .expect("full sync, then the cluster policies");
    assert!(
        matches!(part.last_sync(), Some(Sync::Partial(_, _))),
        "{:?}",
        part.last_sync()
    );
    assert_eq!(part.applier().last_path(), "netlink");

    let probes: Vec<(usize, usize, u16, bool)> = vec![
        (0, 1, p1, true),  // Pass: x/b's NetworkPolicy takes a client
        (0, 1, p2, true),  // Admin Accept where the NetworkPolicy isolates
        (0, 1, p3, false), // accepted in, but a's Baseline egress Deny
        (2, 1, p1, false), // Admin Deny where the NetworkPolicy allows
        (1, 0, pa, false), // Admin egress Deny to 10.0.1.0/24
    ];
    let ports: Vec<u16> = probes.iter().map(|p| p.2).collect();
    let traced = traced_matrix(&state, &ports, &[Protocol::Tcp]).expect("traced");
    for (from, to, port, want) in probes {
        let (ns_from, name_from, _) = PODS[from];
        let (ns_to, name_to, k) = PODS[to];
        let kernel = connect(&lab.pods[from], SocketAddr::new(pod_ip(k), port)).is_some();
        let cell = traced
            .cells
            .iter()
            .find(|c| {
                c.from == format!("{ns_from}/{name_from}")
                    && c.to == format!("{ns_to}/{name_to}")
                    && c.port == port
            })
            .expect("a traced cell");
        let reference = strait_policy::semantics::allowed(
            &state,
            &strait_policy::PodRef {
                namespace: ns_from.into(),
                name: name_from.into(),
            },
            &strait_policy::PodRef {
                namespace: ns_to.into(),
                name: name_to.into(),
            },
            port,
            Protocol::Tcp,
        );
        assert_eq!(kernel, want, "{name_from} -> {name_to}:{port}: the kernel");
        assert_eq!(
            cell.allowed, want,
            "{name_from} -> {name_to}:{port}: the tracer"
        );
        assert_eq!(
            reference, want,
            "{name_from} -> {name_to}:{port}: the reference"
        );
    }

    // The cluster policies go again: what they decided is the
    // NetworkPolicies' again.
    let changes = state.diff(&before);
    lab.node
        .run({
            let (state, before) = (state.clone(), before.clone());
            move || {
                let mut part = part;
                part.sync_changes(&state, &before, &changes)
            }
        })
        .expect("enter the node")
        .expect("partial sync");
    for (from, to, port, want) in [
        (0, 1, p2, false), // x/b's NetworkPolicy: p1 only
        (2, 1, p1, true),  // c is a client
        (1, 0, pa, true),  // a is not isolated
    ] {
        let (_, _, k) = PODS[to];
        let kernel = connect(&lab.pods[from], SocketAddr::new(pod_ip(k), port)).is_some();
        assert_eq!(
            kernel, want,
            "{from} -> {to}:{port} without the cluster policies"
        );
    }
}
