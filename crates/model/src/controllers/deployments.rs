//! Deployment → Pods, as the Deployment and ReplicaSet controllers would
//! leave them after a rollout: `replicas` pods from the current template.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{owner, LABEL_POD_TEMPLATE_HASH};
use crate::hash::{fnv1a, generated_name, suffix};
use crate::object::Object;
use crate::selector::Selector;
use crate::state::ClusterState;
use crate::Result;

pub fn expand(state: &mut ClusterState, previous: Option<&ClusterState>) -> Result<()> {
    let deployments: Vec<_> = state.deployments.iter().cloned().collect();
    let mut budget = crate::validate::PodBudget::default();
    for deployment in deployments {
        let meta = &deployment.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let Some(spec) = &deployment.spec else {
            continue;
        };
        let selector = match Selector::from_label_selector(&spec.selector) {
            Ok(s) => s,
            Err(_) => continue, // admission has rejected such objects already
        };

        // A dump of a real cluster already holds this Deployment's pods
        // (owned by its ReplicaSets): take them as they are.
        let rs_prefix = format!("{name}-");
        let already_running = state.pods.select(&namespace, &selector).iter().any(|pod| {
            pod.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "ReplicaSet" && o.name.starts_with(&rs_prefix))
        });
        if already_running {
            continue;
        }
        // Bounded before anything is allocated (admission bounds each
        // Deployment; this bounds them together).
        let key = crate::ObjectKey::new(crate::Kind::Deployment, &namespace, &name);
        budget
            .take(spec.replicas.unwrap_or(1))
            .map_err(|message| super::object_error(state, &key, "spec.replicas", message))?;

        let template_hash = template_hash(&spec.template, spec_collision_count(&deployment));
        let replica_set = format!("{name}-{template_hash}");
        let mut labels: BTreeMap<String, String> = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(LABEL_POD_TEMPLATE_HASH.into(), template_hash.clone());
        let rs_meta = ObjectMeta {
            name: Some(replica_set.clone()),
            namespace: Some(namespace.clone()),
            ..Default::default()
        };

        let mut salt = 0u64;
        for index in 0..spec.replicas.unwrap_or(1).max(0) {
            // Pod names are `<deployment>-<template hash>-<5 characters>`.
            let pod_name = loop {
                let h = fnv1a(&[
                    namespace.as_bytes(),
                    replica_set.as_bytes(),
                    &(index as u64).to_le_bytes(),
                    &salt.to_le_bytes(),
                ]);
                let candidate = generated_name(&format!("{replica_set}-"), h);
                if state.pods.get(&namespace, &candidate).is_none() {
                    break candidate;
                }
                salt += 1;
            };
            let template_meta = spec.template.metadata.clone().unwrap_or_default();
            let mut pod = Pod {
                metadata: ObjectMeta {
                    uid: Some(crate::hash::uid("Pod", &namespace, &pod_name)),
                    name: Some(pod_name.clone()),
                    namespace: Some(namespace.clone()),
                    labels: Some(labels.clone()),
                    annotations: template_meta.annotations,
                    owner_references: Some(vec![owner("apps/v1", "ReplicaSet", &rs_meta)]),
                    ..Default::default()
                },
                spec: spec.template.spec.clone(),
                status: None,
            };
            // Where the pod runs and what address it got are the runtime's
            // business (the lab's); keep what the previous snapshot knew.
            if let Some(old) = previous.and_then(|p| p.pods.get(&namespace, &pod_name)) {
                pod.status = old.to_status()?;
                if let Some(spec) = pod.spec.as_mut() {
                    spec.node_name = old.node_name().map(str::to_owned);
                }
            }
            state.add(Object::Pod(Arc::new(pod.into())), None)?;
        }
    }
    Ok(())
}

fn spec_collision_count(d: &k8s_openapi::api::apps::v1::Deployment) -> i32 {
    d.status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0)
}

/// A short, stable name for a pod template: the same template always gives
/// the same hash, any change gives another (and so new pods).
fn template_hash(
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    collision_count: i32,
) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    suffix(fnv1a(&[&bytes, &collision_count.to_le_bytes()]), 10)
}
