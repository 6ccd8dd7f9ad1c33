//! The data path with NetworkPolicy: new connections from a client pod to
//! a server pod on one node, with no policy table and with 1,000
//! policies installed, measured alternately in one run (root; everything
//! in network namespaces it creates and removes).
//!
//! The 1,000 policies (100 namespaces × 10) select pods of this node and
//! allow ingress from pods, namespaces, a named port and a numeric one;
//! half also restrict egress. The server and the client are among the
//! selected pods: every packet of the measured connections is judged by
//! the verdict maps (the client's egress, the server's ingress). Before
//! measuring, a connection the policies deny is checked to be dropped, so
//! the table measured is the one enforcing.
//!
//! Both sides run on a node with the Service proxy's tables loaded (no
//! Service needs them here): every Kubernetes node has its proxy, hence
//! conntrack. Without any table a namespace does no connection tracking
//! at all, and the policy table (which needs conntrack for replies) would
//! be charged with conntrack's own cost (~4 µs per connection here).
//!
//! Usage: policy-bench [ROUNDS] [CONNECTIONS]   (default 5 rounds of 3000)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use strait_bench::{routed_pods, Ns, CLIENT_IP, SERVER_IP};
use strait_model::ClusterState;
use strait_policy::fixture::Cluster;
use strait_policy::PolicyApplier;

const NODE: &str = "node-0";
const SERVER: &str = SERVER_IP;
const CLIENT: &str = CLIENT_IP;
const PORT: u16 = 8080;
/// A port of the server no policy opens to the client.
const DENIED_PORT: u16 = 9999;

/// 1,000 policies over 1,000 pods of this node, plus the measured pair:
/// `ns-0/server` (app=server, port `http` = 8080) isolated for ingress,
/// open to `ns-0/client` on `http` only; the client isolated for egress,
/// open to the server's namespace on 8080.
fn cluster() -> ClusterState {
    let mut c = Cluster::default();
    for n in 0..100 {
        let ns = format!("ns-{n}");
        c.namespace(&ns, json!({"team": format!("team-{}", n % 5)}));
        for p in 0..10 {
            let i = n * 10 + p;
            let ip = format!("10.1.{}.{}", i / 256, i % 256);
            let http = if p % 2 == 0 { 8080 } else { 9090 };
            c.pod(
                &ns,
                &format!("pod-{p}"),
                json!({"app": format!("app-{p}"), "tier": format!("t{}", p % 3)}),
                NODE,
                &ip,
                &[("http", "TCP", http)],
            );
        }
        for k in 0..10 {
            let mut spec = json!({
                "podSelector": {"matchLabels": {"app": format!("app-{k}")}},
                "ingress": [{
                    "from": [
                        {"podSelector": {"matchLabels": {"app": format!("app-{}", (k + 1) % 10)}}},
                        {"namespaceSelector": {"matchLabels": {"team": format!("team-{}", k % 5)}},
                         "podSelector": {"matchLabels": {"tier": format!("t{}", k % 3)}}},
                    ],
                    "ports": [{"port": 8000 + k}, {"port": "http"}],
                }],
            });
            if k % 2 == 0 {
                spec["egress"] = json!([{
                    "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": [format!("10.{}.0.0/16", 2 + k % 3)]}}],
                    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 30000, "endPort": 30000 + k}],
                }]);
            }
            c.policy(&ns, &format!("policy-{k}"), spec);
        }
    }
    c.pod(
        "ns-0",
        "server",
        json!({"app": "server"}),
        NODE,
        SERVER,
        &[("http", "TCP", PORT.into())],
    );
    c.pod(
        "ns-0",
        "client",
        json!({"app": "client"}),
        NODE,
        CLIENT,
        &[],
    );
    c.policy(
        "ns-0",
        "server-from-client",
        json!({
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                         "ports": [{"port": "http"}]}],
        }),
    );
    c.policy(
        "ns-0",
        "client-to-ns-0",
        json!({
            "podSelector": {"matchLabels": {"app": "client"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "team-0"}}}],
                        "ports": [{"port": PORT}]}],
        }),
    );
    c.state
}

fn listen(server: &Ns, port: u16) {
    let listener = server
        .1
        .run(move || TcpListener::bind((SERVER, port)).expect("bind in the server pod"))
        .unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.write_all(b"x");
        }
    });
}

/// One round: `n` new connections, each connect + one byte read + close.
/// (connections per second, p50, p90 and p99 of one connection)
fn round(client: &Ns, n: usize) -> (f64, Duration, Duration, Duration) {
    let target: SocketAddr = (SERVER.parse::<std::net::IpAddr>().unwrap(), PORT).into();
    let mut times = client
        .1
        .run(move || {
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let mut s =
                    TcpStream::connect_timeout(&target, Duration::from_secs(2)).expect("connect");
                let mut b = [0u8; 1];
                s.read_exact(&mut b).expect("reply");
                drop(s);
                times.push(t.elapsed());
            }
            times
        })
        .unwrap();
    let total: Duration = times.iter().sum();
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize];
    (
        n as f64 / total.as_secs_f64(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
    )
}

