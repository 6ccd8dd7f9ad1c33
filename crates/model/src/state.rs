//! `ClusterState`: an immutable snapshot of the objects strait needs, indexed
//! by namespace/name and by labels, and the set of what changed between two.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Metadata;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::Serialize;

use crate::cnp::ClusterNetworkPolicy;
use crate::gateway::{Gateway, GatewayClass, HTTPRoute, ReferenceGrant};
use crate::manifest::Origin;
use crate::object::{Kind, Object, ObjectKey};
use crate::pod::CompactPod;
use crate::selector::Selector;
use crate::{Error, Result};

/// The objects of one kind, by namespace then name, with a label index.
/// Nested maps so that a lookup by `&str` allocates nothing: controllers
/// look up every selected pod and every pod's node.
#[derive(Clone, Debug)]
pub struct Store<T> {
    items: BTreeMap<String, BTreeMap<String, Arc<T>>>,
    len: usize,
    /// (namespace, label key, label value), packed by [`label_key`] →
    /// names, sorted. Every snapshot has its own copy of this index (the
    /// objects are shared), so it is kept small: one allocation per key
    /// and a plain vector of names (a label rarely holds many), where a
    /// tuple of three strings and a `BTreeSet` cost ~450 bytes per label.
    by_label: HashMap<Box<str>, Vec<Box<str>>>,
}

/// The index key of a label in a namespace: each part but the last with
/// its length in front, so that no two triples give the same key.
fn label_key(namespace: &str, key: &str, value: &str) -> Box<str> {
    format!("{}:{namespace}{}:{key}{value}", namespace.len(), key.len()).into_boxed_str()
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            items: BTreeMap::new(),
            len: 0,
            by_label: HashMap::new(),
        }
    }
}

impl<T> Store<T> {
    /// Every object with its namespace and name, in that order.
    fn entries(&self) -> impl Iterator<Item = ((&str, &str), &Arc<T>)> {
        self.items.iter().flat_map(|(ns, names)| {
            names
                .iter()
                .map(move |(name, o)| ((ns.as_str(), name.as_str()), o))
        })
    }
}

impl<T: Metadata<Ty = ObjectMeta>> Store<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `namespace` is empty for cluster-scoped kinds.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<T>> {
        self.items.get(namespace)?.get(name)
    }

    /// Every object, ordered by namespace then name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<T>> {
        self.items.values().flat_map(BTreeMap::values)
    }

    pub fn in_namespace<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a Arc<T>> + 'a {
        self.items
            .get(namespace)
            .into_iter()
            .flat_map(BTreeMap::values)
    }

    /// Objects in `namespace` whose labels match `selector`, by name. Uses the
    /// label index when the selector has an equality requirement.
    pub fn select<'a>(&'a self, namespace: &str, selector: &Selector) -> Vec<&'a Arc<T>> {
        let matches = |o: &&Arc<T>| selector.matches_opt(o.metadata().labels.as_ref());
        match selector.equality() {
            Some((k, v)) => {
                let key = label_key(namespace, k, v);
                self.by_label
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .filter_map(|name| self.get(namespace, name))
                    .filter(matches)
                    .collect()
            }
            None => self.in_namespace(namespace).filter(matches).collect(),
        }
    }

    /// Add or replace; returns the replaced object.
    pub fn insert(&mut self, object: impl Into<Arc<T>>) -> Option<Arc<T>> {
        let object: Arc<T> = object.into();
        let meta = object.metadata();
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let old = self.remove(&namespace, &name);
        for (k, v) in meta.labels.iter().flatten() {
            let names = self
                .by_label
                .entry(label_key(&namespace, k, v))
                .or_default();
            // Objects mostly come in name order (a list is): then this is a push.
            if let Err(at) = names.binary_search_by(|n| (**n).cmp(name.as_str())) {
                names.insert(at, name.as_str().into());
            }
        }
        // Look up first: the namespace is nearly always there already.
        match self.items.get_mut(&namespace) {
            Some(names) => {
                names.insert(name, object);
            }
            None => {
                self.items
                    .insert(namespace, BTreeMap::from([(name, object)]));
            }
        }
        self.len += 1;
        old
    }

    pub fn remove(&mut self, namespace: &str, name: &str) -> Option<Arc<T>> {
        let names = self.items.get_mut(namespace)?;
        let old = names.remove(name)?;
        if names.is_empty() {
            self.items.remove(namespace);
        }
        self.len -= 1;
        for (k, v) in old.metadata().labels.iter().flatten() {
            let key = label_key(namespace, k, v);
            if let Some(names) = self.by_label.get_mut(&key) {
                if let Ok(at) = names.binary_search_by(|n| (**n).cmp(name)) {
                    names.remove(at);
                }
                if names.is_empty() {
                    self.by_label.remove(&key);
                }
            }
        }
        Some(old)
    }
}

