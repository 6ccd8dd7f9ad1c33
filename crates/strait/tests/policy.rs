//! `strait policy matrix` as a user runs it: the binary, the example
//! manifests, real output. Golden files live in `tests/snapshots/`.

mod common;

use std::process::{Command, Output};

use common::{repo, strait_ok, TempDir};

const DEMO: &str = "examples/policy-demo/";

fn strait(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(args)
        .current_dir(repo())
        .env_remove("RUST_LOG")
        .output()
        .expect("strait runs")
}

#[test]
fn the_demo_matrix_is_its_golden_file() {
    let text = strait_ok(&[
        "policy",
        "matrix",
        "-f",
        DEMO,
        "--ports",
        "80,8080,5432,9100",
        "--reading",
        "reference",
    ]);
    insta::assert_snapshot!("policy-demo-matrix", text);
}

#[test]
fn json_lists_every_cell_in_order() {
    let json = strait_ok(&[
        "policy",
        "matrix",
        "-f",
        DEMO,
        "--ports",
        "80,5432",
        "--protocols",
        "tcp,udp",
        "-o",
        "json",
        "--reading",
        "reference",
    ]);
    let cells: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    // 4 pods × 4 pods × 2 protocols × 2 ports.
    assert_eq!(cells.len(), 64);
    // Closed by the Baseline ClusterNetworkPolicy `monitoring-closed`.
    assert_eq!(
        cells[0],
        serde_json::json!({"from": "monitoring/prometheus", "to": "monitoring/prometheus", "port": 80, "protocol": "TCP", "allowed": false})
    );
    let cell = |from: &str, to: &str, port: u64, protocol: &str| {
        cells
            .iter()
            .find(|c| {
                c["from"] == from && c["to"] == to && c["port"] == port && c["protocol"] == protocol
            })
            .unwrap_or_else(|| panic!("no cell {from} {to} {port} {protocol}"))["allowed"]
            .as_bool()
            .unwrap()
    };
    assert!(cell("shop/backend", "shop/db", 5432, "TCP"));
    assert!(!cell("shop/frontend", "shop/db", 5432, "TCP"));
    // The policies name TCP ports only (the default protocol).
    assert!(!cell("shop/backend", "shop/db", 5432, "UDP"));
    assert!(
        cell("shop/db", "monitoring/prometheus", 80, "UDP")
            == cell("shop/db", "monitoring/prometheus", 80, "TCP")
    );
}

/// The traced reading (the default) is the planner's; until it is built
/// it refuses with a hint, and once built it must agree with the
/// reference reading on the demo.
#[test]
fn the_traced_reading_agrees_with_the_reference_or_says_why_not() {
    let args = [
        "policy",
        "matrix",
        "-f",
        DEMO,
        "--ports",
        "80,8080,5432,9100",
    ];
    let traced = strait(&args);
    if traced.status.success() {
        let reference = strait_ok(&[&args[..], &["--reading", "reference"]].concat());
        assert_eq!(String::from_utf8_lossy(&traced.stdout), reference);
    } else {
        let stderr = String::from_utf8_lossy(&traced.stderr);
        assert!(stderr.contains("--reading reference"), "{stderr}");
        assert!(traced.stdout.is_empty());
    }
}

/// The demo's ClusterNetworkPolicies (`cluster-policies.yaml`) change
/// what its NetworkPolicies alone allow, the same way in both readings:
/// an Admin Deny over a NetworkPolicy allowance, an Admin Accept over a
/// NetworkPolicy isolation, a Pass handing over to the NetworkPolicy, and
/// a Baseline Deny for pods no NetworkPolicy isolates.
#[test]
fn cluster_network_policies_in_the_manifests_are_honoured() {
    let run = |files: &[&str], reading: &str| -> Vec<serde_json::Value> {
        let mut args = vec!["policy", "matrix"];
        for f in files {
            args.extend(["-f", f]);
        }
        args.extend([
            "--ports",
            "8080,5432,9100",
            "--protocols",
            "tcp",
            "-o",
            "json",
            "--reading",
            reading,
        ]);
        serde_json::from_str(&strait_ok(&args)).unwrap()
    };
    let allowed = |cells: &[serde_json::Value], from: &str, to: &str, port: u64| {
        cells
            .iter()
            .find(|c| c["from"] == from && c["to"] == to && c["port"] == port)
            .unwrap_or_else(|| panic!("no cell {from} {to} {port}"))["allowed"]
            .as_bool()
            .unwrap()
    };
    let np_only = [
        "examples/policy-demo/cluster.yaml",
        "examples/policy-demo/policies.yaml",
    ];
    let before = run(&np_only, "reference");
    for reading in ["reference", "traced"] {
        let after = run(&[DEMO], reading);
        // (from, to, port, with NetworkPolicies only, with the CNPs too)
        for (from, to, port, np, cnp) in [
            // db-lockdown (Admin Deny) over allow-monitoring.
            ("monitoring/prometheus", "shop/db", 9100, true, false),
            // health-checks (Admin Accept) over default-deny-ingress.
            ("monitoring/prometheus", "shop/frontend", 8080, false, true),
            // db-lockdown passes the backend to db-from-backend.
            ("shop/backend", "shop/db", 5432, true, true),
            ("shop/backend", "shop/db", 9100, false, false),
            // monitoring-closed (Baseline Deny): no NetworkPolicy there.
            ("shop/frontend", "monitoring/prometheus", 9100, true, false),
        ] {
            assert_eq!(allowed(&before, from, to, port), np, "{from} {to} {port}");
            assert_eq!(
                allowed(&after, from, to, port),
                cnp,
                "{reading}: {from} {to} {port}"
            );
        }
    }
}

