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

/// The changes from `old` to `new` (controller output), given the desired
/// objects before and after and the keys of the desired objects touched.
pub fn scoped_changes(
    old_desired: &ClusterState,
    new_desired: &ClusterState,
    old: &ClusterState,
    new: &ClusterState,
    touched: &BTreeSet<ObjectKey>,
) -> (ChangeSet, Scope) {
    let flipped = old_desired.pods.is_empty() != new_desired.pods.is_empty()
        || old_desired.endpoints.is_empty() != new_desired.endpoints.is_empty();
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
