//! Input the proxy must not trust: Services built here directly (no
//! admission on the way, as if kube-apiserver had let them through), planned,
//! rendered and — as root, in a network namespace of the test's own —
//! programmed into the kernel.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;

use strait_model::k8s_openapi::api::core::v1::Service;
use strait_model::k8s_openapi::api::discovery::v1::EndpointSlice;
use strait_model::ClusterState;
use strait_proxy::{plan, render, render_full, Family, NodeContext, ServiceProxy, Sync};

/// Namespaces and names an attacker would try: each once broke or escaped
/// the nft script when pasted into chain names.
fn hostile_names() -> Vec<(String, String)> {
    vec![
        ("a\"; flush ruleset; \"".into(), "quote".into()),
        ("semi;colon".into(), "x".into()),
        ("new\nline".into(), "}\ntable ip evil {".into()),
        ("{braces}".into(), "{}".into()),
        ("with space".into(), "and space".into()),
        ("a".repeat(300), "b".repeat(300)),
        ("default".into(), "# comment".into()),
    ]
}

fn service(ns: &str, name: &str, cluster_ip: &str, extra: serde_json::Value) -> Service {
    let mut json = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"clusterIP": cluster_ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    });
    merge_json(&mut json, extra);
    serde_json::from_value(json).unwrap()
}

fn merge_json(into: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(into), serde_json::Value::Object(extra)) = (into.as_object_mut(), extra.clone()) {
        for (k, v) in extra {
            match into.get_mut(&k) {
                Some(existing) if existing.is_object() && v.is_object() => merge_json(existing, v),
                _ => {
                    into.insert(k, v);
                }
            }
        }
    }
}

fn slice(ns: &str, service: &str, endpoint: &str) -> EndpointSlice {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": format!("{}-1", service.len()),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [endpoint], "nodeName": "node-1"}],
    }))
    .unwrap()
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

/// A good Service `default/web` on 10.96.0.5 and one Service per hostile
/// name on 10.96.1.N, each with an endpoint.
fn hostile_state() -> ClusterState {
    let mut state = ClusterState::default();
    state.services.insert(service(
        "default",
        "web",
        "10.96.0.5",
        serde_json::json!({}),
    ));
    state
        .endpoint_slices
        .insert(slice("default", "web", "10.244.1.2"));
    for (i, (ns, name)) in hostile_names().iter().enumerate() {
        let ip = format!("10.96.1.{}", i + 1);
        state
            .services
            .insert(service(ns, name, &ip, serde_json::json!({})));
        state
            .endpoint_slices
            .insert(slice(ns, name, &format!("10.244.1.{}", i + 10)));
    }
    state
}

/// Every line of a rendered script is one of strait's own shapes in its
/// own table, and no input text is in it.
fn assert_inside_the_table(text: &str) {
    for line in text.lines() {
        let ours = line.starts_with("add table ip strait")
            || line.starts_with("delete table ip strait")
            || line == "table ip strait {"
            || line == "}"
            || line.starts_with("add element ip strait ")
            || line.starts_with('\t');
        assert!(ours, "a line outside table ip strait: {line:?}\n{text}");
        if let Some(comment) = line.trim_start().strip_prefix("# ") {
            assert!(
                comment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._/:".contains(c)),
                "an unsafe comment: {comment:?}"
            );
        }
    }
    for bad in ["flush", "evil", "\"", ";colon", "with space", "{braces}"] {
        assert!(!text.contains(bad), "{bad:?} reached the script:\n{text}");
    }
    assert!(
        !text.contains(&"a".repeat(64)),
        "a long name reached the script"
    );
}

#[test]
fn hostile_names_never_reach_the_nft_script() {
    let state = hostile_state();
    let table = plan(&state, &ctx());
    assert_eq!(table.ports.len(), 1 + hostile_names().len());
    let text = render_full(&render(&table, Family::V4));
    assert_inside_the_table(&text);
    // Each Service still has its own chains: nothing merged by accident.
    let service_ips = text
        .lines()
        .find(|l| l.starts_with("add element ip strait service-ips"))
        .unwrap();
    for i in 1..=hostile_names().len() {
        assert!(service_ips.contains(&format!("10.96.1.{i} . tcp . 80")));
    }
}