impl<T: PartialEq> Store<T> {
    /// Walk both stores in key order at once: no lookups, and shared
    /// objects (the same `Arc`) compare in one step.
    fn diff(&self, newer: &Store<T>, kind: Kind, out: &mut Vec<Change>) {
        merge_diff(self.entries(), newer.entries(), kind, out);
    }

    /// The same, over one namespace only: what a source whose change stays
    /// in a namespace walks instead of the whole store.
    fn diff_in(&self, newer: &Store<T>, namespace: &str, kind: Kind, out: &mut Vec<Change>) {
        fn of<'s, T>(
            s: &'s Store<T>,
            namespace: &str,
        ) -> impl Iterator<Item = ((&'s str, &'s str), &'s Arc<T>)> {
            s.items
                .get_key_value(namespace)
                .into_iter()
                .flat_map(|(ns, names)| {
                    names
                        .iter()
                        .map(move |(name, o)| ((ns.as_str(), name.as_str()), o))
                })
        }
        merge_diff(of(self, namespace), of(newer, namespace), kind, out);
    }

    /// Whether the object under `namespace`/`name` differs between the two.
    fn differs(&self, newer: &Store<T>, namespace: &str, name: &str) -> Option<ChangeKind> {
        match (
            self.get_arc(namespace, name),
            newer.get_arc(namespace, name),
        ) {
            (None, None) => None,
            (None, Some(_)) => Some(ChangeKind::Added),
            (Some(_), None) => Some(ChangeKind::Deleted),
            (Some(a), Some(b)) => (!Arc::ptr_eq(a, b) && a != b).then_some(ChangeKind::Modified),
        }
    }
}

impl<T> Store<T> {
    fn get_arc(&self, namespace: &str, name: &str) -> Option<&Arc<T>> {
        self.items.get(namespace)?.get(name)
    }
}

#[derive(Clone, Copy)]
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// Two key-ordered walks compared in step.
fn merge_diff<'a, T: PartialEq + 'a>(
    old: impl Iterator<Item = ((&'a str, &'a str), &'a Arc<T>)>,
    new: impl Iterator<Item = ((&'a str, &'a str), &'a Arc<T>)>,
    kind: Kind,
    out: &mut Vec<Change>,
) {
    let key = |(ns, name): (&str, &str)| ObjectKey::new(kind, ns, name);
    let mut old = old.peekable();
    let mut new = new.peekable();
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some((k, _)), None) => {
                out.push(Change::Deleted(key(*k)));
                old.next();
            }
            (None, Some((k, _))) => {
                out.push(Change::Added(key(*k)));
                new.next();
            }
            (Some((ko, vo)), Some((kn, vn))) => match ko.cmp(kn) {
                std::cmp::Ordering::Less => {
                    out.push(Change::Deleted(key(*ko)));
                    old.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push(Change::Added(key(*kn)));
                    new.next();
                }
                std::cmp::Ordering::Equal => {
                    if !Arc::ptr_eq(vo, vn) && vo != vn {
                        out.push(Change::Modified(key(*ko)));
                    }
                    old.next();
                    new.next();
                }
            },
        }
    }
}

/// What happened to one object between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Added(ObjectKey),
    Modified(ObjectKey),
    Deleted(ObjectKey),
}

impl Change {
    pub fn key(&self) -> &ObjectKey {
        match self {
            Change::Added(k) | Change::Modified(k) | Change::Deleted(k) => k,
        }
    }
}

/// The changes between two snapshots, ordered by kind, namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSet {
    pub changes: Vec<Change>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether any object of `kind` changed: how a planner decides it has work.
    pub fn touches(&self, kind: Kind) -> bool {
        self.changes.iter().any(|c| c.key().kind == kind)
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Put in the order `diff` gives and drop repeated keys (the first kept).
    pub fn normalize(&mut self) {
        self.changes.sort();
        let mut seen = std::collections::HashSet::new();
        self.changes.retain(|c| seen.insert(c.key().clone()));
    }
}

