//! The snapshot a watch stream builds, and the change set of each step:
//! pure (no I/O, no clock), so that it is tested with synthetic watcher
//! events.
//!
//! Every watcher event of every kind goes into one working
//! [`ClusterState`], edited in place, and the keys it touched are noted.
//! [`Cache::take`] hands out a snapshot with the change set of the noted
//! keys, compared object by object with the snapshot handed out before: a
//! burst of events between two takes is one update, and an object changed
//! and changed back is no change.
//!
//! A relist (the first list, or after a watch expired with 410 Gone) is
//! buffered until it is complete, then replaces the kind's objects in one
//! step, as client-go's reflector replaces its store: a consumer never sees
//! half a list, and what the relist did not change is not in the change set.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use kube::runtime::watcher::Event;
use strait_agent::{Changes, Update};
use strait_model::{ClusterState, Kind, Object, ObjectKey};

/// One object of a watch event, through the model's admission.
#[derive(Clone, Debug)]
pub enum Admitted {
    Object(Object),
    /// Admission refused it: the message names the object and the field.
    Refused {
        key: ObjectKey,
        message: String,
    },
}

impl Admitted {
    pub fn key(&self) -> ObjectKey {
        match self {
            Admitted::Object(o) => ObjectKey::of(o),
            Admitted::Refused { key, .. } => key.clone(),
        }
    }
}

/// What one step of [`Cache::apply`] said about refused objects, for the
/// caller to log (the cache itself does no I/O).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Refused by admission; `kept` when its previous version stays.
    Refused {
        key: ObjectKey,
        message: String,
        kept: bool,
    },
    /// A NetworkPolicy refused by admission stands as one that isolates
    /// every pod of its namespace, both ways, and allows nothing.
    RefusedPolicyIsolates { key: ObjectKey, message: String },
    /// A relist of `kind` is complete: how many objects it changed.
    Relisted { kind: Kind, changed: usize },
}

#[derive(Default)]
struct KindState {
    /// The first full list is complete.
    synced: bool,
    /// A list in progress: what it gave so far, by namespace and name.
    relist: Option<HashMap<(String, String), Admitted>>,
}

/// The cluster as the watch streams describe it.
pub struct Cache {
    state: ClusterState,
    kinds: BTreeMap<Kind, KindState>,
    /// Keys touched since the last snapshot handed out.
    touched: BTreeSet<ObjectKey>,
    /// Objects refused now, with why.
    refused: BTreeMap<ObjectKey, String>,
    published: Option<Arc<ClusterState>>,
    /// The snapshot handed out before `published`, with the keys that
    /// differ between the two. Once the consumer has let it go (it keeps
    /// only the last one), the next snapshot is made from it by copying
    /// those keys and the new ones: a copy of the whole cluster per update
    /// costs more than anything else at 30k objects (22 ms).
    spare: Option<(Arc<ClusterState>, BTreeSet<ObjectKey>)>,
}

impl Cache {
    /// A cache of the `kinds` watched: no snapshot before each of them has
    /// completed its first full list.
    pub fn new(kinds: impl IntoIterator<Item = Kind>) -> Cache {
        Cache {
            state: ClusterState::default(),
            kinds: kinds
                .into_iter()
                .map(|k| (k, KindState::default()))
                .collect(),
            touched: BTreeSet::new(),
            refused: BTreeMap::new(),
            published: None,
            spare: None,
        }
    }

    /// Whether every watched kind completed its first full list.
    pub fn synced(&self) -> bool {
        self.kinds.values().all(|k| k.synced)
    }