#[test]
fn unreadable_source_ranges_or_ingress_keep_the_load_balancer_closed() {
    let mut state = ClusterState::default();
    let lb = |name: &str, ranges: serde_json::Value, ingress: &str, ip: &str| {
        service(
            "default",
            name,
            ip,
            serde_json::json!({
                "spec": {"type": "LoadBalancer", "loadBalancerSourceRanges": ranges},
                "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"ip": ingress}]}},
            }),
        )
    };
    // Only a junk range: today's code dropped it and opened the LB to all.
    state.services.insert(lb(
        "junk-range",
        serde_json::json!(["not-a-cidr"]),
        "203.0.113.1",
        "10.96.2.1",
    ));
    // A good range and junk ingress: closed too.
    state.services.insert(lb(
        "junk-ingress",
        serde_json::json!(["198.51.100.0/24"]),
        "203.0.113.x",
        "10.96.2.2",
    ));
    // Ranges of the other family only: closed in this one.
    state.services.insert(lb(
        "v6-ranges",
        serde_json::json!(["2001:db8::/32"]),
        "203.0.113.3",
        "10.96.2.3",
    ));
    // Overlapping ranges (valid): merged into one interval.
    state.services.insert(lb(
        "overlap",
        serde_json::json!(["10.0.0.0/8", "10.1.0.0/16", "172.31.9.0/24"]),
        "203.0.113.4",
        "10.96.2.4",
    ));
    let table = plan(&state, &ctx());
    let problems = table.problems.join("\n");
    assert!(
        problems.contains("junk-range")
            && problems.contains("spec.loadBalancerSourceRanges[0]")
            && problems.contains("status.loadBalancer.ingress[1].ip"),
        "{problems}"
    );
    let text = render_full(&render(&table, Family::V4));
    let line = |set: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("add element ip strait {set} ")))
            .unwrap_or_default()
            .to_owned()
    };
    let firewall_ips = line("firewall-ips");
    let allow = line("firewall-allow");
    for lb in ["203.0.113.1", "203.0.113.3", "203.0.113.4"] {
        assert!(
            firewall_ips.contains(&format!("{lb} . tcp . 80")),
            "{lb} guarded: {firewall_ips}"
        );
    }
    // Two services share 203.0.113.9: the closed ones allow nobody there.
    assert!(
        !allow.contains("203.0.113.1 ."),
        "junk range allows nobody: {allow}"
    );
    assert!(
        !allow.contains("203.0.113.3 ."),
        "v6 ranges allow no IPv4: {allow}"
    );
    assert!(
        allow.contains("203.0.113.4 . tcp . 80 . 10.0.0.0/8") && !allow.contains("10.1.0.0/16"),
        "overlap merged: {allow}"
    );
    // A range holds the node IP: the LB IPs themselves are accepted sources.
    assert!(
        allow.contains("203.0.113.4 . tcp . 80 . 203.0.113.4/32"),
        "LB IP as a source: {allow}"
    );
}

/// A network namespace of the test's own, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(role: &str) -> Netns {
        let name = format!("strait-test-{}-proxy-{role}", std::process::id());
        strait_linux::NetNs::create(&name).unwrap();
        Netns(name)
    }

    /// Run `f` on a thread inside the namespace (nft runs there too).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let ns = strait_linux::NetNs::open(&path).unwrap();
            let _inside = ns.enter().unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    fn nft(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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

/// The ClusterIPs the kernel's `cluster-ips` set holds.
fn cluster_ips(ns: &Netns) -> BTreeSet<IpAddr> {
    let text = ns.nft(&["list", "set", "ip", "strait", "cluster-ips"]);
    let inside = text
        .split("elements = {")
        .nth(1)
        .and_then(|t| t.split('}').next())
        .unwrap_or_default();
    inside
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

#[test]
fn hostile_names_are_programmed_safely_and_others_keep_working() {
    if !root_or_skip("hostile_names_are_programmed_safely_and_others_keep_working") {
        return;
    }
    let ns = Netns::new("hostile");
    let state = hostile_state();
    let (full, errors) = ns.run(move || {
        let mut proxy = ServiceProxy::new(ctx());
        let full = proxy.full_sync(&state).map_err(|e| e.to_string());
        // A partial sync with one more hostile Service and a changed good one.
        let mut next = state.clone();
        next.services.insert(service(
            "x\"}; delete table ip strait; {\"",
            "late",
            "10.96.3.1",
            serde_json::json!({}),
        ));
        next.services.insert(service(
            "default",
            "web2",
            "10.96.0.6",
            serde_json::json!({}),
        ));
        let partial = proxy.update(&state, &next).map_err(|e| e.to_string());
        assert!(matches!(partial, Ok(Sync::Partial(_))), "{partial:?}");
        (full, proxy.service_errors())
    });
    assert!(matches!(full, Ok(Sync::Full(_))), "{full:?}");
    assert!(errors.is_empty(), "{errors:?}");
    // Only strait's table exists, and it holds every Service.
    let tables = ns.nft(&["list", "tables"]);
    assert_eq!(tables.trim(), "table ip strait", "{tables}");
    let ips = cluster_ips(&ns);
    let mut wanted: Vec<String> = vec!["10.96.0.5".into(), "10.96.0.6".into(), "10.96.3.1".into()];
    wanted.extend((1..=hostile_names().len()).map(|i| format!("10.96.1.{i}")));
    for ip in &wanted {
        assert!(ips.contains(&ip.parse().unwrap()), "{ip} missing: {ips:?}");
    }
}
