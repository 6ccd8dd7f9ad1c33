//! The Service proxy at scale, in network namespaces of its own (root):
//! 1. full sync of N Services × 5 endpoints: plan, render, apply, RSS — and,
//!    in the same run, the load time of a kube-proxy-shaped ruleset (per-
//!    Service inline vmap + per-endpoint chains) for the same Services;
//! 2. one endpoint changed at 10k Services: change → kernel has it;
//! 3. new-connection latency through a ClusterIP vs straight to the pod,
//!    with 10k Services installed.
//!
//! Usage: proxy-bench [SIZES…]   (default 1000 10000 30000)

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use strait_linux::{nft_apply, NetNs};
use strait_model::{controllers, parse_str, ClusterState, Format};
use strait_proxy::{plan, render, render_full, Family, NodeContext, ServiceProxy, Sync};

struct Ns(String, NetNs);

impl Ns {
    fn new(role: &str) -> Ns {
        let name = format!("strait-bench-{}-{role}", std::process::id());
        let _ = NetNs::delete(&name);
        Ns(
            name.clone(),
            NetNs::create(&name).unwrap_or_else(|e| panic!("{name}: {e}")),
        )
    }
    fn sh(&self, args: &[&str]) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = self
            .1
            .run(move || Command::new(&args[0]).args(&args[1..]).output().unwrap())
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = NetNs::delete(&self.0);
    }
}

/// The ClusterIP of Service `s`: clear of the addresses Kubernetes reserves.
fn vip(s: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) + 1000 + s as u32)
}

/// N Services with 5 endpoints each (selector-less, explicit slices), as JSON.
fn cluster_json(n: usize, first_endpoint: Option<&str>) -> String {
    let mut out = String::new();
    for s in 0..n {
        let vip = vip(s);
        let _ = writeln!(
            out,
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"svc-{s}","namespace":"ns-{ns}"}},"spec":{{"clusterIP":"{vip}","ports":[{{"name":"http","port":80,"targetPort":8080}}]}}}}"#,
            ns = s % 10
        );
        let eps: Vec<String> = (0..5)
            .map(|e| {
                let i = s * 5 + e;
                let ip = match (s, e, first_endpoint) {
                    (0, 0, Some(ip)) => ip.to_owned(),
                    _ => format!("10.{}.{}.{}", 128 + i / 65536, (i / 256) % 256, i % 256),
                };
                format!(r#"{{"addresses":["{ip}"],"nodeName":"node-{}"}}"#, i % 3)
            })
            .collect();
        let _ = writeln!(
            out,
            r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{{"name":"svc-{s}-1","namespace":"ns-{ns}","labels":{{"kubernetes.io/service-name":"svc-{s}"}}}},"addressType":"IPv4","ports":[{{"name":"http","port":8080}}],"endpoints":[{}]}}"#,
            eps.join(","),
            ns = s % 10
        );
    }
    out
}

fn state_of(json: &str) -> ClusterState {
    let loaded = parse_str("bench.json", json, Format::Json).expect("valid");
    let desired = ClusterState::from_objects(
        loaded
            .objects
            .into_iter()
            .map(|(o, origin)| (o, Some(origin))),
    )
    .unwrap();
    let config = controllers::ClusterConfig::default()
        .with_service_cidrs(&["10.96.0.0/12".into()])
        .unwrap();
    controllers::reconcile(desired, None, &config).expect("reconcile")
}

