//! The first full sync at the scale: 10k Services × 5 endpoints
//! and 10k pods in the lab's API server (in process, written straight to
//! its store), listed by KubeSource. A measurement, run on purpose:
//! `cargo test -p strait-kube --test scale -- --ignored --nocapture`
//! (debug build unless `--release`). With the strait binary built, its
//! `agent --dry-run` is measured too (time and peak RSS, `/usr/bin/time`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::json;
use strait_apiserver::auth::Tokens;
use strait_apiserver::resources::Resource;
use strait_apiserver::server::{Server, ServerConfig};
use strait_apiserver::store::AdmitAll;
use strait_apiserver::tls::Pki;
use strait_kube::{ClientConfig, KubeSource, Options};

/// Bytes allocated and not yet freed, whichever thread did it: what the
/// source keeps, apart from the allocator's own overhead and free space.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator with the caller's own
// layout and pointer; the counter is only arithmetic on the side.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        std::alloc::System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        std::alloc::System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        std::alloc::System.realloc(ptr, layout, new)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_mb() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
}

const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 5;
const PODS: usize = 10_000;

fn ip(base: u32, i: usize) -> String {
    let n = base + i as u32;
    format!(
        "{}.{}.{}.{}",
        n >> 24,
        (n >> 16) & 255,
        (n >> 8) & 255,
        n & 255
    )
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The lab's API server on 127.0.0.1:0 holding the cluster:
/// 10k Services, one EndpointSlice of 5 endpoints each, 10k pods.
fn cluster() -> (tokio::runtime::Runtime, Server) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime
        .block_on(Server::start(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            pki: Pki::create(&["127.0.0.1".into()]).unwrap(),
            tokens: Tokens::default(),
            admission: Box::new(AdmitAll),
            history: 1000,
            extra_listeners: Vec::new(),
        }))
        .unwrap();
    let started = Instant::now();
    let store = server.store().clone();
    let put = |api_version: &str, kind: &str, ns: &str, o: serde_json::Value| {
        let r = Resource::by_kind(api_version, kind).unwrap();
        server
            .with_write_context(|ctx| store.create(r, ns, o, ctx))
            .unwrap();
    };
    // `default` is made by the server itself.
    put(
        "v1",
        "Node",
        "",
        json!({"metadata": {"name": "node-1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.50.11"}]}}),
    );
    for i in 0..SERVICES {
        let name = format!("svc-{i}");
        put(
            "v1",
            "Service",
            "default",
            json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip(0x0a60_0000 + 10, i), "selector": {"app": name},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}),
        );
        let endpoints: Vec<serde_json::Value> = (0..ENDPOINTS)
            .map(|e| json!({"addresses": [ip(0x0af4_0000, i * ENDPOINTS + e)], "conditions": {"ready": true}, "nodeName": "node-1"}))
            .collect();
        put(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "default",
            json!({
            "metadata": {"name": format!("{name}-1"), "namespace": "default",
                "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints}),
        );
    }
    for i in 0..PODS {
        let pod_ip = ip(0x0af4_0000, i);
        put(
            "v1",
            "Pod",
            "default",
            json!({"metadata": {"name": format!("pod-{i}"), "namespace": "default",
                "labels": {"app": format!("svc-{}", i / ENDPOINTS)}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "nginx",
                "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
                "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
    }
    println!(
        "stored {} objects in {:.1} s",
        2 + 2 * SERVICES + PODS,
        started.elapsed().as_secs_f64()
    );

    (runtime, server)
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn first_full_sync_of_10k_services_and_10k_pods() {
    let (_runtime, server) = cluster();
    let store = server.store().clone();
    let before = rss_kb();
    let live_before = live_mb();
    let started = Instant::now();
    let mut source = KubeSource::start(
        ClientConfig::KubeconfigYaml(server.admin_kubeconfig()),
        Options::default(),
    )
    .unwrap();
    let first = source
        .next_timeout(Some(Duration::from_secs(300)))
        .unwrap()
        .expect("a first update");
    let took = started.elapsed();
    assert_eq!(first.state.services.len(), SERVICES);
    assert_eq!(first.state.endpoint_slices.len(), SERVICES);
    assert_eq!(first.state.pods.len(), PODS);
    println!(
        "KubeSource first full sync of {SERVICES} Services, {SERVICES} EndpointSlices × {ENDPOINTS}, {PODS} Pods: {:.2} s; this process's RSS {:.0} MB → {:.0} MB (the in-process API server's list responses included)",
        took.as_secs_f64(),
        before as f64 / 1024.0,
        rss_kb() as f64 / 1024.0
    );
    let live_synced = live_mb() - live_before;
    let (services, slices, pods) = (
        first.state.services.clone(),
        first.state.endpoint_slices.clone(),
        first.state.pods.clone(),
    );
    let live_with_indexes = live_mb() - live_before;
    let indexes = live_with_indexes - live_synced;
    drop((services, slices, pods));
    // The objects themselves, kind by kind: a deep copy of each, counted
    // while it lives.
    let at = live_mb();
    let copies: Vec<_> = first.state.services.iter().map(|o| (**o).clone()).collect();
    let per_service = (live_mb() - at) * 1048576.0 / copies.len() as f64;
    drop(copies);
    let at = live_mb();
    let copies: Vec<_> = first
        .state
        .endpoint_slices
        .iter()
        .map(|o| (**o).clone())
        .collect();
    let per_slice = (live_mb() - at) * 1048576.0 / copies.len() as f64;
    drop(copies);
    let at = live_mb();
    let copies: Vec<_> = first.state.pods.iter().map(|o| (**o).clone()).collect();
    let per_pod = (live_mb() - at) * 1048576.0 / copies.len() as f64;
    drop(copies);
    println!(
        "bytes per object kept: Service {per_service:.0}, EndpointSlice (5 endpoints) {per_slice:.0}, Pod (compact) {per_pod:.0}"
    );
    let copying = Instant::now();
    let copy = (*first.state).clone();
    println!(
        "one copy of this snapshot (what each update costs before anything else): {:.1} ms",
        copying.elapsed().as_secs_f64() * 1e3
    );
    drop(copy);
    drop(first);
    println!(
        "live heap of the source with its first snapshot: {live_synced:.1} MB (indexes of Services, EndpointSlices and Pods, one copy: {indexes:.1} MB); the snapshot dropped: {:.1} MB",
        live_mb() - live_before
    );

    // One change at this scale: written to the store, handed out as an update.
    let slices = Resource::by_kind("discovery.k8s.io/v1", "EndpointSlice").unwrap();
    let mut took = Vec::new();
    for i in 0..9 {
        let started = Instant::now();
        server
            .with_write_context(|ctx| {
                store.modify(
                    slices,
                    "default",
                    "svc-7-1",
                    None,
                    &mut |old| {
                        let mut new = old.clone();
                        new["endpoints"][0]["addresses"][0] = json!(format!("10.250.0.{i}"));
                        Ok(new)
                    },
                    ctx,
                )
            })
            .unwrap();
        let update = source
            .next_timeout(Some(Duration::from_secs(30)))
            .unwrap()
            .expect("the change arrives");
        took.push(started.elapsed());
        match &update.changes {
            strait_agent::Changes::Set(s) => assert_eq!(s.len(), 1),
            strait_agent::Changes::Everything => panic!("a change set was expected"),
        }
    }
    took.sort();
    println!(
        "one EndpointSlice change at this scale → update: median {:.2} ms",
        took[took.len() / 2].as_secs_f64() * 1e3
    );
    drop(source);
    println!(
        "live heap after the source is dropped: {:.1} MB more than before it",
        live_mb() - live_before
    );

    // The agent binary, if built: its own time and peak memory.
    // The binary of this build's profile.
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let strait = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join(profile)
        .join("strait");
    if strait.exists() && std::path::Path::new("/usr/bin/time").exists() {
        let dir = std::env::temp_dir().join(format!("strait-scale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, server.admin_kubeconfig()).unwrap();
        let out = std::process::Command::new("/usr/bin/time")
            .args(["-f", "TIME %e s, max RSS %M KB"])
            .arg(&strait)
            .args([
                "-v",
                "agent",
                "--dry-run",
                "--node-name",
                "node-1",
                "--kubeconfig",
            ])
            .arg(&kubeconfig)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let rules = String::from_utf8_lossy(&out.stdout).lines().count();
        println!(
            "target/{profile}/strait agent --dry-run (list, plan and print {rules} lines of rules): {}",
            stderr
                .lines()
                .find(|l| l.starts_with("TIME"))
                .unwrap_or("?")
        );
        // The agent's own account of its memory, phase by phase.
        for line in stderr.lines().filter(|l| l.contains("rss_kb")) {
            println!("  {}", line.split_once("INFO ").map_or(line, |(_, l)| l));
        }
    }
    server.shutdown();
}

/// One change fanned out to 10 watching sources (each a KubeSource of its
/// own, as 10 nodes' agents are, every one holding the whole cluster): the
/// time from the write to the API server's store until the last of the 10
/// has the change in its update. Services and EndpointSlices in turn.
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn one_change_fanned_out_to_10_watching_sources() {
    const WATCHERS: usize = 10;
    const ROUNDS: usize = 40;
    let (_runtime, server) = cluster();
    let store = server.store().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (got_tx, got_rx) = mpsc::channel::<(usize, Instant, usize)>();
    let started = Instant::now();
    let mut watchers = Vec::new();
    for w in 0..WATCHERS {
        let kubeconfig = server.admin_kubeconfig();
        let (stop, ready_tx, got_tx) = (stop.clone(), ready_tx.clone(), got_tx.clone());
        watchers.push(std::thread::spawn(move || {
            let mut source =
                KubeSource::start(ClientConfig::KubeconfigYaml(kubeconfig), Options::default())
                    .unwrap();
            let first = source
                .next_timeout(Some(Duration::from_secs(600)))
                .unwrap()
                .expect("a first update");
            assert_eq!(first.state.services.len(), SERVICES);
            drop(first);
            ready_tx.send(()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                // A short wait: the loop looks at `stop` between updates.
                if let Some(u) = source
                    .next_timeout(Some(Duration::from_millis(200)))
                    .unwrap()
                {
                    let at = Instant::now();
                    let n = match &u.changes {
                        strait_agent::Changes::Set(s) => s.len(),
                        strait_agent::Changes::Everything => usize::MAX,
                    };
                    if got_tx.send((w, at, n)).is_err() {
                        return;
                    }
                }
            }
        }));
    }
    for _ in 0..WATCHERS {
        ready_rx
            .recv_timeout(Duration::from_secs(900))
            .expect("every source synced");
    }
    println!(
        "{WATCHERS} sources synced in {:.1} s (in parallel, on this machine's cores)",
        started.elapsed().as_secs_f64()
    );

    let slices = Resource::by_kind("discovery.k8s.io/v1", "EndpointSlice").unwrap();
    let services = Resource::by_kind("v1", "Service").unwrap();
    let mut last = Vec::new();
    let mut each = Vec::new();
    for round in 0..ROUNDS {
        let written = Instant::now();
        server
            .with_write_context(|ctx| {
                if round % 2 == 0 {
                    store.modify(
                        slices,
                        "default",
                        "svc-7-1",
                        None,
                        &mut |old| {
                            let mut new = old.clone();
                            new["endpoints"][0]["addresses"][0] =
                                json!(format!("10.250.0.{round}"));
                            Ok(new)
                        },
                        ctx,
                    )
                } else {
                    store.modify(
                        services,
                        "default",
                        "svc-9",
                        None,
                        &mut |old| {
                            let mut new = old.clone();
                            new["spec"]["ports"][0]["port"] = json!(8000 + round);
                            Ok(new)
                        },
                        ctx,
                    )
                }
            })
            .unwrap();
        let mut seen = [false; WATCHERS];
        let mut latest = Duration::ZERO;
        for _ in 0..WATCHERS {
            let (w, at, n) = got_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("every source gets the change");
            assert_eq!(n, 1, "one object changed");
            assert!(!seen[w], "source {w} had two updates for one change");
            seen[w] = true;
            let took = at.duration_since(written);
            each.push(took);
            latest = latest.max(took);
        }
        if round == 0 {
            println!(
                "the first change after the sync → all {WATCHERS} sources: {:.2} ms",
                latest.as_secs_f64() * 1e3
            );
        }
        last.push(latest);
    }
    stop.store(true, Ordering::Relaxed);
    for w in watchers {
        w.join().unwrap();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pick = |v: &mut Vec<Duration>, q: f64| {
        v.sort();
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    println!(
        "one change → all {WATCHERS} sources' updates ({ROUNDS} changes, Services and EndpointSlices in turn): median {:.2} ms, p99 {:.2} ms, min {:.2} ms, max {:.2} ms; per source: median {:.2} ms, p99 {:.2} ms",
        ms(pick(&mut last, 0.5)),
        ms(pick(&mut last, 0.99)),
        ms(pick(&mut last, 0.0)),
        ms(pick(&mut last, 1.0)),
        ms(pick(&mut each, 0.5)),
        ms(pick(&mut each, 0.99)),
    );
    server.shutdown();
}
