//! What the Service proxy keeps at the scale: 10k Services × 5
//! endpoints planned and programmed into nftables (as root, in a network
//! namespace of the test), measured with a counting allocator. A
//! measurement, run on purpose:
//! `cargo test -p strait-proxy --test memory -- --ignored --nocapture`.
//! It prints the heap the snapshot holds, what the proxy keeps after its
//! first sync, and the peak on the way (the whole table built once).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::json;
use strait_model::k8s_openapi::api::core::v1::Service;
use strait_model::k8s_openapi::api::discovery::v1::EndpointSlice;
use strait_model::ClusterState;
use strait_proxy::{NodeContext, ServiceProxy, Sync};

/// Bytes allocated and not yet freed, and the most there were since the
/// peak was last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call goes to the system allocator with the caller's own
// layout and pointer; the counters are only arithmetic on the side.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        grow(layout.size());
        std::alloc::System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        std::alloc::System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        grow(new);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        std::alloc::System.realloc(ptr, layout, new)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mb(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 5;

fn ip(base: u32, i: usize) -> String {
    std::net::Ipv4Addr::from(base + i as u32).to_string()
}

/// The Services and EndpointSlices, as the agent's source holds them.
fn cluster() -> ClusterState {
    let mut state = ClusterState::default();
    for i in 0..SERVICES {
        let name = format!("svc-{i}");
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip(0x0a60_0000 + 10, i), "selector": {"app": name},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}))
        .unwrap();
        let endpoints: Vec<serde_json::Value> = (0..ENDPOINTS)
            .map(|e| json!({"addresses": [ip(0x0af4_0000, i * ENDPOINTS + e)], "conditions": {"ready": true}, "nodeName": "node-1"}))
            .collect();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-1"), "namespace": "default",
                "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints}))
        .unwrap();
        state.services.insert(service);
        state.endpoint_slices.insert(slice);
    }
    state
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn what_the_proxy_keeps_at_10k_services() {
    if !strait_linux::is_root() {
        eprintln!("SKIPPED what_the_proxy_keeps_at_10k_services: needs root (network namespaces)");
        return;
    }
    let name = format!("strait-test-{}-proxy-memory", std::process::id());
    strait_linux::NetNs::create(&name).unwrap();
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = strait_linux::NetNs::delete(&self.0);
        }
    }
    let _gone = Gone(name.clone());
    let start = LIVE.load(Ordering::Relaxed);
    let state = cluster();
    let with_state = LIVE.load(Ordering::Relaxed);
    let path = format!("/run/netns/{name}");
    let (kept, peak, took, stats) = std::thread::spawn(move || {
        let ns = strait_linux::NetNs::open(&path).unwrap();
        let _inside = ns.enter().unwrap();
        let ctx = NodeContext {
            node_name: "node-1".into(),
            node_ips: vec!["192.168.50.11".parse().unwrap()],
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
            nodeport_addresses: Vec::new(),
        };
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let started = Instant::now();
        let mut proxy = ServiceProxy::new(ctx);
        let sync = proxy.full_sync(&state).unwrap();
        let took = started.elapsed();
        assert!(matches!(sync, Sync::Full(_)));
        let kept = LIVE.load(Ordering::Relaxed) - before;
        let peak = PEAK.load(Ordering::Relaxed) - before;
        let stats = proxy.stats();
        // Still held here: what it keeps is counted above.
        drop(proxy);
        (kept, peak, took, stats)
    })
    .join()
    .unwrap();
    assert_eq!(stats.0, SERVICES, "every service port programmed");
    println!(
        "{SERVICES} Services × {ENDPOINTS} endpoints ({}): the snapshot's heap {:.1} MB; the proxy's first sync {:.2} s, its heap at the peak {:.1} MB above the snapshot, kept after it {:.1} MB ({} service ports, {} chains, {} map elements)",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        mb(with_state - start),
        took.as_secs_f64(),
        mb(peak),
        mb(kept),
        stats.0,
        stats.1,
        stats.2,
    );
}
