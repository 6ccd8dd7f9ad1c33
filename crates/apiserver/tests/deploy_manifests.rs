//! deploy/'s manifests are what the API would accept as written: each
//! document read as its k8s-openapi type and written back is the same
//! JSON — a misspelt or misplaced field (which a typed reader drops) or a
//! wrong type fails here, before a cluster sees it.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use strait_model::k8s_openapi::api::{apps, core, networking, policy, rbac};

fn documents() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for (i, doc) in parsed.into_iter().enumerate() {
            if !doc.is_null() {
                docs.push((format!("{name} document {}", i + 1), doc));
            }
        }
    }
    docs
}

fn round_trip<T: DeserializeOwned + Serialize>(at: &str, doc: &Value) {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{at}: not a valid {}: {e}", doc["kind"]));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, doc,
        "{at}: fields lost or changed when read as its type"
    );
}

#[test]
fn every_document_is_its_kind_exactly() {
    let docs = documents();
    let mut kinds = Vec::new();
    for (at, doc) in &docs {
        let kind = doc["kind"].as_str().unwrap_or("");
        match kind {
            "ServiceAccount" => round_trip::<core::v1::ServiceAccount>(at, doc),
            "ConfigMap" => round_trip::<core::v1::ConfigMap>(at, doc),
            "Service" => round_trip::<core::v1::Service>(at, doc),
            "DaemonSet" => round_trip::<apps::v1::DaemonSet>(at, doc),
            "Deployment" => round_trip::<apps::v1::Deployment>(at, doc),
            "ClusterRole" => round_trip::<rbac::v1::ClusterRole>(at, doc),
            "ClusterRoleBinding" => round_trip::<rbac::v1::ClusterRoleBinding>(at, doc),
            "PodDisruptionBudget" => round_trip::<policy::v1::PodDisruptionBudget>(at, doc),
            "IngressClass" => round_trip::<networking::v1::IngressClass>(at, doc),
            "GatewayClass" => round_trip::<strait_model::GatewayClass>(at, doc),
            other => panic!("{at}: unexpected kind {other:?}"),
        }
        kinds.push(kind.to_owned());
        // Everything lives in kube-system (or is cluster-scoped).
        let ns = &doc["metadata"]["namespace"];
        assert!(ns.is_null() || ns == "kube-system", "{at}: namespace {ns}");
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "DaemonSet",
            "Deployment",
            "GatewayClass",
            "IngressClass",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
            "ServiceAccount",
            "ServiceAccount"
        ]
    );
}

#[test]
fn config_keys_the_workloads_read_exist() {
    let docs = documents();
    let config = docs
        .iter()
        .find(|(_, d)| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "strait")
        .map(|(_, d)| d)
        .expect("ConfigMap strait");
    for (at, doc) in &docs {
        let Some(containers) = doc["spec"]["template"]["spec"]["containers"].as_array() else {
            continue;
        };
        for c in containers {
            for env in c["env"].as_array().into_iter().flatten() {
                let r = &env["valueFrom"]["configMapKeyRef"];
                if r.is_null() {
                    continue;
                }
                assert_eq!(r["name"], "strait", "{at}");
                let key = r["key"].as_str().unwrap();
                assert!(config["data"][key].is_string(), "{at}: key {key} missing");
            }
        }
    }
}