fn connects(client: &Ns, port: u16) -> bool {
    let target: SocketAddr = (SERVER.parse::<std::net::IpAddr>().unwrap(), port).into();
    client
        .1
        .run(move || {
            TcpStream::connect_timeout(&target, Duration::from_millis(500))
                .and_then(|mut s| {
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b)
                })
                .is_ok()
        })
        .unwrap()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3000);

    let (node, client, server) = routed_pods("pol");
    // The client opens many short connections: let it reuse its ports.
    client.sh(&["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"]);
    let proxy = strait_proxy::render(
        &strait_proxy::plan(
            &ClusterState::default(),
            &strait_proxy::NodeContext {
                node_name: NODE.into(),
                ..Default::default()
            },
        ),
        strait_proxy::Family::V4,
    );
    let proxy = strait_proxy::render_full(&proxy);
    node.1
        .run(move || strait_linux::nft_apply(&proxy).expect("the proxy's tables load"))
        .unwrap();
    listen(&server, PORT);
    listen(&server, DENIED_PORT);

    let state = cluster();
    let policies = state.network_policies.len();
    let load = move |node: &Ns| {
        let state = state.clone();
        node.1
            .run(move || {
                let mut applier = PolicyApplier::new(NODE);
                let t = Instant::now();
                applier.full_sync(&state).expect("the policy table loads");
                (t.elapsed(), applier.stats())
            })
            .unwrap()
    };
    let unload = |node: &Ns| {
        node.1
            .run(|| PolicyApplier::new(NODE).cleanup().expect("cleanup"))
            .unwrap()
    };

    println!("NetworkPolicy data path: {n} new connections per round, client pod -> server pod through the node's forward hook (the Service proxy's tables loaded on both sides)");
    assert!(
        connects(&client, DENIED_PORT),
        "without policy, all is open"
    );
    let (took, stats) = load(&node);
    println!(
        "  {policies} policies loaded in {:.0} ms: isolated ingress {}, egress {}, {} classes, {} elements",
        took.as_secs_f64() * 1e3,
        stats.isolated_ingress,
        stats.isolated_egress,
        stats.classes,
        stats.elements
    );
    assert!(connects(&client, PORT), "the allowed port answers");
    assert!(
        !connects(&client, DENIED_PORT),
        "the policies are live: a port they do not open is dropped"
    );
    unload(&node);
    // Warm up both paths (caches, conntrack), unmeasured.
    round(&client, n / 5);

    println!(
        "  {:>5} {:>12} {:>14} {:>10} {:>10} {:>10}",
        "round", "policies", "conn/s", "p50 (us)", "p90 (us)", "p99 (us)"
    );
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (mut rate_none, mut rate_pol, mut p50_none, mut p50_pol) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut ratios_rate = Vec::new();
    let mut ratios_p50 = Vec::new();
    for r in 0..rounds {
        // Alternate which goes first so that a drift of the machine
        // does not favour one side.
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut this = [(0.0, Duration::ZERO); 2];
        for with_policy in order {
            if with_policy {
                load(&node);
            }
            // Settle, unmeasured: what loading (or removing) the table
            // leaves to the kernel to finish is not the data path's cost.
            round(&client, n / 5);
            let (rate, p50, p90, p99) = round(&client, n);
            if with_policy {
                unload(&node);
            }
            println!(
                "  {:>5} {:>12} {:>14.0} {:>10.1} {:>10.1} {:>10.1}",
                r + 1,
                if with_policy { policies } else { 0 },
                rate,
                us(p50),
                us(p90),
                us(p99)
            );
            this[usize::from(with_policy)] = (rate, p50);
            if with_policy {
                rate_pol.push(rate);
                p50_pol.push(us(p50));
            } else {
                rate_none.push(rate);
                p50_none.push(us(p50));
            }
        }
        ratios_rate.push(this[1].0 / this[0].0);
        ratios_p50.push(us(this[1].1) / us(this[0].1));
    }
    let spread = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{min:.3}–{max:.3}")
    };
    println!(
        "  with {policies} policies / none: conn/s ratio median {:.3} (rounds {}), p50 ratio median {:.3} (rounds {})",
        median(&mut ratios_rate.clone()),
        spread(&ratios_rate),
        median(&mut ratios_p50.clone()),
        spread(&ratios_p50),
    );
    println!(
        "  medians: none {:.0} conn/s p50 {:.1} us; policies {:.0} conn/s p50 {:.1} us (goal: within 2 %)",
        median(&mut rate_none),
        median(&mut p50_none),
        median(&mut rate_pol),
        median(&mut p50_pol),
    );
}