    /// The kinds still waiting for their first full list.
    pub fn unsynced(&self) -> Vec<Kind> {
        self.kinds
            .iter()
            .filter(|(_, s)| !s.synced)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Objects refused by admission now (each keeps its previous version,
    /// or is absent).
    pub fn refused(&self) -> &BTreeMap<ObjectKey, String> {
        &self.refused
    }

    /// The working state (every event applied, relists in progress not).
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Whether there is something for [`Cache::take`] to look at.
    pub fn pending(&self) -> bool {
        self.synced() && (self.published.is_none() || !self.touched.is_empty())
    }

    /// One watcher event of `kind`. Events of a kind that is not watched
    /// are ignored.
    pub fn apply(&mut self, kind: Kind, event: Event<Admitted>) -> Vec<Notice> {
        let mut notices = Vec::new();
        let Some(ks) = self.kinds.get_mut(&kind) else {
            return notices;
        };
        match event {
            // A list starts (again): what an earlier, broken one gave is dropped.
            Event::Init => ks.relist = Some(HashMap::new()),
            Event::InitApply(a) => {
                // An object of a list that was never started: treat as one.
                let buffer = ks.relist.get_or_insert_with(HashMap::new);
                let key = a.key();
                buffer.insert((key.namespace, key.name), a);
            }
            Event::InitDone => {
                let buffer = ks.relist.take().unwrap_or_default();
                ks.synced = true;
                let changed = self.replace(kind, buffer, &mut notices);
                notices.push(Notice::Relisted { kind, changed });
            }
            Event::Apply(a) => {
                if let Some(buffer) = ks.relist.as_mut() {
                    let key = a.key();
                    buffer.insert((key.namespace, key.name), a);
                } else {
                    self.upsert(a, &mut notices);
                }
            }
            Event::Delete(a) => {
                let key = a.key();
                if let Some(buffer) = ks.relist.as_mut() {
                    buffer.remove(&(key.namespace.clone(), key.name.clone()));
                } else {
                    self.refused.remove(&key);
                    if self.state.remove(&key).is_some() {
                        self.touched.insert(key);
                    }
                }
            }
        }
        notices
    }

    /// Add or replace one object; a refused one keeps its previous version.
    /// Returns whether the working state changed.
    fn upsert(&mut self, a: Admitted, notices: &mut Vec<Notice>) -> bool {
        match a {
            Admitted::Object(o) => {
                let key = ObjectKey::of(&o);
                self.refused.remove(&key);
                // The same object again (a relist, a resync): nothing to do.
                if self.state.get(&key).as_ref() == Some(&o) {
                    return false;
                }
                self.state.insert(o);
                self.touched.insert(key);
                true
            }
            Admitted::Refused { key, message } if key.kind == Kind::NetworkPolicy => {
                // Fail closed (ARCHITECTURE.md, trust boundaries): a
                // policy strait cannot read must not leave open what it
                // may have closed, so in its place stands the strictest
                // policy of its namespace, and not its previous version.
                self.refused.insert(key.clone(), message.clone());
                let placeholder = isolating_policy(&key, &message);
                let changed = self.state.get(&key).as_ref() != Some(&placeholder);
                if changed {
                    self.state.insert(placeholder);
                    self.touched.insert(key.clone());
                }
                notices.push(Notice::RefusedPolicyIsolates { key, message });
                changed
            }
            Admitted::Refused { key, message } => {
                let kept = self.state.contains(&key);
                self.refused.insert(key.clone(), message.clone());
                notices.push(Notice::Refused { key, message, kept });
                false
            }
        }
    }

    /// A complete list of `kind` replaces its objects: those it does not
    /// hold are deleted (a refused one keeps its previous version, as on
    /// an update). Returns how many objects changed.
    fn replace(
        &mut self,
        kind: Kind,
        listed: HashMap<(String, String), Admitted>,
        notices: &mut Vec<Notice>,
    ) -> usize {
        let gone: Vec<ObjectKey> = self
            .state
            .objects_of(kind)
            .filter(|k| !listed.contains_key(&(k.namespace.clone(), k.name.clone())))
            .collect();
        let mut changed = 0;
        for key in gone {
            self.state.remove(&key);
            self.touched.insert(key);
            changed += 1;
        }
        self.refused.retain(|k, _| {
            k.kind != kind || listed.contains_key(&(k.namespace.clone(), k.name.clone()))
        });
        // In key order: the log of refusals reads the same every time.
        let mut listed: Vec<Admitted> = listed.into_values().collect();
        listed.sort_by_key(Admitted::key);
        for a in listed {
            if self.upsert(a, notices) {
                changed += 1;
            }
        }
        changed
    }

    /// The next snapshot, if there is one: `None` before every kind's
    /// first full list, and when nothing differs from the last one handed
    /// out. The first is [`Changes::Everything`]; then the change set holds
    /// exactly the objects that differ.
    pub fn take(&mut self) -> Option<Update> {
        if !self.synced() {
            return None;
        }
        let Some(published) = &self.published else {
            let state = Arc::new(self.state.clone());
            self.touched.clear();
            self.published = Some(state.clone());
            // The spare one made now, with the first sync, rather than by
            // the first change after it: that change would otherwise wait
            // for a copy of the whole cluster (12–37 ms at 10k Services,
            // on every node at once). It is the copy the steady state
            // keeps anyway.
            self.spare = Some((Arc::new(self.state.clone()), BTreeSet::new()));
            return Some(Update {
                state,
                changes: Changes::Everything,
            });
        };
        if self.touched.is_empty() {
            return None;
        }
        let published = published.clone();
        let touched = std::mem::take(&mut self.touched);
        // A snapshot equal to the working state that the consumer may
        // keep while the next events arrive.
        let state = self.snapshot(&touched);
        let changes = published.diff_keys(&state, &touched);
        if changes.is_empty() {
            // Equal to the one handed out: kept for the next time.
            self.spare = Some((state, BTreeSet::new()));
            return None;
        }
        self.published = Some(state.clone());
        self.spare = Some((published, touched));
        Some(Update {
            state,
            changes: Changes::Set(Arc::new(changes)),
        })
    }

    /// The working state as a snapshot of its own: the spare one brought
    /// up to date key by key when nobody else holds it, else a copy
    /// (objects are shared: the copy is of the indexes).
    fn snapshot(&mut self, touched: &BTreeSet<ObjectKey>) -> Arc<ClusterState> {
        if let Some((mut spare, differing)) = self.spare.take() {
            if let Some(s) = Arc::get_mut(&mut spare) {
                for key in differing.iter().chain(touched) {
                    match self.state.get(key) {
                        Some(o) => {
                            s.insert(o);
                        }
                        None => {
                            s.remove(key);
                        }
                    }
                }
                return spare;
            }
        }
        Arc::new(self.state.clone())
    }
}

/// The keys of one kind's objects in a snapshot.
trait ObjectsOf {
    fn objects_of(&self, kind: Kind) -> Box<dyn Iterator<Item = ObjectKey> + '_>;
}

impl ObjectsOf for ClusterState {
    fn objects_of(&self, kind: Kind) -> Box<dyn Iterator<Item = ObjectKey> + '_> {
        fn keys<
            'a,
            T: k8s_openapi::Metadata<
                    Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                > + 'a,
        >(
            kind: Kind,
            store: &'a strait_model::Store<T>,
        ) -> Box<dyn Iterator<Item = ObjectKey> + 'a> {
            Box::new(store.iter().map(move |o| {
                let m = o.metadata();
                ObjectKey::new(
                    kind,
                    m.namespace.clone().unwrap_or_default(),
                    m.name.clone().unwrap_or_default(),
                )
            }))
        }
        match kind {
            Kind::ClusterNetworkPolicy => keys(kind, &self.cluster_network_policies),
            Kind::Deployment => keys(kind, &self.deployments),
            Kind::EndpointSlice => keys(kind, &self.endpoint_slices),
            Kind::Endpoints => keys(kind, &self.endpoints),
            Kind::Gateway => keys(kind, &self.gateways),
            Kind::GatewayClass => keys(kind, &self.gateway_classes),
            Kind::HTTPRoute => keys(kind, &self.http_routes),
            Kind::ReferenceGrant => keys(kind, &self.reference_grants),
            Kind::Ingress => keys(kind, &self.ingresses),
            Kind::IngressClass => keys(kind, &self.ingress_classes),
            Kind::Namespace => keys(kind, &self.namespaces),
            Kind::NetworkPolicy => keys(kind, &self.network_policies),
            Kind::Node => keys(kind, &self.nodes),
            Kind::Pod => keys(kind, &self.pods),
            Kind::Secret => keys(kind, &self.secrets),
            Kind::Service => keys(kind, &self.services),
        }
    }
}

