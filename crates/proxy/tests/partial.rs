//! Partial syncs leave the kernel exactly where a full sync of the same
//! cluster would: the proxy keeps only each Service's plan and renders its
//! old rules again to diff them, so this checks, step by step over a run
//! of changes of every kind (endpoints coming and going, shared between
//! Services, policies, affinity, NodePorts, load balancers with source
//! ranges, UDP, Services appearing and leaving, an IPv6 one), that the
//! table a running proxy reached by partial syncs equals the one a fresh
//! proxy loads whole. As root, in two network namespaces of the test.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{json, Value};
use strait_model::k8s_openapi::api::core::v1::Service;
use strait_model::k8s_openapi::api::discovery::v1::EndpointSlice;
use strait_model::{Change, ClusterState, Kind};
use strait_proxy::{is_shared_chain, NodeContext, ServiceProxy, Sync};

/// A network namespace of the test's own, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(role: &str) -> Netns {
        let name = format!("strait-test-{}-partial-{role}", std::process::id());
        strait_linux::NetNs::create(&name).unwrap();
        Netns(name)
    }

    /// A thread inside the namespace, running `f`.
    fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let ns = strait_linux::NetNs::open(&path).unwrap();
            let _inside = ns.enter().unwrap();
            f()
        })
    }

    /// The table `family strait` as `nft -j list` gives it, normalised:
    /// handles dropped, one item per chain, rule and set (its elements
    /// sorted), sorted. Absent table: empty.
    fn table(&self, family: &str) -> Vec<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "-j", "list", "table"])
            .args([family, "strait"])
            .output()
            .unwrap();
        if !out.status.success() {
            return Vec::new();
        }
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut items: Vec<Value> = doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i.get("metainfo").is_none() && i.get("table").is_none())
            .map(|i| {
                let mut i = i.clone();
                for kind in ["chain", "rule", "set", "map"] {
                    if let Some(o) = i.get_mut(kind).and_then(Value::as_object_mut) {
                        o.remove("handle");
                        if let Some(Value::Array(elem)) = o.get_mut("elem") {
                            elem.sort_by_key(|e| e.to_string());
                        }
                    }
                }
                i
            })
            .collect();
        items.sort_by_key(|i| i.to_string());
        items
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = strait_linux::NetNs::delete(&self.0);
    }
}

fn root_or_skip(test: &str) -> bool {
    if strait_linux::is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces)");
    false
}

fn ctx() -> NodeContext {
    NodeContext {
        node_name: "node-1".into(),
        node_ips: vec!["172.31.9.1".parse().unwrap()],
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
        nodeport_addresses: Vec::new(),
    }
}

/// A small deterministic generator (no clock, no seed from outside): the
/// same run of changes every time.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// What one Service looks like now; every field a change may turn.
#[derive(Clone)]
struct Shape {
    kind: u64,
    udp: bool,
    affinity: bool,
    external_local: bool,
    internal_local: bool,
    ranges: bool,
    v6: bool,
    /// Endpoint numbers (pods 10.244.0.N, shared between Services) and
    /// whether each is on this node and ready.
    endpoints: Vec<(u8, bool, bool)>,
}

const SERVICES: usize = 12;

fn service(i: usize, s: &Shape) -> Service {
    let protocol = if s.udp { "UDP" } else { "TCP" };
    let (cluster_ip, family) = if s.v6 {
        (format!("fd00:10:96::{:x}", i + 1), "IPv6")
    } else {
        (format!("10.96.0.{}", i + 1), "IPv4")
    };
    let mut spec = json!({
        "clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ipFamilies": [family],
        "ports": [{"name": "p", "port": 80, "protocol": protocol}],
    });
    let mut status = json!({});
    match s.kind {
        1 => {
            spec["type"] = json!("NodePort");
            spec["ports"][0]["nodePort"] = json!(30000 + i);
        }
        2 if !s.v6 => {
            spec["type"] = json!("LoadBalancer");
            spec["ports"][0]["nodePort"] = json!(30000 + i);
            spec["healthCheckNodePort"] = json!(32000 + i);
            status = json!({"loadBalancer": {"ingress": [{"ip": format!("203.0.113.{}", i + 1)}]}});
            if s.ranges {
                spec["loadBalancerSourceRanges"] = json!(["10.0.0.0/8", "172.31.0.0/16"]);
            }
        }
        // Each its own external address: two Services claiming the same
        // address and port conflict, and which one a partial sync leaves
        // in the dispatch map then depends on the order of changes (the
        // last changed) where a full sync takes the last by name.
        3 if !s.v6 => {
            spec["externalIPs"] = json!([format!("198.51.100.{}", i + 1)]);
        }
        _ => {}
    }
    if s.affinity {
        spec["sessionAffinity"] = json!("ClientIP");
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 300}});
    }
    if s.external_local {
        spec["externalTrafficPolicy"] = json!("Local");
    }
    if s.internal_local {
        spec["internalTrafficPolicy"] = json!("Local");
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": format!("svc-{i}")},
        "spec": spec, "status": status,
    }))
    .unwrap()
}