/// kube-proxy's nftables shape for the same Services: a chain per Service
/// with an inline `numgen … vmap { … }` (an anonymous map each) and a chain
/// per endpoint.
fn kube_proxy_shaped(n: usize) -> String {
    let mut out = String::from("table ip kube-proxy {\n map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }\n");
    let mut elements = Vec::new();
    for s in 0..n {
        let mut vmap = Vec::new();
        for e in 0..5 {
            let i = s * 5 + e;
            let ip = format!("10.{}.{}.{}", 128 + i / 65536, (i / 256) % 256, i % 256);
            let _ = writeln!(out, " chain endpoint-{s}-{e} {{\n  ip saddr {ip} jump mark-for-masquerade\n  meta l4proto tcp dnat to {ip}:8080\n }}");
            vmap.push(format!("{e} : goto endpoint-{s}-{e}"));
        }
        let _ = writeln!(
            out,
            " chain service-{s} {{\n  numgen random mod 5 vmap {{ {} }}\n }}",
            vmap.join(", ")
        );
        elements.push(format!("{} . tcp . 80 : goto service-{s}", vip(s)));
    }
    out.push_str(" chain mark-for-masquerade {\n  meta mark set meta mark or 0x4000\n }\n}\n");
    let _ = writeln!(
        out,
        "add element ip kube-proxy service-ips {{ {} }}",
        elements.join(", ")
    );
    out
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn apply_in(ns: &Ns, script: String) -> Duration {
    ns.1.run(move || {
        let t = Instant::now();
        nft_apply(&script).expect("nft accepts the ruleset");
        t.elapsed()
    })
    .unwrap()
}

fn main() {
    if !strait_linux::is_root() {
        eprintln!("proxy-bench needs root (it builds network namespaces)");
        std::process::exit(2);
    }
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1000, 10000, 30000]
    } else {
        sizes
    };
    let ctx = NodeContext {
        node_name: "node-0".into(),
        node_ips: Vec::new(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
        nodeport_addresses: vec!["0.0.0.0/0".parse().unwrap()],
    };

    println!("1. Full sync, Services x 5 endpoints (seconds)");
    println!(
        "{:>8} {:>8} {:>8} {:>8} {:>8} {:>9} | {:>14} {:>6}",
        "services", "plan", "render", "apply", "total", "peak RSS", "kube-proxy shape", "ratio"
    );
    for &n in &sizes {
        let state = state_of(&cluster_json(n, None));
        let t = Instant::now();
        let table = plan(&state, &ctx);
        let plan_t = t.elapsed();
        let t = Instant::now();
        let script = render_full(&render(&table, Family::V4));
        let render_t = t.elapsed();
        let ns = Ns::new("full");
        let apply_t = apply_in(&ns, script);
        drop(ns);
        let total = plan_t + render_t + apply_t;
        // The anchor is quadratic in the kernel: past 10k it takes minutes.
        let (anchor, ratio) = if n <= 10000 {
            let ns = Ns::new("anchor");
            let a = apply_in(&ns, kube_proxy_shaped(n));
            (
                secs(a),
                format!("{:.2}", total.as_secs_f64() / a.as_secs_f64()),
            )
        } else {
            ("(skipped)".into(), "-".into())
        };
        println!(
            "{n:>8} {:>8} {:>8} {:>8} {:>8} {:>6} MB | {anchor:>14} {ratio:>6}",
            secs(plan_t),
            secs(render_t),
            secs(apply_t),
            secs(total),
            strait_linux::peak_rss_mb()
        );
    }

    println!("\n2. One endpoint changed at 10k Services (change -> kernel has it)");
    let ns = Ns::new("partial");
    let base = state_of(&cluster_json(10000, None));
    let (mut proxy, full) =
        ns.1.run({
            let (ctx, base) = (ctx.clone(), base.clone());
            move || {
                let mut p = ServiceProxy::new(ctx);
                let t = Instant::now();
                p.full_sync(&base).expect("full sync");
                (p, t.elapsed())
            }
        })
        .unwrap();
    println!(
        "  full sync by the proxy (plan, render, apply): {} s",
        secs(full)
    );
    let mut current = base.clone();
    // Two kinds of change, as a watch delivers them (one EndpointSlice
    // replaced): a pod replaced by one with a new IP (same count), and a
    // Service scaled 5 -> 6 -> 5 (count changes: the dispatch changes too).
    for (what, scale) in [
        ("endpoint replaced", false),
        ("endpoint added/removed", true),
    ] {
        let mut times = Vec::new();
        // Which way each sync went in: "netlink" or "nft".
        let mut paths: std::collections::BTreeMap<&str, usize> = Default::default();
        for round in 0..20 {
            let mut next = current.clone();
            let mut slice = (**current.endpoint_slices.get("ns-7", "svc-777-1").unwrap()).clone();
            if scale {
                if round % 2 == 0 {
                    let mut extra = slice.endpoints[0].clone();
                    extra.addresses = vec!["10.251.0.1".into()];
                    slice.endpoints.push(extra);
                } else {
                    slice.endpoints.pop();
                }
            } else {
                slice.endpoints[0].addresses = vec![format!("10.250.0.{}", round + 1)];
            }
            next.insert(strait_model::Object::EndpointSlice(slice.into()));
            let (p, took) =
                ns.1.run(move || {
                    let t = Instant::now();
                    let sync = p_update(&mut proxy, &current, &next);
                    let took = t.elapsed();
                    let path = proxy.last_path();
                    (proxy, (took, sync, next, path))
                })
                .unwrap();
            proxy = p;
            let (elapsed, sync, next, path) = took;
            assert!(matches!(sync, Sync::Partial(_)), "{sync:?}");
            *paths.entry(path).or_default() += 1;
            times.push(elapsed);
            current = next;
        }
        times.sort();
        let via: Vec<String> = paths.iter().map(|(p, n)| format!("{p} x{n}")).collect();
        println!(
            "  {what:<24} median of 20: {:.1} ms (min {:.1}, max {:.1}; via {}); kube-proxy shape through nft: 290 ms per the notes",
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1]),
            via.join(", ")
        );
    }
    drop(ns);

    println!("\n3. New-connection latency with 10k Services installed (client pod -> node -> server pod)");
    datapath(&ctx);
}

