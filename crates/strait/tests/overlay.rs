//! `strait agent --overlay vxlan` against the lab's API server, as root in
//! a namespace of the test's own: the agent publishes this node's VTEP in
//! its Node's flannel annotations (through the API), builds the VXLAN
//! device and the way to a flannel-annotated Node, and removes that way
//! when the Node is deleted through the API.

#[path = "common/api.rs"]
mod api;
mod common;

use std::time::Duration;

use api::ApiServer;
use common::{root_or_skip, spawn_in, wait_for, TempDir, TestNs};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};
use strait_apiserver::auth::Tokens;

const STRAIT: &str = env!("CARGO_BIN_EXE_strait");

/// This node, and one a flanneld (vxlan backend) annotated.
const NODES: &str = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"node-1"},
 "spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24"]},
 "status":{"addresses":[{"type":"InternalIP","address":"192.168.50.11"}]}}
---
{"apiVersion":"v1","kind":"Node","metadata":{"name":"flannel-2","annotations":{
   "flannel.alpha.coreos.com/backend-data":"{\"VNI\":1,\"VtepMAC\":\"d6:0f:7b:3c:91:5e\"}",
   "flannel.alpha.coreos.com/backend-type":"vxlan",
   "flannel.alpha.coreos.com/kube-subnet-manager":"true",
   "flannel.alpha.coreos.com/public-ip":"192.168.50.12"}},
 "spec":{"podCIDR":"10.244.2.0/24","podCIDRs":["10.244.2.0/24"]},
 "status":{"addresses":[{"type":"InternalIP","address":"192.168.50.12"}]}}"#;

fn out(ns: &TestNs, program: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&ns.command(program, args).stdout).into_owned()
}

#[test]
fn agent_publishes_its_vtep_and_reaches_a_flannel_node() {
    if !root_or_skip("agent_publishes_its_vtep_and_reaches_a_flannel_node") {
        return;
    }
    let ns = TestNs::new("overlay");
    for cmd in [
        &["link", "set", "lo", "up"][..],
        // The underlay: a veth pair (this kernel has no dummy module).
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "wire",
        ],
        &["addr", "add", "192.168.50.11/24", "dev", "eth0"],
        &["link", "set", "wire", "up"],
        &["link", "set", "eth0", "up"],
    ] {
        assert!(ns.command("ip", cmd).status.success(), "ip {cmd:?}");
    }
    let dir = TempDir::new("overlay");
    let api = ApiServer::start(Some(&ns), Tokens::default());
    let runtime = &api.runtime;
    let kubeconfig = format!("{}/kubeconfig", dir.path());
    std::fs::write(&kubeconfig, api.server().admin_kubeconfig()).unwrap();
    let client = api.client.clone();
    let nodes: Api<Node> = Api::all(client);
    for doc in NODES.split("\n---\n") {
        let node: Node = serde_json::from_str(doc).unwrap();
        let api = nodes.clone();
        runtime
            .block_on(runtime.spawn(async move { api.create(&PostParams::default(), &node).await }))
            .unwrap()
            .unwrap();
    }

    let log = dir.0.join("agent.log");
    let args = [
        "-v",
        "agent",
        "--kubeconfig",
        &kubeconfig,
        "--node-name",
        "node-1",
        "--healthz-bind-address",
        "127.0.0.1:0",
        "--overlay",
        "vxlan",
    ];
    let agent = spawn_in(&ns, STRAIT, &args, &log);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();

    // The way to flannel-2's pods, as flanneld would have made it.
    let route = || out(&ns, "ip", &["route", "show", "10.244.2.0/24"]);
    assert!(
        wait_for(Duration::from_secs(20), || route()
            .contains("via 10.244.2.0 dev flannel.1")),
        "no route to flannel-2: {}\n{}",
        route(),
        logged()
    );
    assert!(route().contains("onlink"), "{}", route());
    let fdb = out(&ns, "bridge", &["fdb", "show", "dev", "flannel.1"]);
    assert!(fdb.contains("d6:0f:7b:3c:91:5e dst 192.168.50.12"), "{fdb}");
    let neigh = out(&ns, "ip", &["neigh", "show", "dev", "flannel.1"]);
    assert!(
        neigh.contains("10.244.2.0 lladdr d6:0f:7b:3c:91:5e PERMANENT"),
        "{neigh}"
    );
    let link = out(&ns, "ip", &["-d", "link", "show", "flannel.1"]);
    assert!(
        link.contains("vxlan id 1 local 192.168.50.11 dev eth0"),
        "{link}"
    );
    assert!(link.contains("dstport 8472"), "{link}");
    assert!(link.contains("link/ether 0a:58:c0:a8:32:0b"), "{link}");
    let addr = out(&ns, "ip", &["-4", "addr", "show", "dev", "flannel.1"]);
    assert!(addr.contains("inet 10.244.1.0/32"), "{addr}");

    // This node's VTEP, published in flannel's words through the API.
    let get = |name: &'static str| {
        let api = nodes.clone();
        runtime
            .block_on(runtime.spawn(async move { api.get(name).await }))
            .unwrap()
            .unwrap()
    };
    let annotated = || {
        let node = get("node-1");
        node.metadata.annotations.unwrap_or_default()
    };
    assert!(
        wait_for(Duration::from_secs(10), || annotated()
            .contains_key("flannel.alpha.coreos.com/backend-data")),
        "never published: {}",
        logged()
    );
    let a = annotated();
    assert_eq!(
        a["flannel.alpha.coreos.com/backend-data"],
        r#"{"VNI":1,"VtepMAC":"0a:58:c0:a8:32:0b"}"#
    );
    assert_eq!(a["flannel.alpha.coreos.com/backend-type"], "vxlan");
    assert_eq!(a["flannel.alpha.coreos.com/public-ip"], "192.168.50.11");
    assert_eq!(a["flannel.alpha.coreos.com/kube-subnet-manager"], "true");

    // flannel-2 deleted through the API: its way goes.
    let api = nodes.clone();
    runtime
        .block_on(
            runtime.spawn(async move { api.delete("flannel-2", &DeleteParams::default()).await }),
        )
        .unwrap()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || route().is_empty()),
        "the route stayed: {}",
        route()
    );
    let fdb = out(&ns, "bridge", &["fdb", "show", "dev", "flannel.1"]);
    assert!(!fdb.contains("d6:0f:7b:3c:91:5e"), "{fdb}");
    drop(agent);
    // The device stays when the agent ends; --cleanup --overlay removes it.
    assert!(ns
        .command("ip", &["link", "show", "flannel.1"])
        .status
        .success());
    let cleanup = ns.command(STRAIT, &["agent", "--cleanup", "--overlay", "vxlan"]);
    assert!(cleanup.status.success(), "{cleanup:?}");
    assert!(!ns
        .command("ip", &["link", "show", "flannel.1"])
        .status
        .success());
}