macro_rules! cluster_state {
    ($($kind:ident($stored:ty) => $field:ident,)*) => {
        /// An immutable snapshot of the cluster as strait sees it. Share it
        /// behind an `Arc`; every change makes a new one.
        #[derive(Clone, Debug, Default)]
        pub struct ClusterState {
            $(pub $field: Store<$stored>,)*
            origins: HashMap<ObjectKey, Origin>,
        }

        impl ClusterState {
            /// Add or replace one object; returns the replaced one.
            pub fn insert(&mut self, object: Object) -> Option<Object> {
                match object {
                    $(Object::$kind(o) => self.$field.insert(o).map(Object::$kind),)*
                }
            }

            pub fn remove(&mut self, key: &ObjectKey) -> Option<Object> {
                self.origins.remove(key);
                match key.kind {
                    $(Kind::$kind => self.$field.remove(&key.namespace, &key.name).map(Object::$kind),)*
                }
            }

            pub fn contains(&self, key: &ObjectKey) -> bool {
                match key.kind {
                    $(Kind::$kind => self.$field.get(&key.namespace, &key.name).is_some(),)*
                }
            }

            /// Every object, ordered by kind, namespace and name.
            pub fn objects(&self) -> impl Iterator<Item = Object> + '_ {
                let mut all: Box<dyn Iterator<Item = Object>> = Box::new(std::iter::empty());
                $(all = Box::new(all.chain(self.$field.iter().map(|o| Object::$kind(o.clone()))));)*
                all
            }

            pub fn len(&self) -> usize {
                0 $(+ self.$field.len())*
            }

            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// The object under `key`, if any.
            pub fn get(&self, key: &ObjectKey) -> Option<Object> {
                match key.kind {
                    $(Kind::$kind => self.$field.get(&key.namespace, &key.name).cloned().map(Object::$kind),)*
                }
            }

            /// What happened to the objects of `keys` only, from `self` to
            /// `newer`: for a source that knows which objects it touched.
            pub fn diff_keys<'k>(&self, newer: &ClusterState, keys: impl IntoIterator<Item = &'k ObjectKey>) -> ChangeSet {
                let mut changes = Vec::new();
                for key in keys {
                    let kind = match key.kind {
                        $(Kind::$kind => self.$field.differs(&newer.$field, &key.namespace, &key.name),)*
                    };
                    match kind {
                        Some(ChangeKind::Added) => changes.push(Change::Added(key.clone())),
                        Some(ChangeKind::Modified) => changes.push(Change::Modified(key.clone())),
                        Some(ChangeKind::Deleted) => changes.push(Change::Deleted(key.clone())),
                        None => {}
                    }
                }
                let mut set = ChangeSet { changes };
                set.normalize();
                set
            }

            /// What changed in namespace `namespace` (every namespaced
            /// kind), from `self` to `newer`; appended to `out`, unsorted.
            pub fn diff_namespace(&self, newer: &ClusterState, namespace: &str, out: &mut Vec<Change>) {
                $(if Kind::$kind.is_namespaced() {
                    self.$field.diff_in(&newer.$field, namespace, Kind::$kind, out);
                })*
            }

            /// What changed from `self` to `newer`.
            pub fn diff(&self, newer: &ClusterState) -> ChangeSet {
                let mut changes = Vec::new();
                $(self.$field.diff(&newer.$field, Kind::$kind, &mut changes);)*
                changes.sort();
                ChangeSet { changes }
            }

            fn serialize_items<S: SerializeSeq>(&self, seq: &mut S) -> Result<(), S::Error> {
                $(for o in self.$field.iter() { seq.serialize_element(&**o)?; })*
                Ok(())
            }
        }
    };
}

// In `Kind` order, so that iteration is sorted by kind.
cluster_state! {
    ClusterNetworkPolicy(ClusterNetworkPolicy) => cluster_network_policies,
    Deployment(Deployment) => deployments,
    EndpointSlice(EndpointSlice) => endpoint_slices,
    Endpoints(Endpoints) => endpoints,
    Gateway(Gateway) => gateways,
    GatewayClass(GatewayClass) => gateway_classes,
    HTTPRoute(HTTPRoute) => http_routes,
    Ingress(Ingress) => ingresses,
    IngressClass(IngressClass) => ingress_classes,
    Namespace(Namespace) => namespaces,
    NetworkPolicy(NetworkPolicy) => network_policies,
    Node(Node) => nodes,
    Pod(CompactPod) => pods,
    ReferenceGrant(ReferenceGrant) => reference_grants,
    Secret(Secret) => secrets,
    Service(Service) => services,
}

