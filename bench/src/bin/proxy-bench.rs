//! The Service proxy at scale, in network namespaces of its own (root):
//! 1. full sync of N Services × 5 endpoints: plan, render, apply, RSS — and,
//!    in the same run, the load time of a kube-proxy-shaped ruleset (per-
//!    Service inline vmap + per-endpoint chains) for the same Services;
//! 2. one endpoint changed at 10k Services: change → kernel has it;
//!    through `update` (full diff) and `apply_changes` (the source's change
//!    set) in turn;
//! 3. one endpoint changed in a manifest file (10k Services in 100 files):
//!    write -> kernel, the agent's file source vs reading everything again;
//! 4. new-connection latency through a ClusterIP vs straight to the pod,
//!    with 10k Services installed.
//!
//! Usage: proxy-bench [SIZES…]   (default 1000 10000 30000)

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use strait_agent::{Agent, Changes, FileSource, ProxyPart, ProxyReporting, Source};
use strait_bench::{routed_pods, Ns};
use strait_linux::{nft_apply, NetNs};
use strait_model::{controllers, parse_str, ClusterState, Format, Kind, ObjectKey};
use strait_proxy::{plan, render, render_full, Family, NodeContext, ServiceProxy, Sync};

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
    // Each change goes in twice in turn: through `update` (which finds the
    // change set by walking every object, as before) and through
    // `apply_changes` with the change set a source gives (the one key it
    // touched, compared). Same proxy, same kernel, same run.
    for (what, scale) in [
        ("endpoint replaced", false),
        ("endpoint added/removed", true),
    ] {
        let mut times = Vec::new();
        let mut given = Vec::new();
        let mut diffs = Vec::new();
        for round in 0..40 {
            let via_source = round % 2 == 1;
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
            let t = Instant::now();
            let _ = current.diff(&next);
            diffs.push(t.elapsed());
            let key = ObjectKey::new(Kind::EndpointSlice, "ns-7", "svc-777-1");
            let (p, took) =
                ns.1.run(move || {
                    let t = Instant::now();
                    let sync = if via_source {
                        let changes = current.diff_keys(&next, [&key]);
                        proxy
                            .apply_changes(&changes, &current, &next)
                            .expect("partial sync")
                    } else {
                        p_update(&mut proxy, &current, &next)
                    };
                    let took = t.elapsed();
                    let path = proxy.last_path();
                    (proxy, (took, sync, next, path))
                })
                .unwrap();
            proxy = p;
            let (elapsed, sync, next, path) = took;
            assert!(matches!(sync, Sync::Partial(_)), "{sync:?}");
            assert_eq!(path, "netlink");
            if via_source {
                given.push(elapsed);
            } else {
                times.push(elapsed);
            }
            current = next;
        }
        let (full, src) = (median(&mut times), median(&mut given));
        println!(
            "  {what:<24} median of 20: full diff in the path {:.2} ms (min {:.2}, max {:.2}) | change set from the source {:.2} ms (min {:.2}, max {:.2}) | ratio {:.2}; the full diff alone: {:.2} ms",
            ms(full),
            ms(times[0]),
            ms(times[times.len() - 1]),
            ms(src),
            ms(given[0]),
            ms(given[given.len() - 1]),
            src.as_secs_f64() / full.as_secs_f64(),
            ms(median(&mut diffs)),
        );
    }
    println!("  (kube-proxy shape through nft: 290 ms per the notes)");
    drop(ns);

    println!("\n3. One endpoint changed in a manifest file, 10k Services in 100 files (write -> kernel has it)");
    file_source(&ctx);

    println!("\n4. New-connection latency with 10k Services installed (client pod -> node -> server pod)");
    datapath(&ctx);
}

