//! `strait agent` against the lab's API server (in process, on
//! 127.0.0.1:0; no root: `--dry-run` prints the ruleset instead of
//! programming it): the rules it would program for the node are those of
//! `strait proxy --dry-run` for the same objects read from manifests.

use std::path::PathBuf;
use std::process::Command;

use kube::api::{Api, DynamicObject, PostParams};
use strait_apiserver::auth::Tokens;
use strait_apiserver::server::{Server, ServerConfig};
use strait_apiserver::store::AdmitAll;
use strait_apiserver::tls::Pki;
use strait_model::Kind;

const STRAIT: &str = env!("CARGO_BIN_EXE_strait");

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24]}
status: {addresses: [{type: InternalIP, address: 192.168.50.11}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {type: NodePort, clusterIP: 10.96.0.50, clusterIPs: [10.96.0.50], externalTrafficPolicy: Local, ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP, nodePort: 30080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: [10.244.1.5], conditions: {ready: true}, nodeName: node-1}
- {addresses: [10.244.2.5], conditions: {ready: true}, nodeName: node-2}
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default}
spec: {clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10], ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]}
"#;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The ruleset without its comment lines (which name the command).
fn rules(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn agent_dry_run_programs_what_proxy_dry_run_does_for_the_same_objects() {
    let dir = TempDir(std::env::temp_dir().join(format!("strait-agent-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let manifests = dir.0.join("objects.yaml");
    std::fs::write(&manifests, MANIFESTS).unwrap();
    let manifests = manifests.display().to_string();
    let common = ["--cluster-cidr", "10.244.0.0/16"];

    let proxy = Command::new(STRAIT)
        .args(["proxy", "--dry-run", "--node", "node-1", "-f", &manifests])
        .args(common)
        .output()
        .unwrap();
    let expected = rules(&proxy);
    assert!(expected.contains("10.96.0.50"), "{expected}");

    // The same objects as the controllers leave them (`strait render`:
    // the `kubernetes` Service too), created through the API.
    let render = Command::new(STRAIT)
        .args(["render", "-o", "json", "-f", &manifests])
        .output()
        .unwrap();
    assert!(render.status.success());
    let list: serde_json::Value = serde_json::from_slice(&render.stdout).unwrap();

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
        }))
        .unwrap();
    let kubeconfig = dir.0.join("kubeconfig");
    std::fs::write(&kubeconfig, server.admin_kubeconfig()).unwrap();
    let text = server.admin_kubeconfig();
    runtime.block_on(async {
        let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        // Namespaces first: objects of a namespace need it.
        let mut items: Vec<serde_json::Value> = list["items"].as_array().unwrap().clone();
        items.sort_by_key(|o| o["kind"] != "Namespace");
        for item in items {
            let kind = Kind::from_name(item["kind"].as_str().unwrap()).unwrap();
            let ar = strait_kube::api_resource(kind).unwrap();
            let mut o: DynamicObject = serde_json::from_value(item).unwrap();
            o.metadata.resource_version = None;
            o.metadata.uid = None;
            let api: Api<DynamicObject> = match o.metadata.namespace.clone() {
                Some(ns) => Api::namespaced_with(client.clone(), &ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            api.create(&PostParams::default(), &o).await.unwrap();
        }
    });

    let agent = Command::new(STRAIT)
        .args([
            "agent",
            "--dry-run",
            "--node-name",
            "node-1",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .args(common)
        .output()
        .unwrap();
    server.shutdown();
    assert_eq!(rules(&agent), expected);
}
