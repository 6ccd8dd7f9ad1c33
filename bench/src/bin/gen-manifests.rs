//! Writes a synthetic cluster to stdout: SERVICES Services, each selecting
//! PODS_PER_SERVICE running, ready pods with a named port, spread over ten
//! namespaces and ten nodes. `gen-manifests SERVICES PODS_PER_SERVICE [json|yaml]`.

use std::io::{BufWriter, Write};

use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: gen-manifests SERVICES PODS_PER_SERVICE [json|yaml]";
    let services: usize = args.get(1).and_then(|a| a.parse().ok()).expect(usage);
    let pods: usize = args.get(2).and_then(|a| a.parse().ok()).expect(usage);
    let yaml = args.get(3).map(String::as_str) == Some("yaml");
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut emit = |value: serde_json::Value| {
        if yaml {
            // JSON is valid YAML; one document per object, as users concatenate them.
            writeln!(out, "---\n{value}").unwrap();
        } else {
            writeln!(out, "{value}").unwrap();
        }
    };
    for n in 0..10 {
        emit(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node-{n}")},
            "spec": {"podCIDR": format!("10.244.{n}.0/24")}}),
        );
    }
    let mut ip: u32 = u32::from(std::net::Ipv4Addr::new(10, 128, 0, 2));
    for s in 0..services {
        let ns = format!("ns-{}", s % 10);
        let app = format!("svc-{s}");
        emit(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": app, "namespace": ns, "labels": {"tier": "bench"}},
            "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}));
        for p in 0..pods {
            let pod_ip = std::net::Ipv4Addr::from(ip).to_string();
            ip += 1;
            emit(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{app}-{p}"), "namespace": ns, "labels": {"app": app}},
                "spec": {"nodeName": format!("node-{}", (s + p) % 10),
                    "containers": [{"name": "web", "image": "nginx", "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
                    "conditions": [{"type": "Ready", "status": "True"}]}}));
        }
    }
}