impl ClusterState {
    /// A snapshot of `objects`; an object given twice is an error that names
    /// both places.
    pub fn from_objects(
        objects: impl IntoIterator<Item = (Object, Option<Origin>)>,
    ) -> Result<ClusterState> {
        let mut state = ClusterState::default();
        for (object, origin) in objects {
            state.add(object, origin)?;
        }
        Ok(state)
    }

    /// Add a new object; error if one with the same kind, namespace and name exists.
    pub fn add(&mut self, object: Object, origin: Option<Origin>) -> Result<()> {
        let key = ObjectKey::of(&object);
        if self.contains(&key) {
            let place =
                |o: Option<&Origin>| o.map_or_else(|| "(derived)".to_owned(), |o| o.to_string());
            return Err(Error::Duplicate {
                first: place(self.origins.get(&key)),
                second: place(origin.as_ref()),
                object: key.to_string(),
            });
        }
        if let Some(origin) = origin {
            self.origins.insert(key, origin);
        }
        self.insert(object);
        Ok(())
    }

    /// Where an object was read from, if it came from a manifest.
    pub fn origin(&self, key: &ObjectKey) -> Option<&Origin> {
        self.origins.get(key)
    }

    /// The snapshot as a `kind: List`, the way `kubectl get -o yaml` prints.
    pub fn as_list(&self) -> impl Serialize + '_ {
        ListView(self)
    }
}

struct ListView<'a>(&'a ClusterState);

struct Items<'a>(&'a ClusterState);

impl Serialize for ListView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("apiVersion", "v1")?;
        map.serialize_entry("kind", "List")?;
        map.serialize_entry("items", &Items(self.0))?;
        map.end()
    }
}

impl Serialize for Items<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        self.0.serialize_items(&mut seq)?;
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(ns: &str, name: &str, labels: &[(&str, &str)]) -> Object {
        Object::Pod(Arc::new(CompactPod::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        })))
    }

    #[test]
    fn select_uses_labels_within_a_namespace() {
        let state = ClusterState::from_objects([
            (pod("a", "p1", &[("app", "web")]), None),
            (pod("a", "p2", &[("app", "db")]), None),
            (pod("b", "p3", &[("app", "web")]), None),
        ])
        .unwrap();
        let web = Selector::from_map(&[("app".to_string(), "web".to_string())].into()).unwrap();
        let names: Vec<_> = state
            .pods
            .select("a", &web)
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["p1"]);
        assert_eq!(state.pods.select("b", &Selector::default()).len(), 1);
        assert_eq!(state.pods.in_namespace("a").count(), 2);
    }

    #[test]
    fn relabelling_moves_an_object_in_the_index() {
        let mut state =
            ClusterState::from_objects([(pod("a", "p1", &[("app", "web")]), None)]).unwrap();
        state.insert(pod("a", "p1", &[("app", "db")]));
        let web = Selector::from_map(&[("app".to_string(), "web".to_string())].into()).unwrap();
        assert!(state.pods.select("a", &web).is_empty());
    }

    #[test]
    fn diff_reports_added_modified_deleted() {
        let old = ClusterState::from_objects([
            (pod("a", "keep", &[]), None),
            (pod("a", "change", &[]), None),
            (pod("a", "gone", &[]), None),
        ])
        .unwrap();
        let mut new = old.clone();
        new.insert(pod("a", "change", &[("x", "y")]));
        new.remove(&ObjectKey::new(Kind::Pod, "a", "gone"));
        new.insert(pod("a", "new", &[]));
        let key = |n: &str| ObjectKey::new(Kind::Pod, "a", n);
        assert_eq!(
            old.diff(&new).changes,
            vec![
                Change::Added(key("new")),
                Change::Modified(key("change")),
                Change::Deleted(key("gone"))
            ]
        );
        assert!(old.diff(&old.clone()).is_empty());
    }

    #[test]
    fn duplicates_name_both_places() {
        let o = |i| {
            Some(Origin {
                file: "f.yaml".into(),
                index: i,
            })
        };
        let err =
            ClusterState::from_objects([(pod("a", "p", &[]), o(1)), (pod("a", "p", &[]), o(3))])
                .unwrap_err()
                .to_string();
        assert_eq!(
            err,
            "Pod a/p is defined twice: f.yaml, document 1 and f.yaml, document 3"
        );
    }
}