fn slice(i: usize, s: &Shape) -> EndpointSlice {
    let protocol = if s.udp { "UDP" } else { "TCP" };
    let endpoints: Vec<Value> = s
        .endpoints
        .iter()
        .map(|(n, local, ready)| {
            let address = if s.v6 {
                format!("fd00:10:244::{n:x}")
            } else {
                format!("10.244.0.{n}")
            };
            json!({"addresses": [address], "conditions": {"ready": ready},
                   "nodeName": if *local { "node-1" } else { "node-2" }})
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "default", "name": format!("svc-{i}-1"),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": if s.v6 { "IPv6" } else { "IPv4" },
        "ports": [{"name": "p", "port": 8080, "protocol": protocol}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn state_of(shapes: &[Option<Shape>]) -> ClusterState {
    let mut state = ClusterState::default();
    for (i, s) in shapes.iter().enumerate() {
        if let Some(s) = s {
            state.services.insert(service(i, s));
            state.endpoint_slices.insert(slice(i, s));
        }
    }
    state
}

fn random_shape(rng: &mut Lcg) -> Shape {
    let n = rng.next(5) as usize;
    Shape {
        kind: rng.next(4),
        udp: rng.next(4) == 0,
        affinity: rng.next(4) == 0,
        external_local: rng.next(4) == 0,
        internal_local: rng.next(6) == 0,
        ranges: rng.next(2) == 0,
        v6: rng.next(8) == 0,
        // Few pods for many Services: hairpin pairs are shared.
        endpoints: (0..n)
            .map(|_| (rng.next(16) as u8 + 1, rng.next(3) > 0, rng.next(5) > 0))
            .collect(),
    }
}

/// Change one or a few Services: what a burst of watch events does.
fn mutate(rng: &mut Lcg, shapes: &mut [Option<Shape>]) {
    for _ in 0..=rng.next(3) {
        let i = rng.next(SERVICES as u64) as usize;
        let Some(s) = &mut shapes[i] else {
            shapes[i] = Some(random_shape(rng));
            continue;
        };
        match rng.next(10) {
            0 => shapes[i] = None,
            1 => s.kind = rng.next(4),
            2 => s.affinity = !s.affinity,
            3 => s.external_local = !s.external_local,
            4 => s.udp = !s.udp,
            5 => s.ranges = !s.ranges,
            6 => {
                if !s.endpoints.is_empty() {
                    let e = rng.next(s.endpoints.len() as u64) as usize;
                    s.endpoints.remove(e);
                }
            }
            7 => {
                let ready = rng.next(4) > 0;
                s.endpoints
                    .push((rng.next(16) as u8 + 1, rng.next(2) == 0, ready));
            }
            8 => {
                if let Some(e) = s.endpoints.first_mut() {
                    e.2 = !e.2;
                }
            }
            _ => s.internal_local = !s.internal_local,
        }
    }
}

/// Items of `partial` that a full sync would not have: shared `*-dnat-N`
/// chains no Service uses any more (partial syncs keep them, the next full
/// sync drops them) and their rules.
fn without_unused_shared(partial: Vec<Value>, full: &[Value]) -> Vec<Value> {
    let chains = |items: &[Value]| -> BTreeSet<String> {
        items
            .iter()
            .filter_map(|i| i.get("chain")?.get("name")?.as_str().map(str::to_owned))
            .collect()
    };
    let in_full = chains(full);
    let stale: BTreeSet<String> = chains(&partial)
        .into_iter()
        .filter(|c| is_shared_chain(c) && !in_full.contains(c))
        .collect();
    partial
        .into_iter()
        .filter(|i| {
            let chain = i
                .get("chain")
                .and_then(|c| c.get("name"))
                .or_else(|| i.get("rule").and_then(|r| r.get("chain")))
                .and_then(Value::as_str);
            !chain.is_some_and(|c| stale.contains(c))
        })
        .collect()
}

#[test]
fn partial_syncs_reach_the_table_a_full_sync_loads() {
    if !root_or_skip("partial_syncs_reach_the_table_a_full_sync_loads") {
        return;
    }
    let running = Netns::new("running");
    let fresh = Netns::new("fresh");
    let mut rng = Lcg(0x0005_eed0_f574_2a17);
    let mut shapes: Vec<Option<Shape>> = (0..SERVICES)
        .map(|_| Some(random_shape(&mut rng)))
        .collect();
    let mut steps: Vec<ClusterState> = vec![state_of(&shapes)];
    for _ in 0..60 {
        mutate(&mut rng, &mut shapes);
        steps.push(state_of(&shapes));
    }
    // The running proxy: one full sync, then a partial sync per step.
    let (to_running, steps_in) = std::sync::mpsc::channel::<usize>();
    let (done, synced) = std::sync::mpsc::channel::<(usize, String)>();
    let all = steps.clone();
    let proxy = running.spawn(move || {
        let mut proxy = ServiceProxy::new(ctx());
        for step in steps_in {
            let outcome = if step == 0 {
                proxy.full_sync(&all[0])
            } else {
                let changes = all[step - 1].diff(&all[step]);
                proxy.apply_changes(&changes, &all[step - 1], &all[step])
            };
            let how = match outcome {
                Ok(Sync::Full(_)) => "full".to_owned(),
                Ok(Sync::Partial(_)) => "partial".to_owned(),
                Ok(Sync::Unchanged) => "unchanged".to_owned(),
                Err(e) => format!("failed: {e}"),
            };
            let errors = proxy.service_errors();
            let how = if errors.is_empty() {
                how
            } else {
                format!("{how} with Service errors {errors:?}")
            };
            if done.send((step, how)).is_err() {
                break;
            }
        }
    });
    let mut partial_syncs = 0;
    for (step, state) in steps.iter().enumerate() {
        to_running.send(step).unwrap();
        let (_, how) = synced.recv().unwrap();
        assert!(
            matches!(how.as_str(), "full" | "partial" | "unchanged"),
            "step {step}: {how}"
        );
        if how == "partial" {
            partial_syncs += 1;
        }
        let state = state.clone();
        let loaded = fresh
            .spawn(move || {
                let mut proxy = ServiceProxy::new(ctx());
                proxy.full_sync(&state).map(|_| proxy.service_errors())
            })
            .join()
            .unwrap();
        assert!(
            loaded.as_ref().is_ok_and(|e| e.is_empty()),
            "step {step}: full sync: {loaded:?}"
        );
        for family in ["ip", "ip6"] {
            let full = fresh.table(family);
            let partial = without_unused_shared(running.table(family), &full);
            if partial != full {
                let show = |items: &[Value]| -> BTreeSet<String> {
                    items.iter().map(Value::to_string).collect()
                };
                let (p, f) = (show(&partial), show(&full));
                panic!(
                    "step {step}, table {family} strait: after partial syncs, not in a full sync's table: {:#?}\nin a full sync's table, missing: {:#?}",
                    p.difference(&f).collect::<Vec<_>>(),
                    f.difference(&p).collect::<Vec<_>>()
                );
            }
        }
    }
    drop(to_running);
    proxy.join().unwrap();
    assert!(partial_syncs >= 40, "only {partial_syncs} partial syncs");
    // The run removed Services too, not only changed them.
    let deleted = steps.windows(2).any(|w| {
        w[0].diff(&w[1])
            .changes
            .iter()
            .any(|c| matches!(c, Change::Deleted(k) if k.kind == Kind::Service))
    });
    assert!(deleted, "no Service was deleted in the run");
}
