//! Small clusters for tests: namespaces, pods with addresses, nodes and
//! named ports, and policies, built as the API would hold them.

use std::sync::Arc;

use serde_json::{json, Value as Json};
use strait_model::k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use strait_model::k8s_openapi::api::networking::v1::NetworkPolicy;
use strait_model::{ClusterNetworkPolicy, ClusterState, CompactPod, Object};

/// A cluster being built.
#[derive(Default)]
pub struct Cluster {
    pub state: ClusterState,
}

impl Cluster {
    pub fn namespace(&mut self, name: &str, labels: Json) -> &mut Self {
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }))
        .expect("a namespace");
        self.state.insert(Object::Namespace(Arc::new(ns)));
        self
    }

    /// A pod on `node` at `ip`; `ports` are (name, protocol, port).
    pub fn pod(
        &mut self,
        namespace: &str,
        name: &str,
        labels: Json,
        node: &str,
        ip: &str,
        ports: &[(&str, &str, i32)],
    ) -> &mut Self {
        self.pod_with(namespace, name, labels, node, ip, ports, false)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn pod_with(
        &mut self,
        namespace: &str,
        name: &str,
        labels: Json,
        node: &str,
        ip: &str,
        ports: &[(&str, &str, i32)],
        host_network: bool,
    ) -> &mut Self {
        let ports: Vec<Json> = ports
            .iter()
            .map(|(n, p, port)| json!({"name": n, "protocol": p, "containerPort": port}))
            .collect();
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "nodeName": node,
                "hostNetwork": host_network,
                "containers": [{"name": "c", "image": "i", "ports": ports}],
            },
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
        }))
        .expect("a pod");
        self.state
            .insert(Object::Pod(Arc::new(CompactPod::new(pod))));
        self
    }

    /// A policy in `namespace` with `spec`.
    pub fn policy(&mut self, namespace: &str, name: &str, spec: Json) -> &mut Self {
        let np: NetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }))
        .expect("a policy");
        self.state.insert(Object::NetworkPolicy(Arc::new(np)));
        self
    }

    /// A ClusterNetworkPolicy with `spec` (`tier`, `priority`, ...).
    pub fn cluster_policy(&mut self, name: &str, spec: Json) -> &mut Self {
        let cnp: ClusterNetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("a cluster network policy");
        self.state
            .insert(Object::ClusterNetworkPolicy(Arc::new(cnp)));
        self
    }

    /// A Node with `labels` and one InternalIP `address`.
    pub fn node(&mut self, name: &str, labels: Json, address: &str) -> &mut Self {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "status": {"addresses": [{"type": "InternalIP", "address": address}]},
        }))
        .expect("a node");
        self.state.insert(Object::Node(Arc::new(node)));
        self
    }

    /// Three namespaces x, y, z (label ns=NAME) of three pods a, b, c
    /// (label pod=NAME) on two nodes; pod b maps `serve` to 80, c to 81
    /// (TCP), a has no named port. Addresses 10.0.N.M.
    pub fn three_by_three() -> Cluster {
        let mut c = Cluster::default();
        for (i, ns) in ["x", "y", "z"].iter().enumerate() {
            c.namespace(ns, json!({"ns": ns}));
            for (j, pod) in ["a", "b", "c"].iter().enumerate() {
                let node = if (i + j) % 2 == 0 { "n0" } else { "n1" };
                let ip = format!("10.0.{}.{}", i + 1, j + 2);
                let ports: &[(&str, &str, i32)] = match *pod {
                    "b" => &[("serve", "TCP", 80)],
                    "c" => &[("serve", "TCP", 81)],
                    _ => &[],
                };
                c.pod(ns, pod, json!({"pod": pod}), node, &ip, ports);
            }
        }
        c
    }
}