/// The text of manifest file `f` of 100: Services 100f..100f+99 as in
/// `cluster_json`, with the first endpoint of Service `changed` at `ip`.
fn file_json(f: usize, changed: Option<(usize, &str)>) -> String {
    let mut out = String::new();
    for line in cluster_json(100 * (f + 1), None).lines().skip(200 * f) {
        let mut line = line.to_owned();
        if let Some((s, ip)) = changed {
            if line.contains(&format!(r#""name":"svc-{s}-1""#)) {
                let i = s * 5;
                let old = format!("10.{}.{}.{}", 128 + i / 65536, (i / 256) % 256, i % 256);
                line = line.replacen(
                    &format!(r#""addresses":["{old}"]"#),
                    &format!(r#""addresses":["{ip}"]"#),
                    1,
                );
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Write a file as editors do: a temporary file renamed over it.
fn write_over(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The agent with the file source (inotify, re-read of the changed file,
/// scoped change set) against what `strait proxy` did before: read every
/// file, run the controllers, diff everything, `update` (its mtime poll
/// wait, up to --poll-ms, not counted). Each in a namespace of its own.
fn file_source(ctx: &NodeContext) {
    let dir = std::env::temp_dir().join(format!("strait-bench-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    for f in 0..100 {
        std::fs::write(dir.join(format!("f{f:03}.json")), file_json(f, None)).unwrap();
    }
    let file7 = dir.join("f007.json");
    let config = controllers::ClusterConfig::default()
        .with_service_cidrs(&["10.96.0.0/12".into()])
        .unwrap();
    const ROUNDS: usize = 20;

    // New: the agent, in its namespace, told each applied snapshot.
    let ns = Ns::new("files-new");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let agent = {
        let (dir, config, ctx, ns_path) = (
            dir.clone(),
            config.clone(),
            ctx.clone(),
            format!("/run/netns/{}", ns.0),
        );
        std::thread::spawn(move || {
            let _inside = NetNs::open(&ns_path).unwrap().enter().unwrap();
            let mut source = FileSource::open(
                &[dir.display().to_string()],
                false,
                config,
                FileSource::model_reader(),
            )
            .unwrap();
            let mut agent = Agent::new(vec![Box::new(ProxyPart::new(
                ctx,
                ProxyReporting::default(),
            ))]);
            let first = source.next().unwrap().unwrap();
            assert!(agent.apply(&first).is_empty());
            done_tx
                .send((Instant::now(), Default::default(), 0))
                .unwrap();
            for _ in 0..ROUNDS {
                let update = source.next().unwrap().unwrap();
                let t = Instant::now();
                let errors = agent.apply(&update);
                assert!(errors.is_empty(), "{errors:?}");
                let n = match &update.changes {
                    Changes::Set(s) => s.len(),
                    Changes::Everything => usize::MAX,
                };
                done_tx
                    .send((Instant::now(), (source.stats().clone(), t.elapsed()), n))
                    .unwrap();
            }
            source.stats().full_diffs
        })
    };
    done_rx.recv().unwrap();
    let mut new_times = Vec::new();
    let mut parts: Vec<(f64, f64, f64, f64)> = Vec::new();
    for round in 0..ROUNDS {
        let ip = format!("10.250.1.{}", round + 1);
        let t = Instant::now();
        write_over(&file7, &file_json(7, Some((777, &ip))));
        let (at, (stats, apply), n): (Instant, (strait_agent::FileSourceStats, Duration), usize) =
            done_rx.recv().unwrap();
        assert_eq!(n, 1, "one EndpointSlice changed");
        new_times.push(at - t);
        parts.push((
            ms(stats.last_read),
            ms(stats.last_reconcile),
            ms(stats.last_changes),
            ms(apply),
        ));
    }
    let full_diffs = agent.join().unwrap();
    drop(ns);

    // Before: everything read again, the controllers, the full diff, update.
    let ns = Ns::new("files-old");
    let old_times = {
        let (dir, config, ctx, file7) = (dir.clone(), config.clone(), ctx.clone(), file7.clone());
        ns.1.run(move || {
            let load = |previous: Option<&ClusterState>| {
                let mut read = FileSource::model_reader();
                let objects = read(&[dir.display().to_string()], false).unwrap();
                let desired = ClusterState::from_objects(
                    objects.into_iter().map(|(o, origin)| (o, Some(origin))),
                )
                .unwrap();
                controllers::reconcile(desired, previous, &config).unwrap()
            };
            let mut proxy = ServiceProxy::new(ctx);
            let mut current = load(None);
            proxy.full_sync(&current).unwrap();
            let mut times = Vec::new();
            for round in 0..ROUNDS {
                let ip = format!("10.250.2.{}", round + 1);
                let t = Instant::now();
                write_over(&file7, &file_json(7, Some((777, &ip))));
                let next = load(Some(&current));
                proxy.update(&current, &next).unwrap();
                times.push(t.elapsed());
                current = next;
            }
            times
        })
        .unwrap()
    };
    drop(ns);
    let mut old_times = old_times;
    let (new_m, old_m) = (median(&mut new_times), median(&mut old_times));
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "  file source (inotify, 1 file read):  median of {ROUNDS}: {:.2} ms (min {:.2}, max {:.2}); of which read {:.2}, controllers {:.2}, change set {:.3}, proxy {:.2} (medians); full diffs: {full_diffs}",
        ms(new_m), ms(new_times[0]), ms(new_times[ROUNDS - 1]),
        med(parts.iter().map(|p| p.0).collect()),
        med(parts.iter().map(|p| p.1).collect()),
        med(parts.iter().map(|p| p.2).collect()),
        med(parts.iter().map(|p| p.3).collect()),
    );
    println!(
        "  before (all 100 files, full diff):    median of {ROUNDS}: {:.2} ms (min {:.2}, max {:.2}), plus the mtime poll wait (up to --poll-ms)",
        ms(old_m), ms(old_times[0]), ms(old_times[ROUNDS - 1]),
    );
    println!(
        "  ratio file source / before: {:.3}",
        new_m.as_secs_f64() / old_m.as_secs_f64()
    );
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn datapath(ctx: &NodeContext) {
    let (node, client, server) = routed_pods("dp");
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