fn datapath(ctx: &NodeContext) {
    let node = Ns::new("dp-node");
    let client = Ns::new("dp-client");
    let server = Ns::new("dp-server");
    node.sh(&[
        "ip", "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", &client.0,
    ]);
    node.sh(&[
        "ip", "link", "add", "s0", "type", "veth", "peer", "name", "eth0", "netns", &server.0,
    ]);
    node.sh(&["ip", "addr", "add", "10.244.0.1/30", "dev", "c0"]);
    node.sh(&["ip", "addr", "add", "10.244.0.5/30", "dev", "s0"]);
    for dev in ["c0", "s0"] {
        node.sh(&["ip", "link", "set", dev, "up"]);
    }
    node.sh(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    client.sh(&["ip", "addr", "add", "10.244.0.2/30", "dev", "eth0"]);
    server.sh(&["ip", "addr", "add", "10.244.0.6/30", "dev", "eth0"]);
    for (ns, gw) in [(&client, "10.244.0.1"), (&server, "10.244.0.5")] {
        ns.sh(&["ip", "link", "set", "eth0", "up"]);
        ns.sh(&["ip", "link", "set", "lo", "up"]);
        ns.sh(&["ip", "route", "add", "default", "via", gw]);
    }
    // 10k Services; the first one's endpoints are all the server.
    let mut json = cluster_json(10000, None);
    json = json.replacen(
        r#""addresses":["10.128.0.0"]"#,
        r#""addresses":["10.244.0.6"]"#,
        1,
    );
    for e in 1..5 {
        json = json.replacen(
            &format!(r#""addresses":["10.128.0.{e}"]"#),
            r#""addresses":["10.244.0.6"]"#,
            1,
        );
    }
    let state = state_of(&json);
    let ruleset = render(&plan(&state, ctx), Family::V4);
    apply_in(&node, render_full(&ruleset));
    let listener = server
        .1
        .run(|| TcpListener::bind("10.244.0.6:8080").unwrap())
        .unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.write_all(b"x");
        }
    });
    let vip = SocketAddr::new(vip(0).into(), 80);
    let direct: SocketAddr = "10.244.0.6:8080".parse().unwrap();
    let samples = client
        .1
        .run(move || {
            let mut via_vip = Vec::new();
            let mut via_pod = Vec::new();
            for i in 0..4000 {
                let target = if i % 2 == 0 { vip } else { direct };
                let t = Instant::now();
                let mut s =
                    TcpStream::connect_timeout(&target, Duration::from_secs(2)).expect("connect");
                let mut b = [0u8; 1];
                s.read_exact(&mut b).expect("reply");
                let d = t.elapsed();
                if i >= 200 {
                    if i % 2 == 0 {
                        via_vip.push(d)
                    } else {
                        via_pod.push(d)
                    }
                }
            }
            (via_vip, via_pod)
        })
        .unwrap();
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 - 1.0) * p) as usize]
    };
    let (mut vip_t, mut pod_t) = samples;
    let (v50, v99, p50, p99) = (
        pct(&mut vip_t, 0.5),
        pct(&mut vip_t, 0.99),
        pct(&mut pod_t, 0.5),
        pct(&mut pod_t, 0.99),
    );
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("  {:>10} {:>10} {:>10}", "", "p50 (us)", "p99 (us)");
    println!("  {:>10} {:>10.1} {:>10.1}", "ClusterIP", us(v50), us(v99));
    println!("  {:>10} {:>10.1} {:>10.1}", "pod IP", us(p50), us(p99));
    println!(
        "  ratio ClusterIP/pod: p50 {:.2}, p99 {:.2}   ({} connections each, interleaved)",
        us(v50) / us(p50),
        us(v99) / us(p99),
        vip_t.len()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn p_update(proxy: &mut ServiceProxy, old: &ClusterState, new: &ClusterState) -> Sync {
    proxy.update(old, new).expect("partial sync")
}
