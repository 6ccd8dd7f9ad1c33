//! `strait agent` for real at the scale: 10k Services × 5
//! endpoints and 10k pods in the lab's API server, the agent programming
//! them into nftables, as root, in a network namespace of the test (the
//! API server listens in it too). A measurement, run on purpose:
//! `cargo test -p strait --test agent_scale -- --ignored --nocapture`.
//! It prints the agent's first sync time and its memory (VmRSS, VmHWM,
//! RssAnon) step by step as the agent logs it, and as /proc says once the
//! first sync is done.

#[path = "common/api.rs"]
mod api;
mod common;

use std::time::{Duration, Instant};

use api::ApiServer;
use common::{root_or_skip, spawn_in, wait_for, TempDir, TestNs};
use serde_json::json;
use strait_apiserver::auth::Tokens;
use strait_apiserver::resources::Resource;

const STRAIT: &str = env!("CARGO_BIN_EXE_strait");
const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 5;
const PODS: usize = 10_000;

fn ip(base: u32, i: usize) -> String {
    std::net::Ipv4Addr::from(base + i as u32).to_string()
}

/// `VmRSS`, `VmHWM` and `RssAnon` of a process, in kB.
fn memory_kb(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"), field("RssAnon:"))
}

/// The agent as a node runs it by default: the Service proxy (it does not
/// watch Pods, as kube-proxy does not).
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn agent_first_sync_of_10k_services_and_10k_pods() {
    if !root_or_skip("agent_first_sync_of_10k_services_and_10k_pods") {
        return;
    }
    first_sync(false);
}

/// With NetworkPolicy enforced (`--network-policy`): the agent also lists
/// every Pod, Namespace and policy.
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn agent_first_sync_of_10k_services_and_10k_pods_with_network_policy() {
    if !root_or_skip("agent_first_sync_of_10k_services_and_10k_pods_with_network_policy") {
        return;
    }
    first_sync(true);
}

fn first_sync(network_policy: bool) {
    let ns = TestNs::new("agent-scale");
    assert!(ns
        .command("ip", &["link", "set", "lo", "up"])
        .status
        .success());
    let dir = TempDir::new("agent-scale");
    // The server's socket is in the namespace.
    let api = ApiServer::start(Some(&ns), Tokens::default());
    let server = api.server();
    let store = server.store().clone();
    let put = |api_version: &str, kind: &str, ns: &str, o: serde_json::Value| {
        let r = Resource::by_kind(api_version, kind).unwrap();
        server
            .with_write_context(|ctx| store.create(r, ns, o, ctx))
            .unwrap();
    };
    put(
        "v1",
        "Node",
        "",
        json!({"metadata": {"name": "node-1"},
        "spec": {"podCIDR": "10.244.0.0/16", "podCIDRs": ["10.244.0.0/16"]},
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

    let kubeconfig = std::path::Path::new(dir.path()).join("kubeconfig");
    std::fs::write(&kubeconfig, server.admin_kubeconfig()).unwrap();
    let kc = kubeconfig.display().to_string();
    let log = std::path::Path::new(dir.path()).join("agent.log");
    let started = Instant::now();
    let mut args = vec![
        "-v",
        "agent",
        "--kubeconfig",
        &kc,
        "--node-name",
        "node-1",
        "--cluster-cidr",
        "10.244.0.0/16",
        "--healthz-bind-address",
        "127.0.0.1:0",
    ];
    if network_policy {
        args.push("--network-policy");
    }
    let agent = spawn_in(&ns, STRAIT, &args, &log);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(600), || logged()
            .contains("first sync done")),
        "no first sync: {}",
        logged()
    );
    let took = started.elapsed();
    let (rss, peak, anon) = memory_kb(agent.0.id());
    // The rules are in the kernel: the last Service's address among them.
    let table = ns.command("nft", &["list", "table", "ip", "strait"]);
    let rules = String::from_utf8_lossy(&table.stdout);
    assert!(
        rules.contains(&ip(0x0a60_0000 + 10, SERVICES - 1)),
        "the last Service is not in the rules"
    );
    println!(
        "strait agent ({}{}), first sync of {SERVICES} Services × {ENDPOINTS} endpoints and {PODS} Pods into nftables: {:.2} s (start → logged done); then VmRSS {:.0} MB, VmHWM {:.0} MB, RssAnon {:.0} MB",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        if network_policy {
            ", --network-policy"
        } else {
            ""
        },
        took.as_secs_f64(),
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        anon as f64 / 1024.0
    );
    // Where the time goes: each kind's list done, the plan applied, the
    // memory at each step (the log's own timestamps).
    for line in logged().lines().filter(|l| {
        ["rss_kb", "full list", "full sync", "waiting for the first"]
            .iter()
            .any(|w| l.contains(w))
    }) {
        println!("  {line}");
    }
    drop(agent);
    // The rules stay when the agent ends (as kube-proxy's): the namespace
    // goes with them.
    drop(ns);
    drop(api);
}
