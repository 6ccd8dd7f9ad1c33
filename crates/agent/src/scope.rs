//! The change set of a reload without walking the whole cluster.
//!
//! A source knows which desired objects it touched (the objects of the
//! files it re-read). The controllers add what follows from them: Pods of
//! Deployments, Service addresses, EndpointSlices. Every one of those
//! depends only on objects of its own namespace, plus cluster-scoped
//! objects (Nodes) and two cluster-wide facts (whether the input has any
//! Pods, any Endpoints: with none, the controllers keep the input's
//! slices). So the changes are: the touched objects themselves, and
//! whatever changed in their namespaces; a touched cluster-scoped object
//! or a flipped cluster-wide fact falls back to the full diff.

use std::collections::BTreeSet;

use strait_model::{ChangeSet, ClusterState, ObjectKey};

/// How a change set was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only the touched objects and their namespaces were compared.
    Namespaces(usize),
    /// Everything was compared (cluster-scoped object or cluster-wide fact).
    Everything,
}

/// The changes from `old` to `new` (controller output), given the keys of
/// the desired objects touched and whether a cluster-wide fact flipped
/// (the input has Pods / Endpoints at all: see [`cluster_wide_flip`]).
pub fn scoped_changes(
    old: &ClusterState,
    new: &ClusterState,
    touched: &BTreeSet<ObjectKey>,
    flipped: bool,
) -> (ChangeSet, Scope) {
    if flipped || touched.iter().any(|k| !k.kind.is_namespaced()) {
        return (old.diff(new), Scope::Everything);
    }
    let namespaces: BTreeSet<&str> = touched.iter().map(|k| k.namespace.as_str()).collect();
    let mut changes = old.diff_keys(new, touched);
    for ns in &namespaces {
        old.diff_namespace(new, ns, &mut changes.changes);
    }
    changes.normalize();
    (changes, Scope::Namespaces(namespaces.len()))
}

/// Whether the desired objects went from having Pods (or Endpoints) to
/// having none, or back: the controllers then keep or recompute the
/// input's slices in every namespace.
pub fn cluster_wide_flip(old_desired: &ClusterState, new_desired: &ClusterState) -> bool {
    old_desired.pods.is_empty() != new_desired.pods.is_empty()
        || old_desired.endpoints.is_empty() != new_desired.endpoints.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use strait_model::controllers::{reconcile, ClusterConfig};
    use strait_model::{parse_str, Format};

    /// One desired object, as YAML, from a small alphabet of shapes that
    /// exercise every controller: selector Services, Pods, Deployments,
    /// selector-less Services with their own slice, Endpoints, Nodes.
    fn object(shape: u8, ns: &str, n: u8, variant: u8) -> String {
        let app = ["web", "db"][(variant % 2) as usize];
        match shape % 6 {
            0 => format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s{n}, namespace: {ns}}}\nspec: {{selector: {{app: {app}}}, ports: [{{port: {p}, targetPort: 8080}}]}}\n", p = 80 + variant as u16),
            1 => format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p{n}, namespace: {ns}, labels: {{app: {app}}}}}\nspec: {{nodeName: node-1, containers: [{{name: c}}]}}\nstatus: {{phase: Running, podIP: 10.1.{n}.{variant}, podIPs: [{{ip: 10.1.{n}.{variant}}}], conditions: [{{type: Ready, status: \"True\"}}]}}\n"),
            2 => format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d{n}, namespace: {ns}}}\nspec: {{replicas: {r}, selector: {{matchLabels: {{app: {app}}}}}, template: {{metadata: {{labels: {{app: {app}}}}}, spec: {{containers: [{{name: c}}]}}}}}}\n", r = 1 + variant % 3),
            3 => format!("apiVersion: v1\nkind: Service\nmetadata: {{name: x{n}, namespace: {ns}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: x{n}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: x{n}}}}}\naddressType: IPv4\nports: [{{name: http, port: 80}}]\nendpoints: [{{addresses: [10.2.{n}.{variant}]}}]\n"),
            4 => format!("apiVersion: v1\nkind: Endpoints\nmetadata: {{name: s{n}, namespace: {ns}}}\nsubsets: [{{addresses: [{{ip: 10.3.{n}.{variant}}}], ports: [{{port: 80}}]}}]\n"),
            _ => format!("apiVersion: v1\nkind: Node\nmetadata: {{name: node-{n}, labels: {{topology.kubernetes.io/zone: z{variant}}}}}\n"),
        }
    }

    /// Desired state of the "files": each file is a list of objects.
    fn desired(files: &BTreeMap<u8, String>) -> ClusterState {
        let mut objects = Vec::new();
        for (i, text) in files {
            if let Ok(loaded) = parse_str(&format!("f{i}.yaml"), text, Format::Yaml) {
                objects.extend(loaded.objects);
            }
        }
        let mut state = ClusterState::default();
        for (o, origin) in objects {
            // Duplicates are refused as the file source refuses them.
            let _ = state.add(o, Some(origin));
        }
        state
    }

    use std::collections::BTreeMap;

    fn keys_of(state: &ClusterState) -> BTreeSet<ObjectKey> {
        state.objects().map(|o| ObjectKey::of(&o)).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever the edits, the scoped change set is the full diff.
        #[test]
        fn scoped_changes_equal_the_full_diff(
            start in proptest::collection::vec((0u8..6, 0u8..2, 0u8..4, 0u8..4), 0..8),
            edits in proptest::collection::vec((0u8..8, 0u8..6, 0u8..2, 0u8..4, 0u8..4, any::<bool>()), 1..6),
        ) {
            let ns = ["a", "b"];
            let config = ClusterConfig::default();
            let mut files: BTreeMap<u8, String> = BTreeMap::new();
            for (i, (shape, n, k, v)) in start.iter().enumerate() {
                files.insert(i as u8, object(*shape, ns[*n as usize], *k, *v));
            }
            let mut old_desired = desired(&files);
            let Ok(mut old) = reconcile(old_desired.clone(), None, &config) else { return Ok(()) };
            for (file, shape, n, k, v, remove) in edits {
                if remove {
                    files.remove(&file);
                } else {
                    files.insert(file, object(shape, ns[n as usize], k, v));
                }
                let new_desired = desired(&files);
                // What the file source knows: the keys the files gave before and after.
                let touched: BTreeSet<ObjectKey> = {
                    let (a, b) = (keys_of(&old_desired), keys_of(&new_desired));
                    let changed = old_desired.diff(&new_desired);
                    // Keys of the edited file, plus (a superset is fine) every key that differs.
                    changed.changes.iter().map(|c| c.key().clone())
                        .chain(a.symmetric_difference(&b).cloned()).collect()
                };
                let Ok(new) = reconcile(new_desired.clone(), Some(&old), &config) else { continue };
                let flipped = cluster_wide_flip(&old_desired, &new_desired);
                let (scoped, _) = scoped_changes(&old, &new, &touched, flipped);
                prop_assert_eq!(scoped, old.diff(&new));
                old_desired = new_desired;
                old = new;
            }
        }
    }
}