/// A NetworkPolicy named `key` that selects every pod of its namespace
/// for ingress and egress and allows nothing; annotated with why.
fn isolating_policy(key: &ObjectKey, why: &str) -> Object {
    use strait_model::k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
    use strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    Object::NetworkPolicy(Arc::new(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            annotations: Some(
                [(REFUSED_ANNOTATION.to_owned(), why.to_owned())]
                    .into_iter()
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ..NetworkPolicySpec::default()
        }),
    }))
}

/// On the stand-in of a refused NetworkPolicy: why it was refused.
pub const REFUSED_ANNOTATION: &str = "strait.dev/refused";

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::DynamicObject;
    use strait_model::Change;

    fn svc(ns: &str, name: &str, port: i64) -> Admitted {
        let o: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": port}]}
        }))
        .unwrap();
        crate::admit(Kind::Service, "services", o)
    }

    fn ns(name: &str) -> Admitted {
        let o: DynamicObject =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        crate::admit(Kind::Namespace, "namespaces", o)
    }

    fn key(ns: &str, name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Service, ns, name)
    }

    fn list(cache: &mut Cache, kind: Kind, objects: Vec<Admitted>) -> Vec<Notice> {
        let mut notices = cache.apply(kind, Event::Init);
        for o in objects {
            notices.extend(cache.apply(kind, Event::InitApply(o)));
        }
        notices.extend(cache.apply(kind, Event::InitDone));
        notices
    }

    fn changes(update: Update) -> Vec<Change> {
        match update.changes {
            Changes::Set(s) => s.changes.clone(),
            Changes::Everything => panic!("everything"),
        }
    }

    /// A cache of Services and Namespaces, both listed, first update taken.
    fn synced() -> Cache {
        let mut c = Cache::new([Kind::Service, Kind::Namespace]);
        list(&mut c, Kind::Namespace, vec![ns("a")]);
        list(
            &mut c,
            Kind::Service,
            vec![svc("a", "web", 80), svc("a", "db", 5432)],
        );
        assert!(c.take().is_some());
        c
    }

    #[test]
    fn nothing_before_every_kind_listed_then_everything() {
        let mut c = Cache::new([Kind::Service, Kind::Namespace]);
        list(&mut c, Kind::Service, vec![svc("a", "web", 80)]);
        assert!(c.take().is_none(), "Namespaces are not listed yet");
        assert_eq!(c.unsynced(), vec![Kind::Namespace]);
        // An event of a listed kind meanwhile is kept, not handed out.
        c.apply(Kind::Service, Event::Apply(svc("a", "db", 5432)));
        assert!(c.take().is_none());
        list(&mut c, Kind::Namespace, vec![ns("a")]);
        let first = c.take().unwrap();
        assert!(matches!(first.changes, Changes::Everything));
        assert_eq!(first.state.services.len(), 2);
        assert_eq!(first.state.namespaces.len(), 1);
        assert!(c.take().is_none(), "nothing new");
    }

    #[test]
    fn an_empty_list_counts_as_listed() {
        let mut c = Cache::new([Kind::Service]);
        list(&mut c, Kind::Service, vec![]);
        let first = c.take().unwrap();
        assert!(first.state.is_empty());
    }

    #[test]
    fn each_event_gives_the_change_of_its_object_only() {
        let mut c = synced();
        c.apply(Kind::Service, Event::Apply(svc("a", "web", 81)));
        assert_eq!(
            changes(c.take().unwrap()),
            vec![Change::Modified(key("a", "web"))]
        );
        c.apply(Kind::Service, Event::Apply(svc("a", "new", 80)));
        let u = c.take().unwrap();
        assert!(u.state.services.get("a", "new").is_some());
        assert_eq!(changes(u), vec![Change::Added(key("a", "new"))]);
        c.apply(Kind::Service, Event::Delete(svc("a", "db", 5432)));
        let u = c.take().unwrap();
        assert!(u.state.services.get("a", "db").is_none());
        assert_eq!(changes(u), vec![Change::Deleted(key("a", "db"))]);
    }

    #[test]
    fn a_burst_is_one_update_and_a_change_undone_is_none() {
        let mut c = synced();
        let before = c.take();
        assert!(before.is_none());
        c.apply(Kind::Service, Event::Apply(svc("a", "web", 81)));
        c.apply(Kind::Service, Event::Apply(svc("a", "web", 82)));
        c.apply(Kind::Service, Event::Apply(svc("a", "x", 80)));
        assert_eq!(
            changes(c.take().unwrap()),
            vec![
                Change::Added(key("a", "x")),
                Change::Modified(key("a", "web"))
            ]
        );
        // Changed and changed back before the consumer looked: nothing.
        c.apply(Kind::Service, Event::Apply(svc("a", "web", 1)));
        c.apply(Kind::Service, Event::Apply(svc("a", "web", 82)));
        c.apply(Kind::Service, Event::Apply(svc("a", "y", 80)));
        c.apply(Kind::Service, Event::Delete(svc("a", "y", 80)));
        assert!(c.take().is_none());
    }

    #[test]
    fn a_relist_of_the_same_objects_changes_nothing() {
        let mut c = synced();
        let notices = list(
            &mut c,
            Kind::Service,
            vec![svc("a", "db", 5432), svc("a", "web", 80)],
        );
        assert_eq!(
            notices,
            vec![Notice::Relisted {
                kind: Kind::Service,
                changed: 0
            }]
        );
        assert!(c.take().is_none());
    }

    #[test]
    fn a_relist_gives_only_what_differs_and_is_seen_whole() {
        let mut c = synced();
        c.apply(Kind::Service, Event::Init);
        c.apply(Kind::Service, Event::InitApply(svc("a", "web", 8080)));
        // Half a list: nothing handed out, the old objects stand.
        assert!(c.take().is_none());
        assert!(c.state().services.get("a", "db").is_some());
        c.apply(Kind::Service, Event::InitApply(svc("a", "new", 80)));
        c.apply(Kind::Service, Event::InitDone);
        let u = c.take().unwrap();
        assert_eq!(
            changes(u.clone()),
            vec![
                Change::Added(key("a", "new")),
                Change::Modified(key("a", "web")),
                Change::Deleted(key("a", "db"))
            ]
        );
        assert_eq!(u.state.services.len(), 2);
        assert_eq!(u.state.namespaces.len(), 1, "other kinds untouched");
    }

    #[test]
    fn a_list_broken_off_and_started_again_keeps_nothing_of_the_first_try() {
        let mut c = synced();
        c.apply(Kind::Service, Event::Init);
        c.apply(Kind::Service, Event::InitApply(svc("a", "ghost", 80)));
        c.apply(Kind::Service, Event::Init);
        c.apply(Kind::Service, Event::InitApply(svc("a", "web", 80)));
        c.apply(Kind::Service, Event::InitApply(svc("a", "db", 5432)));
        c.apply(Kind::Service, Event::InitDone);
        assert!(c.take().is_none());
        assert!(c.state().services.get("a", "ghost").is_none());
    }

    #[test]
    fn a_refused_object_keeps_its_previous_version_and_hurts_no_other() {
        let mut c = synced();
        let notices = c.apply(Kind::Service, Event::Apply(svc("a", "web", 70000)));
        match &notices[..] {
            [Notice::Refused {
                key: k,
                message,
                kept: true,
            }] => {
                assert_eq!(k, &key("a", "web"));
                assert!(message.contains("spec.ports[0].port"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.refused().len(), 1);
        c.apply(Kind::Service, Event::Apply(svc("a", "db", 5433)));
        let u = c.take().unwrap();
        assert_eq!(changes(u.clone()), vec![Change::Modified(key("a", "db"))]);
        let web = u.state.services.get("a", "web").unwrap();
        assert_eq!(
            web.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
            80
        );
        // Fixed: admitted, no longer counted.
        c.apply(Kind::Service, Event::Apply(svc("a", "web", 81)));
        assert!(c.refused().is_empty());
        assert_eq!(
            changes(c.take().unwrap()),
            vec![Change::Modified(key("a", "web"))]
        );
        // A new object refused is absent; its deletion forgets the refusal.
        let notices = c.apply(Kind::Service, Event::Apply(svc("a", "bad", 0)));
        assert!(matches!(
            &notices[..],
            [Notice::Refused { kept: false, .. }]
        ));
        assert!(c.take().is_none());
        c.apply(Kind::Service, Event::Delete(svc("a", "bad", 0)));
        assert!(c.refused().is_empty());
    }

    #[test]
    fn a_refused_object_in_a_relist_is_kept_not_deleted() {
        let mut c = synced();
        list(
            &mut c,
            Kind::Service,
            vec![svc("a", "web", 70000), svc("a", "db", 5432)],
        );
        assert!(c.take().is_none(), "web kept as it was, db unchanged");
        assert_eq!(c.refused().len(), 1);
        // Gone from the next list: deleted, and no longer refused.
        list(&mut c, Kind::Service, vec![svc("a", "db", 5432)]);
        assert_eq!(
            changes(c.take().unwrap()),
            vec![Change::Deleted(key("a", "web"))]
        );
        assert!(c.refused().is_empty());
    }

    /// Snapshots made from the spare one equal the working state, whatever
    /// the consumer keeps; change sets equal the full diff.
    #[test]
    fn snapshots_made_key_by_key_equal_the_working_state() {
        let mut c = synced();
        let mut last = c.state().clone();
        let mut kept: Vec<Update> = Vec::new();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for round in 0..300 {
            for _ in 0..(1 + next() % 4) {
                let name = format!("s{}", next() % 12);
                match next() % 3 {
                    0 => c.apply(Kind::Service, Event::Delete(svc("a", &name, 80))),
                    _ => c.apply(
                        Kind::Service,
                        Event::Apply(svc("a", &name, 80 + (next() % 3) as i64)),
                    ),
                };
            }
            if round % 50 == 25 {
                list(
                    &mut c,
                    Kind::Service,
                    vec![svc("a", "s1", 80), svc("a", "s2", 81)],
                );
            }
            if let Some(u) = c.take() {
                assert!(u.state.diff(c.state()).is_empty(), "round {round}");
                assert_eq!(
                    changes(u.clone()),
                    last.diff(&u.state).changes,
                    "round {round}"
                );
                last = (*u.state).clone();
                // Sometimes the consumer keeps an old snapshot: then a copy is made.
                if next() % 4 == 0 {
                    kept.push(u);
                }
            } else {
                assert!(last.diff(c.state()).is_empty(), "round {round}");
            }
            if kept.len() > 3 {
                kept.remove(0);
            }
        }
    }

    #[test]
    fn events_of_kinds_not_watched_are_ignored() {
        let mut c = synced();
        c.apply(Kind::Pod, Event::Init);
        c.apply(Kind::Pod, Event::InitDone);
        assert!(c.take().is_none());
    }
}

#[cfg(test)]
mod refused_policy_tests {
    use super::*;
    use kube::core::DynamicObject;

    fn policy(protocol: &str) -> Admitted {
        let o: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-in", "namespace": "a"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"ports": [{"port": 80, "protocol": protocol}]}],
            }
        }))
        .unwrap();
        crate::admit(Kind::NetworkPolicy, "networkpolicies", o)
    }

    #[test]
    fn a_refused_network_policy_stands_as_one_isolating_its_namespace_both_ways() {
        let mut c = Cache::new([Kind::NetworkPolicy]);
        c.apply(Kind::NetworkPolicy, Event::Init);
        c.apply(Kind::NetworkPolicy, Event::InitApply(policy("TCP")));
        c.apply(Kind::NetworkPolicy, Event::InitDone);
        let first = c.take().expect("first snapshot");
        let web_in = first.state.network_policies.get("a", "web-in").unwrap();
        assert!(web_in.spec.as_ref().unwrap().ingress.is_some());

        // An update strait cannot honour (ICMP is no protocol of the API):
        // not the previous version, which may be more open, but the
        // strictest policy of the namespace.
        let notices = c.apply(Kind::NetworkPolicy, Event::Apply(policy("ICMP")));
        match &notices[..] {
            [Notice::RefusedPolicyIsolates { key, message }] => {
                assert_eq!(key.name, "web-in");
                assert!(message.contains("protocol"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let u = c.take().expect("the stand-in is a change");
        let stand_in = u.state.network_policies.get("a", "web-in").unwrap();
        let spec = stand_in.spec.as_ref().unwrap();
        assert_eq!(spec.pod_selector, Default::default(), "every pod");
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
        );
        assert!(
            spec.ingress.is_none() && spec.egress.is_none(),
            "nothing allowed"
        );
        assert!(
            stand_in.metadata.annotations.as_ref().unwrap()[REFUSED_ANNOTATION]
                .contains("protocol")
        );
        assert_eq!(c.refused().len(), 1);

        // The same refusal again changes nothing; the fix replaces it.
        c.apply(Kind::NetworkPolicy, Event::Apply(policy("ICMP")));
        assert!(c.take().is_none());
        c.apply(Kind::NetworkPolicy, Event::Apply(policy("UDP")));
        assert!(c.refused().is_empty());
        let fixed = c.take().expect("fixed");
        let web_in = fixed.state.network_policies.get("a", "web-in").unwrap();
        assert!(web_in.metadata.annotations.is_none());
        assert!(web_in.spec.as_ref().unwrap().ingress.is_some());

        // A new policy refused in a list stands in too; deleted, it is gone.
        c.apply(Kind::NetworkPolicy, Event::Delete(policy("UDP")));
        c.take();
        c.apply(Kind::NetworkPolicy, Event::Init);
        c.apply(Kind::NetworkPolicy, Event::InitApply(policy("ICMP")));
        c.apply(Kind::NetworkPolicy, Event::InitDone);
        let relisted = c.take().expect("relist");
        assert!(relisted.state.network_policies.get("a", "web-in").is_some());
        c.apply(Kind::NetworkPolicy, Event::Delete(policy("ICMP")));
        let gone = c.take().expect("deleted");
        assert!(gone.state.network_policies.get("a", "web-in").is_none());
        assert!(c.refused().is_empty());
    }
}