#[test]
fn bad_flags_and_bad_policies_are_refused_with_object_and_field() {
    let out = strait(&["policy", "matrix", "-f", DEMO, "--protocols", "icmp"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"icmp\" is not a protocol"), "{stderr}");
    let out = strait(&["policy", "matrix", "-f", DEMO, "--ports", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ports"));

    let dir = TempDir::new("policy-bad");
    let file = format!("{}/bad.yaml", dir.path());
    std::fs::write(
        &file,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: ranged, namespace: shop}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 9200, endPort: 9100}]}]\n",
    )
    .unwrap();
    let out = strait(&["policy", "matrix", "-f", &file, "--reading", "reference"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NetworkPolicy shop/ranged")
            && stderr.contains("spec.ingress[0].ports[0].endPort: 9100 must be greater than or equal to port (9200)"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    std::fs::write(
        &file,
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: typo}\nspec:\n  tier: Admin\n  priority: 1\n  subject: {namespaces: {}}\n  ingress: [{action: Allow, from: [{namespaces: {}}]}]\n",
    )
    .unwrap();
    let out = strait(&["policy", "matrix", "-f", &file]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ClusterNetworkPolicy typo")
            && stderr.contains("spec.ingress[0].action: Unsupported value: \"Allow\""),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn pods_without_an_address_are_placed_as_the_lab_would_and_said_so() {
    let dir = TempDir::new("policy-noip");
    let file = format!("{}/pods.yaml", dir.path());
    std::fs::write(
        &file,
        concat!(
            "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nspec: {podCIDR: 10.244.5.0/24}\n---\n",
            "apiVersion: v1\nkind: Node\nmetadata: {name: node-b}\nspec: {podCIDR: 10.244.6.0/24}\n---\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: running}\nspec: {nodeName: node-a, containers: [{name: c, image: x}]}\nstatus: {podIP: 10.244.5.2}\n---\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: waiting}\nspec: {nodeName: node-a, containers: [{name: c, image: x}]}\n---\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: anywhere}\nspec: {containers: [{name: c, image: x}]}\n---\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: agent}\nspec: {hostNetwork: true, containers: [{name: c, image: x}]}\n",
        ),
    )
    .unwrap();
    let out = strait(&[
        "policy",
        "matrix",
        "-f",
        &file,
        "--reading",
        "reference",
        "--ports",
        "80",
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The named node's next free address; the emptier node for the other.
    assert!(
        stderr.contains("2 pod(s) had no address and were placed")
            && stderr.contains("default/anywhere -> node-b 10.244.6.2")
            && stderr.contains("default/waiting -> node-a 10.244.5.3"),
        "{stderr}"
    );
    assert!(stderr.contains("1 hostNetwork pod(s) left out"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| default/running ")
            && stdout.contains("| default/waiting ")
            && !stdout.contains("agent"),
        "{stdout}"
    );
}

#[test]
fn strait_trace_names_the_policies_that_dropped_or_let_a_packet_pass() {
    let files = [
        "-f",
        "examples/policy-demo/cluster.yaml",
        "-f",
        "examples/policy-demo/policies.yaml",
    ];
    let trace = |to: &str| {
        let mut args = vec!["trace"];
        args.extend(files);
        args.extend(["--from", "shop/frontend", "--to", to]);
        strait_ok(&args)
    };
    // shop/backend (10.244.2.10) takes `http` (8080) from anyone, 5432
    // from no one: its ingress class is the shop's three ingress policies.
    let class = "ingress of pods isolated by NetworkPolicy shop/allow-http, shop/allow-monitoring, shop/default-deny-ingress";
    let dropped = trace("10.244.2.10:5432");
    assert!(
        dropped.contains("dropped (pod shop/backend on node-2)"),
        "{dropped}"
    );
    let by = dropped
        .lines()
        .find(|l| l.trim_start().starts_with("by rule:"))
        .unwrap_or_else(|| panic!("no rule named: {dropped}"));
    assert!(by.contains("strait-policy") && by.contains(class), "{by}");

    let passed = trace("10.244.2.10:8080");
    assert!(
        passed.contains("forwarded to 10.244.2.10:8080 (pod shop/backend on node-2)"),
        "{passed}"
    );
    assert!(!passed.contains("dropped"), "{passed}");
    assert!(
        passed.contains(&format!("({class})")),
        "the class that let it pass: {passed}"
    );

    // JSON: the step carries the policies.
    let mut args = vec!["trace"];
    args.extend(files);
    args.extend([
        "--from",
        "shop/frontend",
        "--to",
        "10.244.2.10:8080",
        "-o",
        "json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&strait_ok(&args)).expect("json");
    let text = json.to_string();
    assert!(text.contains(&format!("\"policy\":\"{class}\"")), "{text}");
}
