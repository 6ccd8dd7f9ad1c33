//! The object store: every object as JSON, one monotonic resourceVersion
//! over all of them (as etcd's revision), and a bounded history of events
//! so that a watch can start from a version the client already has.
//!
//! The history is bounded per resource (the last `history` events of each),
//! so that churn in one kind does not expire the watches of another. A
//! watcher's live events go through a bounded queue ([`WATCH_QUEUE`]),
//! filled under the store's lock by the write itself: a watch registered
//! under the same lock sees every later event exactly once, and a watcher
//! that does not keep up is closed rather than slowing the writers.
//!
//! Pure and synchronous: no HTTP, no clock of its own (the caller passes
//! `now`), no randomness beyond what the caller hands in — tests drive it
//! directly. The HTTP layer maps requests onto these calls.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};
use strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement,
};
use strait_model::Requirement;
use tokio::sync::mpsc;

use crate::error::{ApiError, Cause};
use crate::resources::{Resource, Subresource};

/// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR` as a watch sends them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    /// The watch cannot go on; the object is a `Status` (410 `Expired`
    /// after [`Store::compact`]) and the watch ends after it.
    Error,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
            EventType::Error => "ERROR",
        }
    }
}

/// One change, as a watcher of its resource sees it.
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventType,
    /// The object after the change (before it, for `DELETED`, with the
    /// deletion's resourceVersion).
    pub object: Arc<Value>,
    /// The object before the change, for selector-filtered watches (an
    /// object that stops matching is `DELETED` to them).
    pub previous: Option<Arc<Value>>,
    pub resource_version: u64,
}

/// What a list or watch selects.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// `None`: all namespaces (or a cluster-scoped resource).
    pub namespace: Option<String>,
    /// `labelSelector`, as sent (`app=web,tier in (a,b),!x`).
    pub label_selector: Option<String>,
    /// `fieldSelector`: `metadata.name`, `metadata.namespace`,
    /// `spec.nodeName` (pods), `status.phase` (pods), with `=`, `==`, `!=`.
    pub field_selector: Option<String>,
    /// `limit` (0 or absent: everything).
    pub limit: Option<usize>,
    /// `continue` token from a previous page.
    pub continue_token: Option<String>,
    /// `resourceVersion` (watch: start after it; `0` or absent: send the
    /// current objects as `ADDED` first, as kube-apiserver does).
    pub resource_version: Option<String>,
    /// `allowWatchBookmarks`.
    pub allow_bookmarks: bool,
    /// `sendInitialEvents=true` (streaming list): `ADDED` for every current
    /// object, then a bookmark annotated `k8s.io/initial-events-end`.
    pub send_initial_events: bool,
}

/// A page of a list.
#[derive(Clone, Debug)]
pub struct List {
    pub items: Vec<Arc<Value>>,
    /// The store's resourceVersion the list was read at.
    pub resource_version: u64,
    /// Set when more pages follow.
    pub continue_token: Option<String>,
    pub remaining_item_count: Option<u64>,
}

/// `DELETE`'s options (`DeleteOptions` body or query).
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`: pods default to their
    /// `terminationGracePeriodSeconds`; 0 deletes at once.
    pub grace_period_seconds: Option<i64>,
    /// `preconditions.resourceVersion` / `preconditions.uid`.
    pub precondition_resource_version: Option<String>,
    pub precondition_uid: Option<String>,
}

/// What a write needs from outside the store: the time (RFC 3339 and
/// Unix seconds) and a fresh uid / generateName suffix source.
pub struct WriteContext<'a> {
    pub now_unix: i64,
    /// 16 random bytes per call, for uids and generateName suffixes.
    pub random: &'a mut dyn FnMut() -> [u8; 16],
}

/// Defaulting and validation of a written object, run before it is
/// stored: the lab plugs in strait's admission (the model's defaults and
/// checks, ClusterIP allocation). `old` is the stored object on update.
pub trait Admission: Send + Sync {
    fn admit(
        &self,
        resource: &Resource,
        object: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError>;

    /// Run under the store's lock right before a create or an update of
    /// `object` is stored (`old`: the stored version), with the resource's
    /// objects as stored now: what must be unique across objects (a
    /// Service's ClusterIPs and NodePorts) is checked and allocated here,
    /// in the same step as the write, so two writes never take the same
    /// one. A refusal stores nothing. It must not call the store.
    fn allocate(
        &self,
        _resource: &Resource,
        _object: &mut Value,
        _old: Option<&Value>,
        _stored: &Stored<'_>,
    ) -> Result<(), ApiError> {
        Ok(())
    }
}

/// The stored objects of one resource, as [`Admission::allocate`] sees them.
pub struct Stored<'a> {
    objects: Option<&'a BTreeMap<Key, Arc<Value>>>,
}

impl Stored<'_> {
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.objects?
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|v| &**v)
    }

    pub fn len(&self) -> usize {
        self.objects.map_or(0, BTreeMap::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Admits everything as it is.
pub struct AdmitAll;

impl Admission for AdmitAll {
    fn admit(&self, _: &Resource, _: &mut Value, _: Option<&Value>) -> Result<(), ApiError> {
        Ok(())
    }
}

/// The receiving end of a watch: the events since the requested version
/// that the history still held, then live ones. `None` from `next` means
/// the watch fell too far behind and was closed; the client re-lists.
pub struct Watch {
    /// Events already due, in order.
    pub backlog: Vec<Event>,
    /// Live events (bounded: a watcher that falls behind is closed).
    pub live: tokio::sync::mpsc::Receiver<Event>,
}

/// How many live events a watcher may have waiting before it is closed
/// (the client then re-watches from its last version or re-lists).
pub const WATCH_QUEUE: usize = 1000;

/// How often [`Store::modify`] re-reads and retries after a concurrent write.
const MODIFY_ATTEMPTS: usize = 5;

/// kube's alphabet for `generateName` suffixes: no vowels (no words), no
/// digits that read as letters.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const GENERATED_SUFFIX: usize = 5;
/// A generated name stays a DNS label: the prefix is cut to 63 - 5.
const MAX_GENERATE_PREFIX: usize = 63 - GENERATED_SUFFIX;

/// Namespaces kube-apiserver refuses to delete.
const UNDELETABLE_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// `(namespace, name)`: namespace first, so that a namespace's objects are one
/// range of the map and items come out as kube-apiserver sorts them. The
/// namespace is empty for cluster-scoped resources.
type Key = (String, String);

/// One resource's objects, recent events and watchers.
struct Bucket {
    objects: BTreeMap<Key, Arc<Value>>,
    /// The last events of this resource, oldest first (at most the store's
    /// `history`). The history is kept per resource, so that a busy kind
    /// (pods) does not expire the watches of a quiet one (services).
    history: VecDeque<Event>,
    /// Every event of this resource with a version above this is in
    /// `history`; a watch must start at or after it.
    compacted: u64,
    watchers: Vec<Watcher>,
    /// How many objects each namespace holds: a page's
    /// `remainingItemCount` without counting what follows it.
    per_namespace: HashMap<String, usize>,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 0,
            watchers: Vec::new(),
            per_namespace: HashMap::new(),
        }
    }

    /// Record `event` and hand it to every watcher it concerns. Runs under
    /// the store's lock, so a watch registered under the same lock sees
    /// each event exactly once: in its backlog or live.
    fn publish(&mut self, event: Event, history: usize) {
        self.watchers.retain(|w| {
            if w.tx.is_closed() {
                return false;
            }
            match w.filter.view(&event) {
                None => true,
                // Full: the watcher fell behind; dropping the sender ends its
                // stream once it has read what is queued.
                Some(e) => w.tx.try_send(e).is_ok(),
            }
        });
        self.history.push_back(event);
        while self.history.len() > history.max(1) {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.resource_version;
            }
        }
    }

    /// The objects of `namespace` (all, when `None`) from `start` on.
    fn range<'a>(
        &'a self,
        namespace: Option<&'a str>,
        start: Bound<Key>,
    ) -> impl Iterator<Item = (&'a Key, &'a Arc<Value>)> + 'a {
        let start = match (namespace, start) {
            // A token from another namespace's list: start at this one.
            (Some(ns), Bound::Excluded(k)) if k.0.as_str() < ns => {
                Bound::Included((ns.to_owned(), String::new()))
            }
            (Some(ns), Bound::Unbounded) => Bound::Included((ns.to_owned(), String::new())),
            (_, start) => start,
        };
        self.objects
            .range((start, Bound::Unbounded))
            .take_while(move |(k, _)| namespace.is_none_or(|ns| k.0 == ns))
    }
}

struct Watcher {
    tx: mpsc::Sender<Event>,
    filter: Filter,
}

struct Inner {
    resource_version: u64,
    /// By `(group, plural)`.
    buckets: HashMap<(&'static str, &'static str), Bucket>,
}

impl Inner {
    /// The IngressClass marked default
    /// (`ingressclass.kubernetes.io/is-default-class: "true"`); of several,
    /// the newest, then the first by name, as kube-apiserver chooses.
    fn default_ingress_class(&self) -> Option<String> {
        let classes = self.buckets.get(&("networking.k8s.io", "ingressclasses"))?;
        classes
            .objects
            .values()
            .filter(|c| {
                c.pointer("/metadata/annotations/ingressclass.kubernetes.io~1is-default-class")
                    .and_then(Value::as_str)
                    == Some("true")
            })
            .map(|c| {
                (
                    meta_str(c, "creationTimestamp").unwrap_or_default(),
                    meta_str(c, "name").unwrap_or_default(),
                )
            })
            // RFC 3339 times in UTC with a fixed format order as they read.
            .max_by(|a, b| a.0.cmp(b.0).then_with(|| b.1.cmp(a.1)))
            .map(|(_, name)| name.to_owned())
    }

    fn bucket(&self, resource: &Resource) -> Option<&Bucket> {
        self.buckets.get(&(resource.group, resource.plural))
    }

    fn bucket_mut(&mut self, resource: &Resource) -> &mut Bucket {
        self.buckets
            .entry((resource.group, resource.plural))
            .or_insert_with(Bucket::new)
    }

    fn namespace(&self, name: &str) -> Option<&Arc<Value>> {
        self.buckets
            .get(&("", "namespaces"))?
            .objects
            .get(&(String::new(), name.to_owned()))
    }
}

/// Store `object` (or, for `DELETED`, remove it) under the next version and
/// publish the event: the one way every write ends.
fn commit(
    resource_version: &mut u64,
    bucket: &mut Bucket,
    history: usize,
    key: Key,
    kind: EventType,
    mut object: Value,
    previous: Option<Arc<Value>>,
) -> Arc<Value> {
    *resource_version += 1;
    let rv = *resource_version;
    set_meta(&mut object, "resourceVersion", rv.to_string().into());
    let object = Arc::new(object);
    if kind == EventType::Deleted {
        if bucket.objects.remove(&key).is_some() {
            if let Some(n) = bucket.per_namespace.get_mut(&key.0) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    bucket.per_namespace.remove(&key.0);
                }
            }
        }
    } else {
        let namespace = key.0.clone();
        if bucket.objects.insert(key, object.clone()).is_none() {
            *bucket.per_namespace.entry(namespace).or_default() += 1;
        }
    }
    bucket.publish(
        Event {
            kind,
            object: object.clone(),
            previous,
            resource_version: rv,
        },
        history,
    );
    object
}

/// The store. Cheap to share (`Arc<Store>`); every call locks briefly.
pub struct Store {
    inner: Mutex<Inner>,
    admission: Box<dyn Admission>,
    history: usize,
}

impl Store {
    /// An empty store whose history keeps the last `history` events of each
    /// resource (at least one).
    pub fn new(admission: Box<dyn Admission>, history: usize) -> Store {
        Store {
            inner: Mutex::new(Inner {
                resource_version: 0,
                buckets: HashMap::new(),
            }),
            admission,
            history: history.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-made write
        // behind (every write ends in one `commit`), so the data is usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    pub fn get(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        let inner = self.lock();
        inner
            .bucket(resource)
            .and_then(|b| b.objects.get(&key(resource, namespace, name)))
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))
    }

    /// A page of the objects that `options` select, sorted by namespace and
    /// name. A `continue` token resumes after the last key of the page it
    /// came from, over the objects as they are now (this store keeps no old
    /// snapshots); the page answers with the token's resourceVersion, so a
    /// watch from it replays at worst a change the pages already show.
    ///
    /// A token older than the resource's history still pages on, under its
    /// own (now too old) version: kube-apiserver answers 410 there, but its
    /// window is etcd's five minutes of compaction, while this history is
    /// counted in events and a busy lab passes it within one `kubectl get`
    /// of many pages. A watch from that version is then 410 and the client
    /// lists again: what it would have done after kube's 410. A token from
    /// the future (another run of the store) is 410. `resourceVersion` on a
    /// list is not read: every list is of the current state.
    pub fn list(&self, resource: &Resource, options: &ListOptions) -> Result<List, ApiError> {
        let filter = Filter::parse(resource, options)?;
        let limit = options.limit.filter(|l| *l > 0);
        let token = match options.continue_token.as_deref() {
            Some(t) if !t.is_empty() => Some(Continue::decode(t)?),
            _ => None,
        };
        let inner = self.lock();
        let Some(bucket) = inner.bucket(resource) else {
            return Ok(List {
                items: Vec::new(),
                resource_version: token.map_or(inner.resource_version, |t| t.rv),
                continue_token: None,
                remaining_item_count: None,
            });
        };
        let list_rv = match &token {
            Some(t) if t.rv > inner.resource_version => {
                return Err(ApiError::gone(
                    "The provided continue parameter is from a version this server has not \
                     reached (it was restarted). You can start a new list without the \
                     continue parameter.",
                ))
            }
            Some(t) => t.rv,
            None => inner.resource_version,
        };
        let served_before = token.as_ref().map_or(0, |t| t.served);
        let start = match token {
            Some(t) => Bound::Excluded(t.key),
            None => Bound::Unbounded,
        };
        let namespace = filter.namespace.as_deref();
        let mut items = Vec::new();
        let mut last: Option<&Key> = None;
        let mut more = false;
        for (k, object) in bucket.range(namespace, start) {
            if !filter.matches_selectors(object) {
                continue;
            }
            if limit.is_some_and(|l| items.len() == l) {
                more = true;
                break;
            }
            items.push(object.clone());
            last = Some(k);
        }
        let (continue_token, remaining_item_count) = match (more, last) {
            (true, Some(last)) => {
                let served = served_before.saturating_add(items.len() as u64);
                let token = Continue {
                    rv: list_rv,
                    key: last.clone(),
                    served,
                }
                .encode();
                // As kube-apiserver: only without selectors, and an estimate
                // (the objects in scope now, less those the pages so far
                // served), exact while nothing is written between pages.
                let remaining = filter.selectors_empty().then(|| {
                    let in_scope = match namespace {
                        Some(ns) => bucket.per_namespace.get(ns).copied().unwrap_or(0),
                        None => bucket.objects.len(),
                    };
                    (in_scope as u64).saturating_sub(served)
                });
                (Some(token), remaining)
            }
            _ => (None, None),
        };
        Ok(List {
            items,
            resource_version: list_rv,
            continue_token,
            remaining_item_count,
        })
    }

    /// POST: `namespace` from the URL (the object's own must agree or be empty).
    pub fn create(
        &self,
        resource: &Resource,
        namespace: &str,
        object: Value,
        ctx: &mut WriteContext<'_>,
    ) -> Result<Arc<Value>, ApiError> {
        let mut object = object;
        check_shape(&object)?;
        fill_type(resource, &mut object)?;
        let namespace = settle_namespace(resource, namespace, &object)?;
        if meta_string(&object, "resourceVersion")?.is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let given = meta_string(&object, "name")?.unwrap_or_default();
        let generate = meta_string(&object, "generateName")?.unwrap_or_default();
        if given.is_empty() && generate.is_empty() {
            return Err(ApiError::invalid(
                resource,
                "",
                vec![Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: name or generateName is required".into(),
                    field: "metadata.name".into(),
                }],
            ));
        }
        check_labels(resource, &given, &object)?;
        let uid = uuid(ctx);
        let created = rfc3339(ctx.now_unix);
        {
            let meta = meta_mut(&mut object);
            meta.remove("deletionTimestamp");
            meta.remove("deletionGracePeriodSeconds");
            meta.insert("uid".into(), uid.clone().into());
            meta.insert("creationTimestamp".into(), created.clone().into());
        }
        if object.get("spec").is_some() {
            set_meta(&mut object, "generation", 1.into());
        } else {
            meta_mut(&mut object).remove("generation");
        }
        if is_namespaces(resource) && object.pointer("/status/phase").is_none() {
            // What the namespace strategy of kube-apiserver sets.
            object["status"] = json!({"phase": "Active"});
        }

        let mut name = if given.is_empty() {
            generated_name(&generate, ctx)
        } else {
            given.clone()
        };
        check_name(resource, &name)?;
        set_identity(&mut object, resource, &namespace, &name);
        if is_ingresses(resource) {
            let class = self.lock().default_ingress_class();
            set_default_ingress_class(&mut object, class);
        }
        // Admission runs without the store's lock: it may be slow, and an
        // admission that reads the store (address allocation) must not
        // deadlock. The checks against the stored objects follow, locked.
        self.admission.admit(resource, &mut object, None)?;
        // Admission may rewrite the object; what the store owns stays.
        set_identity(&mut object, resource, &namespace, &name);
        {
            let meta = meta_mut(&mut object);
            meta.insert("uid".into(), uid.into());
            meta.insert("creationTimestamp".into(), created.into());
        }

        let mut inner = self.lock();
        if resource.namespaced {
            match inner.namespace(&namespace) {
                None => {
                    let namespaces = crate::resources::Resource::by_plural("", "v1", "namespaces");
                    return Err(match namespaces {
                        Some(ns) => ApiError::not_found(ns, &namespace.escape_debug().to_string()),
                        None => ApiError::bad_request(format!(
                            "namespaces \"{}\" not found",
                            namespace.escape_debug()
                        )),
                    });
                }
                Some(ns)
                    if ns.pointer("/status/phase").and_then(Value::as_str)
                        == Some("Terminating") =>
                {
                    return Err(ApiError::forbidden(format!(
                        "unable to create new content in namespace {namespace} because it is being terminated"
                    )));
                }
                Some(_) => {}
            }
        }
        // A generated name that is taken is drawn again (same length, same
        // alphabet: what admission saw stays valid), as the chance of that
        // grows with the objects of one prefix.
        for attempt in 0.. {
            let taken = inner
                .bucket(resource)
                .is_some_and(|b| b.objects.contains_key(&key(resource, &namespace, &name)));
            if !taken {
                break;
            }
            if !given.is_empty() || attempt == 8 {
                return Err(ApiError::already_exists(resource, &name));
            }
            name = generated_name(&generate, ctx);
            set_meta(&mut object, "name", name.clone().into());
        }
        let stored = Stored {
            objects: inner.bucket(resource).map(|b| &b.objects),
        };
        self.admission
            .allocate(resource, &mut object, None, &stored)?;
        Ok(inner.commit(
            resource,
            self.history,
            key(resource, &namespace, &name),
            EventType::Added,
            object,
            None,
        ))
    }

    /// PUT of the object or of a subresource (`status`: only `.status` changes;
    /// main resource: `.status` is kept). A stale `metadata.resourceVersion` is 409.
    pub fn update(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        object: Value,
        subresource: Option<Subresource>,
        _ctx: &mut WriteContext<'_>,
    ) -> Result<Arc<Value>, ApiError> {
        match subresource {
            None => {}
            Some(Subresource::Status) if resource.has(Subresource::Status) => {}
            Some(other) => {
                return Err(ApiError::method_not_allowed(format!(
                    "the store does not update {}/{}",
                    resource.plural,
                    other.name()
                )))
            }
        }
        let mut object = object;
        check_shape(&object)?;
        fill_type(resource, &mut object)?;
        let namespace = settle_namespace(resource, namespace, &object)?;
        if let Some(given) = meta_string(&object, "name")?.filter(|n| !n.is_empty()) {
            if given != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({})",
                    given.escape_debug(),
                    name.escape_debug()
                )));
            }
        }
        let precondition = meta_string(&object, "resourceVersion")?.filter(|v| !v.is_empty());
        check_labels(resource, name, &object)?;

        let k = key(resource, &namespace, name);
        // Admission runs unlocked (see `create`): the stored object it was
        // run against must still be the stored one when the write is made,
        // else (an unconditional update) it is done again.
        for _ in 0..MODIFY_ATTEMPTS {
            let old = self.get(resource, &namespace, name)?;
            let old_rv = meta_str(&old, "resourceVersion")
                .unwrap_or_default()
                .to_owned();
            if precondition.as_ref().is_some_and(|p| *p != old_rv) {
                return Err(ApiError::conflict(resource, name));
            }
            let new = self.updated(resource, &namespace, name, &object, subresource, &old)?;
            let mut inner = self.lock();
            let current = inner.bucket(resource).and_then(|b| b.objects.get(&k));
            match current {
                None => return Err(ApiError::not_found(resource, name)),
                Some(c) if !Arc::ptr_eq(c, &old) => {
                    if precondition.is_some() {
                        return Err(ApiError::conflict(resource, name));
                    }
                    continue;
                }
                Some(_) => {}
            }
            let Some(mut new) = new else {
                // Nothing changed: no new version, no event (`kubectl
                // apply` reports "unchanged" from exactly this).
                return Ok(old);
            };
            let finished = meta_str(&new, "deletionTimestamp").is_some()
                && !has_finalizers(&new)
                && (!is_pods(resource) || grace_of(&new).is_none_or(|g| g == 0));
            if finished {
                // The last finalizer is gone from an object being deleted.
                return Ok(inner.commit(resource, self.history, k, EventType::Deleted, new, None));
            }
            let stored = Stored {
                objects: inner.bucket(resource).map(|b| &b.objects),
            };
            self.admission
                .allocate(resource, &mut new, Some(&old), &stored)?;
            return Ok(inner.commit(
                resource,
                self.history,
                k,
                EventType::Modified,
                new,
                Some(old),
            ));
        }
        Err(ApiError::conflict(resource, name))
    }

    /// The object an update of `old` with `object` stores (admitted), or
    /// `None` when it would be `old` itself.
    fn updated(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        object: &Value,
        subresource: Option<Subresource>,
        old: &Arc<Value>,
    ) -> Result<Option<Value>, ApiError> {
        // A uid names one incarnation of the object: an update that gives
        // another one is about an object that is gone (kube-apiserver: the
        // field is immutable). None given: the stored one stays.
        if let Some(uid) = meta_string(object, "uid")?.filter(|u| !u.is_empty()) {
            let stored = meta_str(old, "uid").unwrap_or_default();
            if uid != stored {
                return Err(ApiError::invalid(
                    resource,
                    name,
                    vec![Cause {
                        reason: "FieldValueInvalid".into(),
                        message: format!(
                            "Invalid value: \"{}\": field is immutable",
                            uid.escape_debug()
                        ),
                        field: "metadata.uid".into(),
                    }],
                ));
            }
        }
        let old_rv = meta_str(old, "resourceVersion")
            .unwrap_or_default()
            .to_owned();
        let mut new = match subresource {
            Some(_) => {
                let mut new = (**old).clone();
                replace_field(&mut new, "status", object.get("status"));
                new
            }
            None => {
                let mut new = object.clone();
                if resource.has(Subresource::Status) {
                    replace_field(&mut new, "status", old.get("status"));
                }
                new
            }
        };
        keep_stored_metadata(&mut new, old);
        set_identity(&mut new, resource, namespace, name);
        self.admission.admit(resource, &mut new, Some(old))?;
        set_identity(&mut new, resource, namespace, name);
        keep_stored_metadata(&mut new, old);
        if let Some(generation) = old.pointer("/metadata/generation").and_then(Value::as_i64) {
            let bumped = if new.get("spec") != old.get("spec") {
                generation.saturating_add(1)
            } else {
                generation
            };
            set_meta(&mut new, "generation", bumped.into());
        }
        set_meta(&mut new, "resourceVersion", old_rv.into());
        Ok((new != **old).then_some(new))
    }

    /// Read, change with `change`, write back — retried on a concurrent
    /// write, as kube-apiserver's patch does. A resourceVersion that
    /// `change` sets itself (a patch carrying one) is a precondition: its
    /// conflict is answered, not retried.
    pub fn modify(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        subresource: Option<Subresource>,
        change: &mut dyn FnMut(&Value) -> Result<Value, ApiError>,
        ctx: &mut WriteContext<'_>,
    ) -> Result<Arc<Value>, ApiError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let old = self.get(resource, namespace, name)?;
            let old_rv = meta_str(&old, "resourceVersion")
                .unwrap_or_default()
                .to_owned();
            let mut new = change(&old)?;
            check_shape(&new)?;
            let pinned = match meta_str(&new, "resourceVersion") {
                Some(rv) if !rv.is_empty() && rv != old_rv => true,
                _ => {
                    set_meta(&mut new, "resourceVersion", old_rv.into());
                    false
                }
            };
            match self.update(resource, namespace, name, new, subresource, ctx) {
                Err(e) if e.reason == "Conflict" && !pinned && attempt < MODIFY_ATTEMPTS => {}
                result => return result,
            }
        }
    }

    /// DELETE: graceful for pods (sets `deletionTimestamp`, the object stays
    /// until deleted again with grace 0), immediate otherwise. An object
    /// with finalizers only gets its `deletionTimestamp`; the update that
    /// clears the last finalizer removes it. A namespace is marked
    /// `Terminating`, everything in it is deleted at once (their own
    /// finalizers and grace periods are not waited for: the lab has no
    /// controllers that would finish them), then it goes.
    pub fn delete(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
        ctx: &mut WriteContext<'_>,
    ) -> Result<Arc<Value>, ApiError> {
        let namespace = if resource.namespaced { namespace } else { "" };
        let mut inner = self.lock();
        let k = key(resource, namespace, name);
        let old = inner
            .bucket(resource)
            .and_then(|b| b.objects.get(&k))
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        if let Some(uid) = options.precondition_uid.as_deref() {
            let stored = meta_str(&old, "uid").unwrap_or_default();
            if uid != stored {
                return Err(precondition_failed(resource, name, "UID", uid, stored));
            }
        }
        if let Some(rv) = options.precondition_resource_version.as_deref() {
            let stored = meta_str(&old, "resourceVersion").unwrap_or_default();
            if rv != stored {
                return Err(precondition_failed(
                    resource,
                    name,
                    "ResourceVersion",
                    rv,
                    stored,
                ));
            }
        }
        let history = self.history;
        let inner = &mut *inner;

        if is_namespaces(resource) {
            if UNDELETABLE_NAMESPACES.contains(&name) {
                return Err(ApiError::forbidden(format!(
                    "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                )));
            }
            let mut marked = (*old).clone();
            if meta_str(&marked, "deletionTimestamp").is_none() {
                set_meta(
                    &mut marked,
                    "deletionTimestamp",
                    rfc3339(ctx.now_unix).into(),
                );
            }
            if !marked["status"].is_object() {
                marked["status"] = json!({});
            }
            marked["status"]["phase"] = "Terminating".into();
            let mut current = old.clone();
            if marked != *old {
                current = inner.commit(
                    resource,
                    history,
                    k.clone(),
                    EventType::Modified,
                    marked,
                    Some(old),
                );
            }
            // Everything in it, resource by resource, in a fixed order.
            let mut plurals: Vec<(&'static str, &'static str)> =
                inner.buckets.keys().copied().collect();
            plurals.sort_unstable();
            for bk in plurals {
                let Some(bucket) = inner.buckets.get_mut(&bk) else {
                    continue;
                };
                let doomed: Vec<(Key, Arc<Value>)> = bucket
                    .range(Some(name), Bound::Unbounded)
                    .filter(|(k, _)| !k.0.is_empty())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (dk, object) in doomed {
                    commit(
                        &mut inner.resource_version,
                        bucket,
                        history,
                        dk,
                        EventType::Deleted,
                        (*object).clone(),
                        None,
                    );
                }
            }
            if has_finalizers(&current) {
                return Ok(current);
            }
            return Ok(inner.commit(
                resource,
                history,
                k,
                EventType::Deleted,
                (*current).clone(),
                None,
            ));
        }
        if is_pods(resource) {
            let grace = pod_grace(&old, options);
            if grace > 0 {
                let existing = meta_str(&old, "deletionTimestamp").is_some();
                if existing && grace_of(&old).is_some_and(|g| g <= grace) {
                    // Already on its way out at least this fast.
                    return Ok(old);
                }
                let mut marked = (*old).clone();
                set_meta(
                    &mut marked,
                    "deletionTimestamp",
                    rfc3339(ctx.now_unix.saturating_add(grace)).into(),
                );
                set_meta(&mut marked, "deletionGracePeriodSeconds", grace.into());
                return Ok(inner.commit(
                    resource,
                    history,
                    k,
                    EventType::Modified,
                    marked,
                    Some(old),
                ));
            }
        }
        if has_finalizers(&old) {
            let mut marked = (*old).clone();
            if meta_str(&marked, "deletionTimestamp").is_none() {
                set_meta(
                    &mut marked,
                    "deletionTimestamp",
                    rfc3339(ctx.now_unix).into(),
                );
            }
            set_meta(&mut marked, "deletionGracePeriodSeconds", 0.into());
            if marked == *old {
                return Ok(old);
            }
            return Ok(inner.commit(resource, history, k, EventType::Modified, marked, Some(old)));
        }
        Ok(inner.commit(
            resource,
            history,
            k,
            EventType::Deleted,
            (*old).clone(),
            None,
        ))
    }

    /// A watch of the objects `options` select. Without a resourceVersion
    /// (or with `0`) every current object comes first as `ADDED`; with
    /// `sendInitialEvents` those are followed by the bookmark that ends
    /// them; from a version `R`, the events after `R` the history holds
    /// (410 `Expired` when it no longer reaches back to `R`). Then live
    /// events, registered under the same lock: none is lost or repeated.
    pub fn watch(&self, resource: &Resource, options: &ListOptions) -> Result<Watch, ApiError> {
        let filter = Filter::parse(resource, options)?;
        let from = match options.resource_version.as_deref() {
            None | Some("") | Some("0") => None,
            Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {}", rv.escape_debug()))
            })?),
        };
        let (tx, live) = mpsc::channel(WATCH_QUEUE);
        let mut inner = self.lock();
        let current = inner.resource_version;
        let bucket = inner.bucket_mut(resource);
        let mut backlog = Vec::new();
        match from {
            Some(r) if !options.send_initial_events => {
                if r < bucket.compacted {
                    // As kube-apiserver words it: the version asked for,
                    // then the oldest one a watch may still start from.
                    return Err(ApiError::gone(format!(
                        "too old resource version: {r} ({})",
                        bucket.compacted
                    )));
                }
                let first = bucket.history.partition_point(|e| e.resource_version <= r);
                backlog.extend(bucket.history.range(first..).filter_map(|e| filter.view(e)));
            }
            _ => {
                for (_, object) in bucket.range(filter.namespace.as_deref(), Bound::Unbounded) {
                    if filter.matches_selectors(object) {
                        backlog.push(Event {
                            kind: EventType::Added,
                            object: object.clone(),
                            previous: None,
                            resource_version: rv_of(object),
                        });
                    }
                }
                if options.send_initial_events {
                    backlog.push(bookmark_event(resource, current, true));
                }
            }
        }
        // Watchers that went away while the resource was quiet.
        bucket.watchers.retain(|w| !w.tx.is_closed());
        bucket.watchers.push(Watcher { tx, filter });
        Ok(Watch { backlog, live })
    }

    /// A `BOOKMARK` at the current resourceVersion: what the HTTP layer
    /// sends now and then to watchers that allow bookmarks, so that they
    /// can resume from a recent version.
    pub fn bookmark(&self, resource: &Resource) -> Event {
        bookmark_event(resource, self.resource_version(), false)
    }

    /// A `BOOKMARK` for `watch` at the current resourceVersion, or `None`
    /// while it still has live events queued. Decided under the store's
    /// lock, under which events are queued: with nothing queued, every
    /// event up to the current version has been taken by the watcher, so
    /// a client that resumes from the bookmark misses none. (A bookmark
    /// read with [`Store::bookmark`] while an event is being queued can
    /// overtake it.)
    pub fn bookmark_for(&self, resource: &Resource, watch: &Watch) -> Option<Event> {
        let inner = self.lock();
        watch
            .live
            .is_empty()
            .then(|| bookmark_event(resource, inner.resource_version, false))
    }

    /// Forget every event so far, as etcd's compaction does, and end every
    /// open watch with an `ERROR` event carrying a 410 `Expired` Status, as
    /// kube-apiserver ends the watches it can no longer serve: each client
    /// lists again (a reflector's relist). A watch from a version before
    /// the current one is 410 from now on. The objects stay. Returns the
    /// version compacted to. (How a test forces what a long API outage or
    /// a slow client meets in a real cluster.)
    pub fn compact(&self) -> u64 {
        let mut inner = self.lock();
        let current = inner.resource_version;
        for bucket in inner.buckets.values_mut() {
            bucket.history.clear();
            bucket.compacted = current;
            let message =
                format!("too old resource version: the history was compacted at {current}");
            let status = Arc::new(ApiError::gone(message).status());
            for watcher in bucket.watchers.drain(..) {
                // A watcher whose queue is full is closed all the same:
                // dropping its sender ends the stream, and it re-watches
                // from a version that is now too old.
                let _ = watcher.tx.try_send(Event {
                    kind: EventType::Error,
                    object: status.clone(),
                    previous: None,
                    resource_version: current,
                });
            }
        }
        current
    }

    /// How many watchers of `resource` are registered (closed ones are
    /// pruned on the next event).
    pub fn watchers(&self, resource: &Resource) -> usize {
        self.lock().bucket(resource).map_or(0, |b| b.watchers.len())
    }
}

impl Inner {
    /// [`commit`] in the bucket of `resource`.
    fn commit(
        &mut self,
        resource: &Resource,
        history: usize,
        key: Key,
        kind: EventType,
        object: Value,
        previous: Option<Arc<Value>>,
    ) -> Arc<Value> {
        let bucket = self
            .buckets
            .entry((resource.group, resource.plural))
            .or_insert_with(Bucket::new);
        commit(
            &mut self.resource_version,
            bucket,
            history,
            key,
            kind,
            object,
            previous,
        )
    }
}

fn bookmark_event(resource: &Resource, rv: u64, initial_events_end: bool) -> Event {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    Event {
        kind: EventType::Bookmark,
        object: Arc::new(json!({
            "kind": resource.kind,
            "apiVersion": resource.api_version(),
            "metadata": metadata,
        })),
        previous: None,
        resource_version: rv,
    }
}

fn precondition_failed(
    resource: &Resource,
    name: &str,
    what: &str,
    wanted: &str,
    stored: &str,
) -> ApiError {
    let mut e = ApiError::conflict(resource, name);
    e.message = format!(
        "Precondition failed: {what} in precondition: {}, {what} in object meta: {stored}",
        wanted.escape_debug()
    );
    e
}

fn key(resource: &Resource, namespace: &str, name: &str) -> Key {
    let namespace = if resource.namespaced { namespace } else { "" };
    (namespace.to_owned(), name.to_owned())
}

fn is_pods(resource: &Resource) -> bool {
    resource.group.is_empty() && resource.plural == "pods"
}

fn is_namespaces(resource: &Resource) -> bool {
    resource.group.is_empty() && resource.plural == "namespaces"
}

fn is_ingresses(resource: &Resource) -> bool {
    resource.group == "networking.k8s.io" && resource.plural == "ingresses"
}

/// kube-apiserver's DefaultIngressClass admission, on create: an Ingress
/// that names no class (neither `spec.ingressClassName` nor the older
/// `kubernetes.io/ingress.class` annotation) gets the default one's name.
fn set_default_ingress_class(ingress: &mut Value, class: Option<String>) {
    let Some(class) = class else {
        return;
    };
    if ingress
        .pointer("/spec/ingressClassName")
        .is_some_and(|c| !c.is_null())
        || ingress
            .pointer("/metadata/annotations/kubernetes.io~1ingress.class")
            .is_some()
    {
        return;
    }
    if let Some(spec) = ingress.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("ingressClassName".into(), class.into());
    }
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// A string field of `metadata`: absent, or 400 when it is not a string.
fn meta_string(object: &Value, field: &str) -> Result<Option<String>, ApiError> {
    match object.get("metadata").and_then(|m| m.get(field)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!(
            "metadata.{field} must be a string"
        ))),
    }
}

/// The `metadata` map of an object (made when absent). Callers have
/// checked the shape with [`check_shape`]; anything else is replaced.
fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    let meta = object
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
    let meta = match meta {
        Some(m) => m,
        None => unreachable_object(),
    };
    if !meta.is_object() {
        *meta = json!({});
    }
    match meta.as_object_mut() {
        Some(m) => m,
        None => unreachable_object(),
    }
}

/// Both `meta_mut` branches above made the value an object just before.
fn unreachable_object() -> ! {
    unreachable!("made an object just before")
}

fn set_meta(object: &mut Value, field: &str, value: Value) {
    meta_mut(object).insert(field.to_owned(), value);
}

fn rv_of(object: &Value) -> u64 {
    meta_str(object, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn has_finalizers(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

fn grace_of(object: &Value) -> Option<i64> {
    object
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
}

/// The grace period of a pod's deletion, as the pod strategy of
/// kube-apiserver settles it: the request's, else the pod's own, else 30;
/// a pod that never ran on a node, or has finished, goes at once.
fn pod_grace(pod: &Value, options: &DeleteOptions) -> i64 {
    let unscheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if unscheduled || matches!(phase, Some("Succeeded" | "Failed")) {
        return 0;
    }
    let grace = options.grace_period_seconds.unwrap_or_else(|| {
        pod.pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30)
    });
    // kube-apiserver turns a negative period into 1 second; a year is the
    // most any grace period here is given, so the timestamp stays a date.
    grace
        .clamp(0, 365 * 24 * 3600)
        .max(if grace < 0 { 1 } else { 0 })
}

/// `field` of `object` set to `value`, or removed when there is none.
fn replace_field(object: &mut Value, field: &str, value: Option<&Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(v) => {
                map.insert(field.to_owned(), v.clone());
            }
            None => {
                map.remove(field);
            }
        }
    }
}

/// What an update cannot change: who the object is, when it was made, its
/// deletion, and its generation (the store's to bump).
fn keep_stored_metadata(new: &mut Value, old: &Value) {
    let meta = meta_mut(new);
    for field in [
        "uid",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old.get("metadata").and_then(|m| m.get(field)) {
            Some(v) => {
                meta.insert(field.to_owned(), v.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
}

/// `apiVersion`, `kind`, name and namespace as the request settled them.
fn set_identity(object: &mut Value, resource: &Resource, namespace: &str, name: &str) {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), resource.api_version().into());
        map.insert("kind".into(), resource.kind.into());
    }
    let meta = meta_mut(object);
    meta.insert("name".into(), name.into());
    // An empty generateName is no generateName.
    if meta
        .get("generateName")
        .is_some_and(|g| g.as_str().is_none_or(str::is_empty))
    {
        meta.remove("generateName");
    }
    if resource.namespaced {
        meta.insert("namespace".into(), namespace.into());
    } else {
        meta.remove("namespace");
    }
}

/// An object with (if any) an object as `metadata`.
fn check_shape(object: &Value) -> Result<(), ApiError> {
    let Some(map) = object.as_object() else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    match map.get("metadata") {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(ApiError::bad_request("metadata must be an object")),
    }
}

/// `apiVersion` and `kind` of the data must be the resource's (or absent).
fn fill_type(resource: &Resource, object: &mut Value) -> Result<(), ApiError> {
    let api_version = resource.api_version();
    match object.get("apiVersion") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if v.is_empty() || *v == api_version => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({api_version})",
                shown(other)
            )))
        }
    }
    match object.get("kind") {
        None | Some(Value::Null) => {}
        Some(Value::String(k)) if k.is_empty() || k == resource.kind => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({}) does not match the expected kind ({})",
                shown(other),
                resource.kind
            )))
        }
    }
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), api_version.into());
        map.insert("kind".into(), resource.kind.into());
    }
    Ok(())
}

/// A value from a request, for a message: strings escaped, at most 100 chars.
fn shown(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.escape_debug().to_string(),
        other => other.to_string(),
    };
    text.chars().take(100).collect()
}

fn settle_namespace(
    resource: &Resource,
    namespace: &str,
    object: &Value,
) -> Result<String, ApiError> {
    let own = meta_string(object, "namespace")?.unwrap_or_default();
    if !resource.namespaced {
        // kube-apiserver clears a namespace given to a cluster-scoped object.
        return Ok(String::new());
    }
    if namespace.is_empty() {
        return Err(ApiError::bad_request(
            "a namespace is required for a namespaced resource",
        ));
    }
    if !own.is_empty() && own != namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(namespace.to_owned())
}

/// `metadata.name` by the rule kube-apiserver applies to the resource.
fn check_name(resource: &Resource, name: &str) -> Result<(), ApiError> {
    let why: Option<&str> = if resource.group == "rbac.authorization.k8s.io" {
        // Path segment names: RBAC names carry `:` (`system:node`).
        if name == "." || name == ".." {
            Some("may not be '.' or '..'")
        } else if name.contains('/') || name.contains('%') {
            Some("may not contain '/' or '%'")
        } else {
            None
        }
    } else if is_namespaces(resource) {
        strait_model::validate_dns_label(name).err()
    } else if resource.group.is_empty() && resource.plural == "services" {
        strait_model::validate_dns_label(name).err().or_else(|| {
            (!name.starts_with(|c: char| c.is_ascii_lowercase()))
                .then_some("a DNS-1035 label must start with a lower case letter")
        })
    } else {
        strait_model::validate_dns_subdomain(name).err()
    };
    match why {
        None => Ok(()),
        // The refused name is shown escaped: the message reaches terminals.
        Some(why) => Err(ApiError::invalid(
            resource,
            &name.escape_debug().to_string(),
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: \"{}\": {why}", name.escape_debug()),
                field: "metadata.name".into(),
            }],
        )),
    }
}

/// Labels are what selectors match: strings, spelled as selector keys and
/// values must be; annotations are strings.
fn check_labels(resource: &Resource, name: &str, object: &Value) -> Result<(), ApiError> {
    // Not yet checked as a name: shown escaped.
    let name = name.escape_debug().to_string();
    let invalid = |field: &str, message: String| {
        ApiError::invalid(
            resource,
            &name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message,
                field: field.into(),
            }],
        )
    };
    for field in ["labels", "annotations"] {
        match object.get("metadata").and_then(|m| m.get(field)) {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                if let Some((k, _)) = map.iter().find(|(_, v)| !v.is_string()) {
                    return Err(invalid(
                        &format!("metadata.{field}"),
                        format!("the value of \"{}\" must be a string", k.escape_debug()),
                    ));
                }
                if field == "labels" {
                    let labels: BTreeMap<String, String> = map
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect();
                    if let Err(e) = strait_model::Selector::from_map(&labels) {
                        return Err(invalid("metadata.labels", e.to_string()));
                    }
                }
            }
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "metadata.{field} must be an object"
                )))
            }
        }
    }
    Ok(())
}

fn generated_name(prefix: &str, ctx: &mut WriteContext<'_>) -> String {
    let mut cut = prefix.len().min(MAX_GENERATE_PREFIX);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    let random = (ctx.random)();
    let mut name = prefix[..cut].to_owned();
    for b in &random[..GENERATED_SUFFIX] {
        name.push(char::from(
            NAME_ALPHABET[usize::from(*b) % NAME_ALPHABET.len()],
        ));
    }
    name
}

/// A version 4 UUID from the context's random bytes.
fn uuid(ctx: &mut WriteContext<'_>) -> String {
    let mut b = (ctx.random)();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `2026-11-30T21:35:48Z` for Unix seconds (UTC), as kube writes
/// timestamps; instants outside jiff's range (±9999 years) are clamped.
pub fn rfc3339(unix: i64) -> String {
    use strait_model::k8s_openapi::jiff::Timestamp;
    let t = Timestamp::from_second(unix).unwrap_or(if unix < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A `continue` token: the list's version and the last key served.
/// Opaque to clients (base64 of JSON), checked when read back.
struct Continue {
    rv: u64,
    key: Key,
    /// Items the pages before served (for `remainingItemCount`).
    served: u64,
}

impl Continue {
    fn encode(&self) -> String {
        let text = json!({"rv": self.rv, "ns": self.key.0, "name": self.key.1, "n": self.served})
            .to_string();
        URL_SAFE_NO_PAD.encode(text)
    }

    fn decode(token: &str) -> Result<Continue, ApiError> {
        let bad = || ApiError::bad_request("continue key is not valid");
        if token.len() > 4096 {
            return Err(bad());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let rv = value.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
        let ns = value.get("ns").and_then(Value::as_str).ok_or_else(bad)?;
        let name = value.get("name").and_then(Value::as_str).ok_or_else(bad)?;
        let served = value.get("n").and_then(Value::as_u64).ok_or_else(bad)?;
        Ok(Continue {
            rv,
            key: (ns.to_owned(), name.to_owned()),
            served,
        })
    }
}

/// What a list or watch selects: a namespace, label requirements and
/// field requirements, all of which must hold.
#[derive(Clone, Debug, Default)]
struct Filter {
    namespace: Option<String>,
    labels: Vec<Requirement>,
    fields: Vec<FieldRequirement>,
}

#[derive(Clone, Debug)]
struct FieldRequirement {
    /// Where the field is in the object.
    path: &'static [&'static str],
    /// What an absent field reads as (`false` for booleans).
    absent: &'static str,
    equal: bool,
    value: String,
}

/// The field selectors kube-apiserver supports, by resource: every
/// resource has `metadata.name` and `metadata.namespace`.
fn field_path(resource: &Resource, label: &str) -> Option<(&'static [&'static str], &'static str)> {
    let found: (&'static [&'static str], &'static str) =
        match (resource.group, resource.plural, label) {
            (_, _, "metadata.name") => (&["metadata", "name"], ""),
            (_, _, "metadata.namespace") => (&["metadata", "namespace"], ""),
            ("", "pods", "spec.nodeName") => (&["spec", "nodeName"], ""),
            ("", "pods", "spec.restartPolicy") => (&["spec", "restartPolicy"], ""),
            ("", "pods", "spec.schedulerName") => (&["spec", "schedulerName"], ""),
            ("", "pods", "spec.serviceAccountName") => (&["spec", "serviceAccountName"], ""),
            ("", "pods", "spec.hostNetwork") => (&["spec", "hostNetwork"], "false"),
            ("", "pods", "status.phase") => (&["status", "phase"], ""),
            ("", "pods", "status.podIP") => (&["status", "podIP"], ""),
            ("", "pods", "status.nominatedNodeName") => (&["status", "nominatedNodeName"], ""),
            ("", "nodes", "spec.unschedulable") => (&["spec", "unschedulable"], "false"),
            ("", "namespaces", "status.phase") => (&["status", "phase"], ""),
            ("", "secrets", "type") => (&["type"], ""),
            // What `kubectl describe` asks the events of an object by.
            ("", "events", "involvedObject.kind") => (&["involvedObject", "kind"], ""),
            ("", "events", "involvedObject.namespace") => (&["involvedObject", "namespace"], ""),
            ("", "events", "involvedObject.name") => (&["involvedObject", "name"], ""),
            ("", "events", "involvedObject.uid") => (&["involvedObject", "uid"], ""),
            ("", "events", "involvedObject.apiVersion") => (&["involvedObject", "apiVersion"], ""),
            ("", "events", "involvedObject.resourceVersion") => {
                (&["involvedObject", "resourceVersion"], "")
            }
            ("", "events", "involvedObject.fieldPath") => (&["involvedObject", "fieldPath"], ""),
            ("", "events", "reason") => (&["reason"], ""),
            ("", "events", "reportingComponent") => (&["reportingComponent"], ""),
            ("", "events", "source") => (&["source", "component"], ""),
            ("", "events", "type") => (&["type"], ""),
            _ => return None,
        };
    Some(found)
}

impl Filter {
    fn parse(resource: &Resource, options: &ListOptions) -> Result<Filter, ApiError> {
        let namespace = options
            .namespace
            .clone()
            .filter(|ns| resource.namespaced && !ns.is_empty());
        let labels = match options.label_selector.as_deref() {
            Some(s) if !s.trim().is_empty() => parse_label_selector(s)?,
            _ => Vec::new(),
        };
        let mut fields = Vec::new();
        if let Some(s) = options.field_selector.as_deref() {
            for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                let (label, equal, value) = if let Some((l, v)) = term.split_once("!=") {
                    (l, false, v)
                } else if let Some((l, v)) = term.split_once("==") {
                    (l, true, v)
                } else if let Some((l, v)) = term.split_once('=') {
                    (l, true, v)
                } else {
                    return Err(ApiError::bad_request(format!(
                        "invalid selector: '{}'; can't understand '{}'",
                        s.escape_debug(),
                        term.escape_debug()
                    )));
                };
                let label = label.trim();
                let Some((path, absent)) = field_path(resource, label) else {
                    return Err(ApiError::bad_request(format!(
                        "field label not supported: {}",
                        label.escape_debug()
                    )));
                };
                fields.push(FieldRequirement {
                    path,
                    absent,
                    equal,
                    value: value.trim().to_owned(),
                });
            }
        }
        Ok(Filter {
            namespace,
            labels,
            fields,
        })
    }

    fn selectors_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// Labels and fields (the namespace is the caller's range).
    fn matches_selectors(&self, object: &Value) -> bool {
        if self.selectors_empty() {
            return true;
        }
        let labels = object
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        self.labels.iter().all(|r| label_matches(r, labels))
            && self.fields.iter().all(|f| {
                let mut at = Some(object);
                for step in f.path {
                    at = at.and_then(|v| v.get(*step));
                }
                let matched = match at {
                    None | Some(Value::Null) => f.value == f.absent,
                    Some(Value::String(s)) => *s == f.value,
                    Some(Value::Bool(b)) => f.value == if *b { "true" } else { "false" },
                    Some(Value::Number(n)) => n.to_string() == f.value,
                    Some(_) => false,
                };
                matched == f.equal
            })
    }

    fn matches(&self, object: &Value) -> bool {
        let namespace_ok = self.namespace.as_deref().is_none_or(|ns| {
            object
                .get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                == Some(ns)
        });
        namespace_ok && self.matches_selectors(object)
    }

    /// `event` as this watcher sees it: nothing when it concerns objects
    /// outside the selection; `ADDED` / `DELETED` for an object that starts
    /// or stops matching (as kube-apiserver's watch cache sends them).
    fn view(&self, event: &Event) -> Option<Event> {
        if event.kind == EventType::Bookmark {
            return Some(event.clone());
        }
        if self.namespace.is_none() && self.selectors_empty() {
            return Some(event.clone());
        }
        let now = self.matches(&event.object);
        if event.kind != EventType::Modified {
            return now.then(|| event.clone());
        }
        let before = event.previous.as_deref().is_none_or(|p| self.matches(p));
        match (before, now) {
            (true, true) => Some(event.clone()),
            (false, true) => Some(Event {
                kind: EventType::Added,
                ..event.clone()
            }),
            (true, false) => {
                // The object as this watcher last saw it, at the version
                // of the change that took it out of the selection.
                let mut last = event
                    .previous
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(|| (*event.object).clone());
                set_meta(
                    &mut last,
                    "resourceVersion",
                    event.resource_version.to_string().into(),
                );
                Some(Event {
                    kind: EventType::Deleted,
                    object: Arc::new(last),
                    previous: event.previous.clone(),
                    resource_version: event.resource_version,
                })
            }
            (false, false) => None,
        }
    }
}

fn label_matches(requirement: &Requirement, labels: Option<&Map<String, Value>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    match requirement {
        Requirement::In(k, values) => get(k).is_some_and(|v| values.contains(v)),
        Requirement::NotIn(k, values) => get(k).is_none_or(|v| !values.contains(v)),
        Requirement::Exists(k) => get(k).is_some(),
        Requirement::DoesNotExist(k) => get(k).is_none(),
    }
}

/// The string form of a label selector (`app=web,tier in (a,b),!canary`):
/// `=`, `==`, `!=`, `in`, `notin`, a bare key (exists) and `!key`. Keys and
/// values are checked by the model's selector rules.
pub fn parse_label_selector(text: &str) -> Result<Vec<Requirement>, ApiError> {
    let fail = |why: String| ApiError::bad_request(format!("unable to parse requirement: {why}"));
    if text.len() > 16 * 1024 {
        return Err(fail("the selector is too long".into()));
    }
    // Split at the commas outside parentheses.
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);

    let mut expressions = Vec::new();
    for term in terms {
        let term = term.trim();
        if term.is_empty() {
            return Err(fail(format!(
                "found an empty requirement in '{}'",
                text.escape_debug()
            )));
        }
        let expr =
            |key: &str, operator: &str, values: Option<Vec<String>>| LabelSelectorRequirement {
                key: key.to_owned(),
                operator: operator.to_owned(),
                values,
            };
        if let Some(key) = term.strip_prefix('!') {
            expressions.push(expr(key.trim(), "DoesNotExist", None));
            continue;
        }
        let key_end = term
            .find(|c: char| c.is_whitespace() || matches!(c, '=' | '!' | '(' | '<' | '>'))
            .unwrap_or(term.len());
        let (key, rest) = term.split_at(key_end);
        let rest = rest.trim_start();
        if rest.is_empty() {
            expressions.push(expr(key, "Exists", None));
        } else if let Some(v) = rest.strip_prefix("!=") {
            expressions.push(expr(key, "NotIn", Some(vec![v.trim().to_owned()])));
        } else if let Some(v) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
            expressions.push(expr(key, "In", Some(vec![v.trim().to_owned()])));
        } else {
            let (operator, set) = if let Some(set) = rest.strip_prefix("notin") {
                ("NotIn", set)
            } else if let Some(set) = rest.strip_prefix("in") {
                ("In", set)
            } else {
                return Err(fail(format!(
                    "'{}': expected one of =, ==, !=, in, notin",
                    term.escape_debug()
                )));
            };
            let set = set.trim();
            let Some(inner) = set.strip_prefix('(').and_then(|s| s.strip_suffix(')')) else {
                return Err(fail(format!(
                    "'{}': the values must be in parentheses",
                    term.escape_debug()
                )));
            };
            let values: Vec<String> = inner
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect();
            expressions.push(expr(key, operator, Some(values)));
        }
    }
    let selector = strait_model::Selector::from_label_selector(&LabelSelector {
        match_labels: None,
        match_expressions: Some(expressions),
    })
    .map_err(|e| fail(e.to_string()))?;
    Ok(selector.requirements().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::RESOURCES;
    use proptest::prelude::*;

    fn resource(plural: &str) -> &'static Resource {
        RESOURCES
            .iter()
            .find(|r| r.plural == plural)
            .unwrap_or_else(|| panic!("no resource {plural}"))
    }

    /// A store with deterministic "randomness" and a settable clock.
    struct Lab {
        store: Store,
        counter: u64,
        now: i64,
    }

    impl Lab {
        fn new() -> Lab {
            Lab::with(Box::new(AdmitAll), 1000)
        }

        fn with(admission: Box<dyn Admission>, history: usize) -> Lab {
            let mut lab = Lab {
                store: Store::new(admission, history),
                counter: 0,
                now: 1_700_000_000,
            };
            lab.create("namespaces", "", json!({"metadata": {"name": "default"}}))
                .unwrap();
            lab
        }

        fn ctx<T>(&mut self, f: impl FnOnce(&Store, &mut WriteContext<'_>) -> T) -> T {
            let counter = &mut self.counter;
            let mut random = move || {
                *counter += 1;
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&counter.to_le_bytes());
                b[8..].copy_from_slice(&counter.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
                b
            };
            let mut ctx = WriteContext {
                now_unix: self.now,
                random: &mut random,
            };
            f(&self.store, &mut ctx)
        }

        fn create(
            &mut self,
            plural: &str,
            ns: &str,
            object: Value,
        ) -> Result<Arc<Value>, ApiError> {
            self.ctx(|s, c| s.create(resource(plural), ns, object, c))
        }

        fn update(
            &mut self,
            plural: &str,
            ns: &str,
            name: &str,
            object: Value,
            sub: Option<Subresource>,
        ) -> Result<Arc<Value>, ApiError> {
            self.ctx(|s, c| s.update(resource(plural), ns, name, object, sub, c))
        }

        fn delete(
            &mut self,
            plural: &str,
            ns: &str,
            name: &str,
            options: DeleteOptions,
        ) -> Result<Arc<Value>, ApiError> {
            self.ctx(|s, c| s.delete(resource(plural), ns, name, &options, c))
        }

        fn get(&self, plural: &str, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
            self.store.get(resource(plural), ns, name)
        }

        fn names(&self, plural: &str, options: &ListOptions) -> Vec<String> {
            let list = self.store.list(resource(plural), options).unwrap();
            list.items.iter().map(|o| key_text(o)).collect()
        }
    }

    fn key_text(o: &Value) -> String {
        format!(
            "{}/{}",
            meta_str(o, "namespace").unwrap_or_default(),
            meta_str(o, "name").unwrap_or_default()
        )
    }

    fn cm(name: &str, value: &str) -> Value {
        json!({"metadata": {"name": name}, "data": {"v": value}})
    }

    fn running_pod(name: &str) -> Value {
        json!({
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running"}
        })
    }

    fn drain(watch: &mut Watch) -> Vec<Event> {
        let mut events = std::mem::take(&mut watch.backlog);
        while let Ok(e) = watch.live.try_recv() {
            events.push(e);
        }
        events
    }

    fn kinds(events: &[Event]) -> Vec<(&'static str, String)> {
        events
            .iter()
            .map(|e| (e.kind.as_str(), key_text(&e.object)))
            .collect()
    }

    #[test]
    fn crud_with_one_monotonic_resource_version() {
        let mut lab = Lab::new();
        let start = lab.store.resource_version();
        let created = lab.create("configmaps", "default", cm("a", "1")).unwrap();
        assert_eq!(created["apiVersion"], "v1");
        assert_eq!(created["kind"], "ConfigMap");
        assert_eq!(created["metadata"]["namespace"], "default");
        let rv1 = rv_of(&created);
        assert_eq!(rv1, start + 1);
        assert_eq!(*lab.get("configmaps", "default", "a").unwrap(), *created);
        // Another resource shares the counter.
        let svc = lab
            .create(
                "services",
                "default",
                json!({"metadata": {"name": "web"}, "spec": {}}),
            )
            .unwrap();
        assert_eq!(rv_of(&svc), rv1 + 1);
        let updated = lab
            .update("configmaps", "default", "a", cm("a", "2"), None)
            .unwrap();
        assert_eq!(rv_of(&updated), rv1 + 2);
        assert_eq!(updated["data"]["v"], "2");
        assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
        assert_eq!(
            updated["metadata"]["creationTimestamp"],
            created["metadata"]["creationTimestamp"]
        );
        assert_eq!(
            lab.names("configmaps", &ListOptions::default()),
            vec!["default/a"]
        );
        let deleted = lab
            .delete("configmaps", "default", "a", DeleteOptions::default())
            .unwrap();
        assert_eq!(rv_of(&deleted), rv1 + 3);
        assert_eq!(lab.store.resource_version(), rv1 + 3);
        assert_eq!(lab.get("configmaps", "default", "a").unwrap_err().code, 404);
        assert_eq!(
            lab.delete("configmaps", "default", "a", DeleteOptions::default())
                .unwrap_err()
                .code,
            404
        );
        let again = lab.create("configmaps", "default", cm("a", "1")).unwrap();
        assert_ne!(again["metadata"]["uid"], created["metadata"]["uid"]);
    }

    #[test]
    fn create_fills_identity_and_refuses_what_kube_refuses() {
        let mut lab = Lab::new();
        let made = lab
            .create(
                "configmaps",
                "default",
                json!({"metadata": {"generateName": "web-"}}),
            )
            .unwrap();
        let name = meta_str(&made, "name").unwrap();
        assert_eq!(name.len(), 9, "{name}");
        let suffix = name.strip_prefix("web-").unwrap();
        assert!(suffix.bytes().all(|b| NAME_ALPHABET.contains(&b)), "{name}");
        let uid = meta_str(&made, "uid").unwrap();
        let parts: Vec<&str> = uid.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{uid}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{uid}");
        assert_eq!(
            made["metadata"]["creationTimestamp"],
            "2023-11-14T22:13:20Z"
        );
        assert!(made["metadata"].get("generation").is_none());
        let with_spec = lab
            .create(
                "services",
                "default",
                json!({"metadata": {"name": "s"}, "spec": {}}),
            )
            .unwrap();
        assert_eq!(with_spec["metadata"]["generation"], 1);

        let e = lab.create("configmaps", "nope", cm("a", "1")).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (404, "namespaces \"nope\" not found")
        );
        let e = lab
            .create(
                "configmaps",
                "default",
                json!({"metadata": {"name": "a", "namespace": "other"}}),
            )
            .unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "the namespace of the provided object does not match the namespace sent on the request"
        );
        let e = lab
            .create("configmaps", "default", json!({"data": {}}))
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(e.details.as_ref().unwrap().causes[0].field, "metadata.name");
        assert_eq!(
            e.details.as_ref().unwrap().causes[0].reason,
            "FieldValueRequired"
        );
        let e = lab
            .create("configmaps", "default", cm("Not_A_Name", ""))
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message
                .contains("metadata.name: Invalid value: \"Not_A_Name\""),
            "{}",
            e.message
        );
        let e = lab
            .create("services", "default", json!({"metadata": {"name": "1web"}}))
            .unwrap_err();
        assert_eq!(e.code, 422);
        // RBAC names are path segments: `system:` names are fine.
        lab.create(
            "clusterroles",
            "",
            json!({"metadata": {"name": "system:node"}}),
        )
        .unwrap();
        let e = lab
            .create(
                "configmaps",
                "default",
                json!({"metadata": {"name": "a", "labels": {"bad key!": "x"}}}),
            )
            .unwrap_err();
        assert_eq!(e.code, 422);
        let e = lab
            .create(
                "configmaps",
                "default",
                json!({"kind": "Secret", "metadata": {"name": "a"}}),
            )
            .unwrap_err();
        assert_eq!(e.code, 400);
        let e = lab.create("configmaps", "default", json!([1])).unwrap_err();
        assert_eq!(e.code, 400);
        lab.create("configmaps", "default", cm("a", "1")).unwrap();
        let e = lab
            .create("configmaps", "default", cm("a", "1"))
            .unwrap_err();
        assert_eq!((e.code, e.reason), (409, "AlreadyExists"));
        // A cluster-scoped object loses a namespace given to it.
        let node = lab
            .create(
                "nodes",
                "",
                json!({"metadata": {"name": "n1", "namespace": "x"}}),
            )
            .unwrap();
        assert!(node["metadata"].get("namespace").is_none());
        let ns = lab.get("namespaces", "", "default").unwrap();
        assert_eq!(ns["status"]["phase"], "Active");
    }

    #[test]
    fn a_stale_resource_version_is_a_conflict_and_none_is_unconditional() {
        let mut lab = Lab::new();
        let v1 = lab.create("configmaps", "default", cm("a", "1")).unwrap();
        let mut stale = (*v1).clone();
        lab.update("configmaps", "default", "a", (*v1).clone(), None)
            .unwrap();
        let v2 = lab
            .update("configmaps", "default", "a", cm("a", "2"), None)
            .unwrap();
        stale["data"]["v"] = "3".into();
        let e = lab
            .update("configmaps", "default", "a", stale, None)
            .unwrap_err();
        assert_eq!((e.code, e.reason), (409, "Conflict"));
        let mut fresh = (*v2).clone();
        fresh["data"]["v"] = "3".into();
        let v3 = lab
            .update("configmaps", "default", "a", fresh, None)
            .unwrap();
        assert_eq!(v3["data"]["v"], "3");
        let e = lab
            .update("configmaps", "default", "b", cm("b", "1"), None)
            .unwrap_err();
        assert_eq!(e.code, 404);
        let e = lab
            .update("configmaps", "default", "a", cm("other", "1"), None)
            .unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn an_update_that_changes_nothing_is_no_write() {
        let mut lab = Lab::new();
        let v1 = lab.create("configmaps", "default", cm("a", "1")).unwrap();
        let mut watch = lab
            .store
            .watch(
                resource("configmaps"),
                &ListOptions {
                    resource_version: Some(lab.store.resource_version().to_string()),
                    ..Default::default()
                },
            )
            .unwrap();
        let rv = lab.store.resource_version();
        let same = lab
            .update("configmaps", "default", "a", cm("a", "1"), None)
            .unwrap();
        assert_eq!(*same, *v1);
        assert_eq!(lab.store.resource_version(), rv);
        assert!(drain(&mut watch).is_empty());
        lab.update("configmaps", "default", "a", cm("a", "2"), None)
            .unwrap();
        assert_eq!(
            kinds(&drain(&mut watch)),
            vec![("MODIFIED", "default/a".into())]
        );
    }

    #[test]
    fn the_status_subresource_splits_status_from_the_rest() {
        let mut lab = Lab::new();
        let deploy = json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 1},
            "status": {"replicas": 0}
        });
        let v1 = lab.create("deployments", "default", deploy).unwrap();
        assert_eq!(v1["metadata"]["generation"], 1);
        // The main resource: spec changes, status stays.
        let mut main = (*v1).clone();
        main["spec"]["replicas"] = 3.into();
        main["status"]["replicas"] = 99.into();
        let v2 = lab
            .update("deployments", "default", "web", main, None)
            .unwrap();
        assert_eq!(v2["spec"]["replicas"], 3);
        assert_eq!(v2["status"]["replicas"], 0);
        assert_eq!(v2["metadata"]["generation"], 2);
        // The status: only status changes, generation stays.
        let mut status = (*v2).clone();
        status["spec"]["replicas"] = 7.into();
        status["status"]["replicas"] = 3.into();
        status["metadata"]["labels"] = json!({"x": "y"});
        let v3 = lab
            .update(
                "deployments",
                "default",
                "web",
                status,
                Some(Subresource::Status),
            )
            .unwrap();
        assert_eq!(v3["spec"]["replicas"], 3);
        assert_eq!(v3["status"]["replicas"], 3);
        assert_eq!(v3["metadata"]["generation"], 2);
        assert!(v3["metadata"].get("labels").is_none());
        assert!(rv_of(&v3) > rv_of(&v2));
        // Metadata-only changes do not bump the generation either.
        let mut labelled = (*v3).clone();
        labelled["metadata"]["labels"] = json!({"x": "y"});
        let v4 = lab
            .update("deployments", "default", "web", labelled, None)
            .unwrap();
        assert_eq!(v4["metadata"]["generation"], 2);
        // No status subresource: 405.
        let e = lab
            .update(
                "configmaps",
                "default",
                "x",
                cm("x", "1"),
                Some(Subresource::Status),
            )
            .unwrap_err();
        assert_eq!(e.code, 405);
    }

    #[test]
    fn modify_retries_a_concurrent_write() {
        let mut lab = Lab::new();
        lab.create("configmaps", "default", cm("a", "0")).unwrap();
        let mut calls = 0;
        let result = {
            let Lab { store, .. } = &lab;
            let mut random = || [7u8; 16];
            let mut ctx = WriteContext {
                now_unix: 0,
                random: &mut random,
            };
            let mut change = |old: &Value| {
                calls += 1;
                if calls == 1 {
                    // Someone else writes between our read and our write.
                    let mut other_random = || [9u8; 16];
                    let mut other = WriteContext {
                        now_unix: 0,
                        random: &mut other_random,
                    };
                    store.update(
                        resource("configmaps"),
                        "default",
                        "a",
                        cm("a", "other"),
                        None,
                        &mut other,
                    )?;
                }
                let mut new = old.clone();
                new["data"]["mine"] = "yes".into();
                Ok(new)
            };
            store.modify(
                resource("configmaps"),
                "default",
                "a",
                None,
                &mut change,
                &mut ctx,
            )
        };
        let result = result.unwrap();
        assert_eq!(calls, 2);
        assert_eq!(result["data"]["v"], "other");
        assert_eq!(result["data"]["mine"], "yes");
        // A patch that names a version is a precondition: no retry.
        let mut pinned = |old: &Value| {
            let mut new = old.clone();
            new["metadata"]["resourceVersion"] = "1".into();
            Ok(new)
        };
        let e = lab
            .ctx(|s, c| s.modify(resource("configmaps"), "default", "a", None, &mut pinned, c))
            .unwrap_err();
        assert_eq!(e.code, 409);
    }

    #[test]
    fn pods_are_deleted_gracefully() {
        let mut lab = Lab::new();
        lab.create("pods", "default", running_pod("p")).unwrap();
        let mut watch = lab
            .store
            .watch(
                resource("pods"),
                &ListOptions {
                    resource_version: Some(lab.store.resource_version().to_string()),
                    ..Default::default()
                },
            )
            .unwrap();
        let marked = lab
            .delete("pods", "default", "p", DeleteOptions::default())
            .unwrap();
        assert_eq!(
            marked["metadata"]["deletionTimestamp"],
            rfc3339(lab.now + 30)
        );
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
        assert!(lab.get("pods", "default", "p").is_ok());
        // A longer grace period does not postpone it.
        let same = lab
            .delete(
                "pods",
                "default",
                "p",
                DeleteOptions {
                    grace_period_seconds: Some(60),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(*same, *marked);
        let gone = lab
            .delete(
                "pods",
                "default",
                "p",
                DeleteOptions {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(lab.get("pods", "default", "p").unwrap_err().code, 404);
        let events = drain(&mut watch);
        assert_eq!(
            kinds(&events),
            vec![
                ("MODIFIED", "default/p".into()),
                ("DELETED", "default/p".into())
            ]
        );
        assert_eq!(events[1].resource_version, rv_of(&gone));
        // The pod's own grace period is the default; a pod that never ran
        // on a node goes at once.
        let mut own = running_pod("q");
        own["spec"]["terminationGracePeriodSeconds"] = 5.into();
        lab.create("pods", "default", own).unwrap();
        let marked = lab
            .delete("pods", "default", "q", DeleteOptions::default())
            .unwrap();
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 5);
        lab.create(
            "pods",
            "default",
            json!({"metadata": {"name": "r"}, "spec": {}}),
        )
        .unwrap();
        lab.delete("pods", "default", "r", DeleteOptions::default())
            .unwrap();
        assert_eq!(lab.get("pods", "default", "r").unwrap_err().code, 404);
    }

    #[test]
    fn delete_preconditions() {
        let mut lab = Lab::new();
        let a = lab.create("configmaps", "default", cm("a", "1")).unwrap();
        let e = lab
            .delete(
                "configmaps",
                "default",
                "a",
                DeleteOptions {
                    precondition_uid: Some("other".into()),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.code, 409);
        assert!(
            e.message.starts_with("Precondition failed: UID"),
            "{}",
            e.message
        );
        let e = lab
            .delete(
                "configmaps",
                "default",
                "a",
                DeleteOptions {
                    precondition_resource_version: Some("1".into()),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.code, 409);
        lab.delete(
            "configmaps",
            "default",
            "a",
            DeleteOptions {
                precondition_uid: meta_str(&a, "uid").map(str::to_owned),
                precondition_resource_version: meta_str(&a, "resourceVersion").map(str::to_owned),
                ..Default::default()
            },
        )
        .unwrap();
    }

    #[test]
    fn finalizers_hold_an_object_until_cleared() {
        let mut lab = Lab::new();
        lab.create(
            "configmaps",
            "default",
            json!({"metadata": {"name": "a", "finalizers": ["example.com/keep"]}}),
        )
        .unwrap();
        let marked = lab
            .delete("configmaps", "default", "a", DeleteOptions::default())
            .unwrap();
        assert_eq!(marked["metadata"]["deletionTimestamp"], rfc3339(lab.now));
        let still = lab.get("configmaps", "default", "a").unwrap();
        assert_eq!(*still, *marked);
        // Deleting again changes nothing.
        let rv = lab.store.resource_version();
        lab.delete("configmaps", "default", "a", DeleteOptions::default())
            .unwrap();
        assert_eq!(lab.store.resource_version(), rv);
        // An update cannot take the deletionTimestamp away.
        let mut cleared = (*still).clone();
        cleared["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("deletionTimestamp");
        cleared["data"] = json!({"x": "y"});
        let v = lab
            .update("configmaps", "default", "a", cleared.clone(), None)
            .unwrap();
        assert_eq!(v["metadata"]["deletionTimestamp"], rfc3339(lab.now));
        let mut no_finalizers = (*v).clone();
        no_finalizers["metadata"]["finalizers"] = json!([]);
        lab.update("configmaps", "default", "a", no_finalizers, None)
            .unwrap();
        assert_eq!(lab.get("configmaps", "default", "a").unwrap_err().code, 404);
    }

    #[test]
    fn deleting_a_namespace_deletes_what_is_in_it() {
        let mut lab = Lab::new();
        lab.create("namespaces", "", json!({"metadata": {"name": "team"}}))
            .unwrap();
        lab.create("namespaces", "", json!({"metadata": {"name": "team-b"}}))
            .unwrap();
        for name in ["a", "b"] {
            lab.create("configmaps", "team", cm(name, "1")).unwrap();
            lab.create("pods", "team", running_pod(name)).unwrap();
        }
        lab.create("configmaps", "team-b", cm("kept", "1")).unwrap();
        lab.create("configmaps", "default", cm("kept", "1"))
            .unwrap();
        let mut watch = lab
            .store
            .watch(
                resource("configmaps"),
                &ListOptions {
                    resource_version: Some(lab.store.resource_version().to_string()),
                    ..Default::default()
                },
            )
            .unwrap();
        let gone = lab
            .delete("namespaces", "", "team", DeleteOptions::default())
            .unwrap();
        assert_eq!(gone["status"]["phase"], "Terminating");
        assert_eq!(lab.get("namespaces", "", "team").unwrap_err().code, 404);
        assert!(lab.names("pods", &ListOptions::default()).is_empty());
        assert_eq!(
            lab.names("configmaps", &ListOptions::default()),
            vec!["default/kept", "team-b/kept"]
        );
        assert_eq!(
            kinds(&drain(&mut watch)),
            vec![("DELETED", "team/a".into()), ("DELETED", "team/b".into())]
        );
        let e = lab
            .delete("namespaces", "", "default", DeleteOptions::default())
            .unwrap_err();
        assert_eq!(e.code, 403);
        // A namespace held by a finalizer stays Terminating, refusing new
        // objects, until the finalizer is cleared.
        lab.create(
            "namespaces",
            "",
            json!({"metadata": {"name": "held", "finalizers": ["x/y"]}}),
        )
        .unwrap();
        lab.delete("namespaces", "", "held", DeleteOptions::default())
            .unwrap();
        let e = lab.create("configmaps", "held", cm("a", "1")).unwrap_err();
        assert_eq!(e.code, 403);
        let mut held = (*lab.get("namespaces", "", "held").unwrap()).clone();
        held["metadata"]["finalizers"] = json!([]);
        lab.update("namespaces", "", "held", held, None).unwrap();
        assert_eq!(lab.get("namespaces", "", "held").unwrap_err().code, 404);
    }

    #[test]
    fn an_ingress_without_a_class_gets_the_newest_default_one_on_create() {
        let mut lab = Lab::new();
        let class = |name: &str, default: Option<&str>| {
            let mut c = json!({"metadata": {"name": name}, "spec": {"controller": "x.dev/c"}});
            if let Some(d) = default {
                c["metadata"]["annotations"] =
                    json!({"ingressclass.kubernetes.io/is-default-class": d});
            }
            c
        };
        let ingress = |name: &str| json!({"metadata": {"name": name}, "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}});
        let class_of = |o: &Value| o.pointer("/spec/ingressClassName").cloned();
        // No default class: nothing is set.
        let plain = lab.create("ingresses", "default", ingress("a")).unwrap();
        assert_eq!(class_of(&plain), None);
        lab.create("ingressclasses", "", class("old", Some("true")))
            .unwrap();
        lab.create("ingressclasses", "", class("other", Some("false")))
            .unwrap();
        let b = lab.create("ingresses", "default", ingress("b")).unwrap();
        assert_eq!(class_of(&b), Some(json!("old")));
        // Of two defaults, the newer; in the same second, the first by name.
        lab.now += 10;
        lab.create("ingressclasses", "", class("newer", Some("true")))
            .unwrap();
        lab.create("ingressclasses", "", class("newest-z", Some("true")))
            .unwrap();
        let c = lab.create("ingresses", "default", ingress("c")).unwrap();
        assert_eq!(class_of(&c), Some(json!("newer")));
        // A class named, or the older annotation, is left as written.
        let mut named = ingress("d");
        named["spec"]["ingressClassName"] = "other".into();
        let d = lab.create("ingresses", "default", named).unwrap();
        assert_eq!(class_of(&d), Some(json!("other")));
        let mut annotated = ingress("e");
        annotated["metadata"]["annotations"] = json!({"kubernetes.io/ingress.class": "nginx"});
        let e = lab.create("ingresses", "default", annotated).unwrap();
        assert_eq!(class_of(&e), None);
        // Only on create: an update keeps what it writes.
        let mut a = (*lab.get("ingresses", "default", "a").unwrap()).clone();
        a["spec"]["rules"] = json!([]);
        let a = lab.update("ingresses", "default", "a", a, None).unwrap();
        assert_eq!(class_of(&a), None);
    }

    #[test]
    fn label_selectors_parse_as_kubectl_writes_them() {
        let r = parse_label_selector(
            "app=web, tier in (a, b),!canary,env!=prod,x==y,zone notin (c),team",
        )
        .unwrap();
        assert_eq!(r.len(), 7);
        assert!(matches!(&r[0], Requirement::In(k, v) if k == "app" && v.contains("web")));
        assert!(matches!(&r[2], Requirement::DoesNotExist(k) if k == "canary"));
        assert!(matches!(&r[3], Requirement::NotIn(k, _) if k == "env"));
        assert!(matches!(&r[6], Requirement::Exists(k) if k == "team"));
        for bad in ["app=web,", "a in b", "a in ()", "bad key=1", "a>1", "a=b c"] {
            let e = parse_label_selector(bad).unwrap_err();
            assert_eq!(e.code, 400, "{bad}");
        }
    }

    #[test]
    fn lists_filter_by_namespace_labels_and_fields() {
        let mut lab = Lab::new();
        lab.create("namespaces", "", json!({"metadata": {"name": "b"}}))
            .unwrap();
        lab.create("pods", "default", running_pod("web-1")).unwrap();
        let mut other = running_pod("db-1");
        other["metadata"]["labels"] = json!({"app": "db"});
        other["spec"]["nodeName"] = "node-2".into();
        other["status"]["phase"] = "Pending".into();
        lab.create("pods", "default", other).unwrap();
        lab.create("pods", "b", running_pod("web-2")).unwrap();
        let list = |label: Option<&str>, field: Option<&str>, ns: Option<&str>| ListOptions {
            label_selector: label.map(str::to_owned),
            field_selector: field.map(str::to_owned),
            namespace: ns.map(str::to_owned),
            ..Default::default()
        };
        assert_eq!(
            lab.names("pods", &list(None, None, None)),
            vec!["b/web-2", "default/db-1", "default/web-1"]
        );
        assert_eq!(
            lab.names("pods", &list(None, None, Some("default"))),
            vec!["default/db-1", "default/web-1"]
        );
        assert_eq!(
            lab.names("pods", &list(Some("app=web"), None, None)),
            vec!["b/web-2", "default/web-1"]
        );
        assert_eq!(
            lab.names("pods", &list(Some("app notin (web)"), None, None)),
            vec!["default/db-1"]
        );
        assert_eq!(
            lab.names("pods", &list(None, Some("spec.nodeName=node-2"), None)),
            vec!["default/db-1"]
        );
        assert_eq!(
            lab.names(
                "pods",
                &list(
                    None,
                    Some("status.phase!=Pending,metadata.namespace==default"),
                    None
                )
            ),
            vec!["default/web-1"]
        );
        assert_eq!(
            lab.names("pods", &list(None, Some("metadata.name=web-2"), None)),
            vec!["b/web-2"]
        );
        let e = lab
            .store
            .list(resource("pods"), &list(None, Some("spec.foo=1"), None))
            .unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "field label not supported: spec.foo")
        );
        let e = lab
            .store
            .list(
                resource("configmaps"),
                &list(None, Some("spec.nodeName=x"), None),
            )
            .unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn pages_follow_continue_tokens() {
        let mut lab = Lab::new();
        for ns in ["a", "b"] {
            lab.create("namespaces", "", json!({"metadata": {"name": ns}}))
                .unwrap();
            for i in 0..5 {
                lab.create("configmaps", ns, cm(&format!("c{i}"), "1"))
                    .unwrap();
            }
        }
        let rv = lab.store.resource_version();
        let first = lab
            .store
            .list(
                resource("configmaps"),
                &ListOptions {
                    limit: Some(3),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(first.items.len(), 3);
        assert_eq!(first.remaining_item_count, Some(7));
        assert_eq!(first.resource_version, rv);
        // A write between pages: the next page shows the current state
        // under the first page's version.
        lab.create("configmaps", "b", cm("c9", "1")).unwrap();
        let second = lab
            .store
            .list(
                resource("configmaps"),
                &ListOptions {
                    limit: Some(100),
                    continue_token: first.continue_token.clone(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(second.items.len(), 8);
        assert_eq!(second.resource_version, rv);
        assert!(second.continue_token.is_none());
        assert!(second.remaining_item_count.is_none());
        let e = lab
            .store
            .list(
                resource("configmaps"),
                &ListOptions {
                    continue_token: Some("garbage!".into()),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn a_continue_token_older_than_the_history_pages_on_and_its_watch_is_gone() {
        let mut lab = Lab::with(Box::new(AdmitAll), 4);
        for i in 0..6 {
            lab.create("configmaps", "default", cm(&format!("c{i}"), "1"))
                .unwrap();
        }
        let first = lab
            .store
            .list(
                resource("configmaps"),
                &ListOptions {
                    limit: Some(2),
                    ..Default::default()
                },
            )
            .unwrap();
        for i in 0..6 {
            lab.update(
                "configmaps",
                "default",
                &format!("c{i}"),
                cm(&format!("c{i}"), "2"),
                None,
            )
            .unwrap();
        }
        let rest = lab
            .store
            .list(
                resource("configmaps"),
                &ListOptions {
                    continue_token: first.continue_token.clone(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(rest.items.len(), 4);
        assert_eq!(rest.resource_version, first.resource_version);
        let e = lab
            .store
            .watch(
                resource("configmaps"),
                &ListOptions {
                    resource_version: Some(rest.resource_version.to_string()),
                    ..Default::default()
                },
            )
            .err()
            .unwrap();
        assert_eq!((e.code, e.reason), (410, "Expired"));
        // A token from a version the store never reached.
        let future = Continue {
            rv: lab.store.resource_version() + 10,
            key: ("default".into(), "c0".into()),
            served: 1,
        }
        .encode();
        let e = lab
            .store
            .list(
                resource("configmaps"),
                &ListOptions {
                    continue_token: Some(future),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!((e.code, e.reason), (410, "Expired"));
    }

    #[test]
    fn a_watch_from_a_version_older_than_the_history_is_gone() {
        let mut lab = Lab::with(Box::new(AdmitAll), 3);
        let start = lab.store.resource_version();
        for i in 0..5 {
            lab.create("configmaps", "default", cm(&format!("c{i}"), "1"))
                .unwrap();
        }
        let watch_from = |rv: u64| {
            lab.store.watch(
                resource("configmaps"),
                &ListOptions {
                    resource_version: Some(rv.to_string()),
                    ..Default::default()
                },
            )
        };
        let Err(e) = watch_from(start) else {
            panic!("watch from a compacted version")
        };
        assert_eq!((e.code, e.reason), (410, "Expired"));
        assert!(
            e.message
                .starts_with(&format!("too old resource version: {start} (")),
            "{}",
            e.message
        );
        // The oldest kept event's predecessor still works.
        let mut w = watch_from(start + 2).unwrap();
        assert_eq!(drain(&mut w).len(), 3);
        // Another resource's history is its own.
        let w = lab.store.watch(
            resource("services"),
            &ListOptions {
                resource_version: Some(start.to_string()),
                ..Default::default()
            },
        );
        assert!(w.is_ok());
        let e = lab
            .store
            .watch(
                resource("configmaps"),
                &ListOptions {
                    resource_version: Some("x".into()),
                    ..Default::default()
                },
            )
            .err()
            .unwrap();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn compaction_ends_open_watches_with_410_and_keeps_the_objects() {
        let mut lab = Lab::new();
        lab.create("configmaps", "default", cm("a", "1")).unwrap();
        let before = lab.store.resource_version();
        let watch_from = |store: &Store, rv: u64| {
            store.watch(
                resource("configmaps"),
                &ListOptions {
                    resource_version: Some(rv.to_string()),
                    ..Default::default()
                },
            )
        };
        let mut open = watch_from(&lab.store, before).unwrap();
        lab.create("configmaps", "default", cm("b", "1")).unwrap();
        let at = lab.store.compact();
        assert_eq!(at, lab.store.resource_version());
        let events = drain(&mut open);
        assert_eq!(kinds(&events)[0], ("ADDED", "default/b".to_owned()));
        let last = events.last().unwrap();
        assert_eq!(last.kind, EventType::Error);
        assert_eq!(last.object["code"], 410);
        assert_eq!(last.object["reason"], "Expired");
        // The stream ends after the error: its sender is gone.
        assert!(matches!(
            open.live.try_recv(),
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected)
        ));
        assert_eq!(lab.store.watchers(resource("configmaps")), 0);
        // From the old version: 410; from the compacted one: fine.
        let Err(e) = watch_from(&lab.store, before) else {
            panic!("a watch from before the compaction")
        };
        assert_eq!((e.code, e.reason), (410, "Expired"));
        assert!(watch_from(&lab.store, at).is_ok());
        // The objects stay, at their versions.
        let list = lab
            .store
            .list(resource("configmaps"), &ListOptions::default())
            .unwrap();
        assert_eq!(list.items.len(), 2);
        assert_eq!(list.resource_version, at);
    }

    #[test]
    fn initial_events_end_with_a_bookmark() {
        let mut lab = Lab::new();
        lab.create("configmaps", "default", cm("a", "1")).unwrap();
        lab.create("configmaps", "default", cm("b", "1")).unwrap();
        let mut watch = lab
            .store
            .watch(
                resource("configmaps"),
                &ListOptions {
                    send_initial_events: true,
                    allow_bookmarks: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let rv = lab.store.resource_version();
        let events = drain(&mut watch);
        assert_eq!(
            kinds(&events),
            vec![
                ("ADDED", "default/a".into()),
                ("ADDED", "default/b".into()),
                ("BOOKMARK", "/".into())
            ]
        );
        let bookmark = &events[2].object;
        assert_eq!(bookmark["kind"], "ConfigMap");
        assert_eq!(bookmark["metadata"]["resourceVersion"], rv.to_string());
        assert_eq!(
            bookmark["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
        // Without a version: the current objects as ADDED, no bookmark.
        let mut plain = lab
            .store
            .watch(resource("configmaps"), &ListOptions::default())
            .unwrap();
        assert_eq!(drain(&mut plain).len(), 2);
        let b = lab.store.bookmark(resource("configmaps"));
        assert_eq!(b.kind, EventType::Bookmark);
        assert_eq!(b.resource_version, rv);
        assert!(b.object["metadata"].get("annotations").is_none());
    }

    #[test]
    fn selector_watches_see_objects_come_and_go() {
        let mut lab = Lab::new();
        lab.create("pods", "default", running_pod("p")).unwrap();
        let mut watch = lab
            .store
            .watch(
                resource("pods"),
                &ListOptions {
                    label_selector: Some("app=web".into()),
                    resource_version: Some(lab.store.resource_version().to_string()),
                    ..Default::default()
                },
            )
            .unwrap();
        let mut pod = (*lab.get("pods", "default", "p").unwrap()).clone();
        pod["metadata"]["labels"]["app"] = "db".into();
        let moved = lab
            .update("pods", "default", "p", pod.clone(), None)
            .unwrap();
        pod["metadata"]["labels"]["app"] = "web".into();
        pod["metadata"]["resourceVersion"] = Value::Null;
        lab.update("pods", "default", "p", pod, None).unwrap();
        let events = drain(&mut watch);
        assert_eq!(
            kinds(&events),
            vec![
                ("DELETED", "default/p".into()),
                ("ADDED", "default/p".into())
            ]
        );
        // The DELETED object is the one the watcher had, at the new version.
        assert_eq!(events[0].object["metadata"]["labels"]["app"], "web");
        assert_eq!(rv_of(&events[0].object), rv_of(&moved));
    }

    #[test]
    fn a_watcher_that_falls_behind_is_closed() {
        let mut lab = Lab::new();
        let mut slow = lab
            .store
            .watch(resource("configmaps"), &ListOptions::default())
            .unwrap();
        let mut fast = lab
            .store
            .watch(resource("configmaps"), &ListOptions::default())
            .unwrap();
        let mut fast_seen = 0;
        for i in 0..WATCH_QUEUE + 5 {
            lab.create("configmaps", "default", cm(&format!("c{i}"), "1"))
                .unwrap();
            fast_seen += drain(&mut fast).len();
        }
        assert_eq!(fast_seen, WATCH_QUEUE + 5);
        assert_eq!(lab.store.watchers(resource("configmaps")), 1);
        let queued = drain(&mut slow).len();
        assert_eq!(queued, WATCH_QUEUE);
        // Closed: nothing more comes, the stream ends.
        assert!(matches!(
            slow.live.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        // A dropped receiver is pruned on the next event.
        drop(fast);
        lab.create("configmaps", "default", cm("last", "1"))
            .unwrap();
        assert_eq!(lab.store.watchers(resource("configmaps")), 0);
    }

    #[test]
    fn model_admission_refusals_carry_the_models_field() {
        let mut lab = Lab::with(Box::new(crate::admission::ModelAdmission), 100);
        let e = lab
            .create(
                "services",
                "default",
                json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 70000}]}}),
            )
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.details.as_ref().unwrap().causes[0].field,
            "spec.ports[0].port"
        );
        assert_eq!(lab.get("services", "default", "web").unwrap_err().code, 404);
        let svc = lab
            .create(
                "services",
                "default",
                json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}),
            )
            .unwrap();
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["metadata"]["creationTimestamp"], rfc3339(lab.now));
        assert!(meta_str(&svc, "uid").is_some_and(|u| u.len() == 36));
    }

    /// An admission that reads the store (as address allocation does).
    struct Reading(std::sync::OnceLock<std::sync::Weak<Store>>);

    impl Admission for Reading {
        fn admit(
            &self,
            _: &Resource,
            object: &mut Value,
            _: Option<&Value>,
        ) -> Result<(), ApiError> {
            let store = self.0.get().and_then(std::sync::Weak::upgrade);
            let seen = store.map_or(0, |s| {
                s.list(resource("configmaps"), &ListOptions::default())
                    .map_or(0, |l| l.items.len())
            });
            object["data"]["seen"] = seen.to_string().into();
            Ok(())
        }
    }

    #[test]
    fn admission_may_read_the_store() {
        let admission = Arc::new(Reading(std::sync::OnceLock::new()));
        struct Shared(Arc<Reading>);
        impl Admission for Shared {
            fn admit(
                &self,
                r: &Resource,
                o: &mut Value,
                old: Option<&Value>,
            ) -> Result<(), ApiError> {
                self.0.admit(r, o, old)
            }
        }
        let store = Arc::new(Store::new(Box::new(Shared(admission.clone())), 100));
        admission.0.set(Arc::downgrade(&store)).ok();
        let mut random = || [1u8; 16];
        let mut ctx = WriteContext {
            now_unix: 0,
            random: &mut random,
        };
        store
            .create(
                resource("namespaces"),
                "",
                json!({"metadata": {"name": "default"}}),
                &mut ctx,
            )
            .unwrap();
        store
            .create(resource("configmaps"), "default", cm("a", "1"), &mut ctx)
            .unwrap();
        let b = store
            .create(resource("configmaps"), "default", cm("b", "1"), &mut ctx)
            .unwrap();
        assert_eq!(b["data"]["seen"], "1");
        let b = store
            .update(
                resource("configmaps"),
                "default",
                "b",
                cm("b", "2"),
                None,
                &mut ctx,
            )
            .unwrap();
        assert_eq!(b["data"]["seen"], "2");
    }

    #[test]
    fn concurrent_modifies_lose_no_write() {
        let store = Arc::new(Store::new(Box::new(AdmitAll), 10_000));
        let mut random = || [1u8; 16];
        let mut ctx = WriteContext {
            now_unix: 0,
            random: &mut random,
        };
        store
            .create(
                resource("namespaces"),
                "",
                json!({"metadata": {"name": "default"}}),
                &mut ctx,
            )
            .unwrap();
        store
            .create(resource("configmaps"), "default", cm("n", "0"), &mut ctx)
            .unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut random = || [2u8; 16];
                    let mut ctx = WriteContext {
                        now_unix: 0,
                        random: &mut random,
                    };
                    let mut done = 0;
                    for _ in 0..50 {
                        let mut bump = |old: &Value| {
                            let n: u64 = old["data"]["v"]
                                .as_str()
                                .unwrap_or("0")
                                .parse()
                                .unwrap_or(0);
                            let mut new = old.clone();
                            new["data"]["v"] = (n + 1).to_string().into();
                            Ok(new)
                        };
                        // Under heavy contention a modify may give up (409):
                        // what counts is that no successful one is lost.
                        if store
                            .modify(
                                resource("configmaps"),
                                "default",
                                "n",
                                None,
                                &mut bump,
                                &mut ctx,
                            )
                            .is_ok()
                        {
                            done += 1;
                        }
                    }
                    done
                })
            })
            .collect();
        let done: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let n = store.get(resource("configmaps"), "default", "n").unwrap();
        assert_eq!(n["data"]["v"], done.to_string());
        assert!(done > 0);
    }

    #[test]
    fn a_watch_by_name_sees_the_pod_go_as_kubectl_delete_waits_for_it() {
        let mut lab = Lab::new();
        lab.create("pods", "default", running_pod("p")).unwrap();
        lab.create("pods", "default", running_pod("q")).unwrap();
        let mut watch = lab
            .store
            .watch(
                resource("pods"),
                &ListOptions {
                    namespace: Some("default".into()),
                    field_selector: Some("metadata.name=p".into()),
                    resource_version: Some(lab.store.resource_version().to_string()),
                    ..Default::default()
                },
            )
            .unwrap();
        for name in ["q", "p"] {
            lab.delete("pods", "default", name, DeleteOptions::default())
                .unwrap();
            lab.delete(
                "pods",
                "default",
                name,
                DeleteOptions {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .unwrap();
        }
        assert_eq!(
            kinds(&drain(&mut watch)),
            vec![
                ("MODIFIED", "default/p".into()),
                ("DELETED", "default/p".into())
            ]
        );
    }

    #[test]
    fn hostile_input_is_refused_naming_the_field_and_changes_nothing() {
        let mut lab = Lab::new();
        let rv = lab.store.resource_version();
        let e = lab
            .create("configmaps", "default", cm("a\u{1b}[2J\n", "1"))
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            !e.message.contains('\u{1b}') && !e.message.contains('\n'),
            "{}",
            e.message
        );
        let e = lab
            .create("configmaps", "default", json!({"metadata": "x"}))
            .unwrap_err();
        assert_eq!(e.code, 400);
        let e = lab
            .create("configmaps", "default", json!({"metadata": {"name": 7}}))
            .unwrap_err();
        assert_eq!(e.code, 400);
        let e = lab
            .create(
                "configmaps",
                "default",
                json!({"metadata": {"name": "a", "labels": {"k": 1}}}),
            )
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.details.as_ref().unwrap().causes[0].field,
            "metadata.labels"
        );
        let e = lab
            .create(
                "configmaps",
                "default",
                json!({"metadata": {"name": "a", "resourceVersion": "5"}}),
            )
            .unwrap_err();
        assert_eq!(e.code, 400);
        let long = "a".repeat(20_000);
        for options in [
            ListOptions {
                label_selector: Some(long.clone()),
                ..Default::default()
            },
            ListOptions {
                continue_token: Some(long.clone()),
                ..Default::default()
            },
            ListOptions {
                field_selector: Some("metadata.name".into()),
                ..Default::default()
            },
        ] {
            let e = lab
                .store
                .list(resource("configmaps"), &options)
                .unwrap_err();
            assert_eq!(e.code, 400);
        }
        assert_eq!(lab.store.resource_version(), rv);
        // Grace periods out of range are brought into it.
        lab.create("pods", "default", running_pod("p")).unwrap();
        let marked = lab
            .delete(
                "pods",
                "default",
                "p",
                DeleteOptions {
                    grace_period_seconds: Some(-5),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 1);
        lab.create("pods", "default", running_pod("q")).unwrap();
        let marked = lab
            .delete(
                "pods",
                "default",
                "q",
                DeleteOptions {
                    grace_period_seconds: Some(i64::MAX),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(
            marked["metadata"]["deletionGracePeriodSeconds"],
            365 * 24 * 3600
        );
    }

    #[test]
    fn an_update_keeps_the_stored_identity() {
        let mut lab = Lab::new();
        let v1 = lab.create("configmaps", "default", cm("a", "1")).unwrap();
        let mut other = cm("a", "2");
        other["metadata"]["uid"] = "someone-else".into();
        let e = lab
            .update("configmaps", "default", "a", other, None)
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(e.details.as_ref().unwrap().causes[0].field, "metadata.uid");
        let mut moved = cm("a", "2");
        moved["metadata"]["creationTimestamp"] = "1999-01-01T00:00:00Z".into();
        moved["metadata"]["deletionTimestamp"] = "1999-01-01T00:00:00Z".into();
        moved["metadata"]["generation"] = 40.into();
        let v2 = lab
            .update("configmaps", "default", "a", moved, None)
            .unwrap();
        assert_eq!(v2["metadata"]["uid"], v1["metadata"]["uid"]);
        assert_eq!(
            v2["metadata"]["creationTimestamp"],
            v1["metadata"]["creationTimestamp"]
        );
        assert!(v2["metadata"].get("deletionTimestamp").is_none());
        assert!(v2["metadata"].get("generation").is_none());
        let svc = lab
            .create(
                "services",
                "default",
                json!({"metadata": {"name": "s"}, "spec": {}}),
            )
            .unwrap();
        let mut bumped = (*svc).clone();
        bumped["metadata"]["generation"] = 40.into();
        bumped["spec"]["type"] = "ClusterIP".into();
        let svc = lab
            .update("services", "default", "s", bumped, None)
            .unwrap();
        assert_eq!(svc["metadata"]["generation"], 2);
    }

    #[test]
    fn a_bookmark_never_overtakes_a_queued_event() {
        let mut lab = Lab::new();
        let mut watch = lab
            .store
            .watch(
                resource("configmaps"),
                &ListOptions {
                    resource_version: Some(lab.store.resource_version().to_string()),
                    allow_bookmarks: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let b = lab
            .store
            .bookmark_for(resource("configmaps"), &watch)
            .unwrap();
        assert_eq!(b.resource_version, lab.store.resource_version());
        lab.create("configmaps", "default", cm("a", "1")).unwrap();
        assert!(lab
            .store
            .bookmark_for(resource("configmaps"), &watch)
            .is_none());
        let event = watch.live.try_recv().unwrap();
        let b = lab
            .store
            .bookmark_for(resource("configmaps"), &watch)
            .unwrap();
        assert_eq!(b.resource_version, event.resource_version);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    /// One random write against a small set of names.
    #[derive(Clone, Debug)]
    enum Op {
        Create(u8, u8, u8),
        Update(u8, u8, u8),
        Delete(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3u8, 0..6u8, 0..3u8).prop_map(|(n, i, l)| Op::Create(n, i, l)),
            (0..3u8, 0..6u8, 0..3u8).prop_map(|(n, i, l)| Op::Update(n, i, l)),
            (0..3u8, 0..6u8).prop_map(|(n, i)| Op::Delete(n, i)),
        ]
    }

    const NAMESPACES: [&str; 3] = ["default", "ns-a", "ns-b"];

    fn apply(lab: &mut Lab, op: &Op) {
        let labelled = |i: u8, l: u8| json!({"metadata": {"name": format!("o{i}"), "labels": {"tier": format!("t{l}")}}, "data": {"l": l.to_string()}});
        // Errors (exists, not found) are part of the game: they change nothing.
        let _ = match *op {
            Op::Create(n, i, l) => lab.create("configmaps", NAMESPACES[n as usize], labelled(i, l)),
            Op::Update(n, i, l) => lab.update(
                "configmaps",
                NAMESPACES[n as usize],
                &format!("o{i}"),
                labelled(i, l),
                None,
            ),
            Op::Delete(n, i) => lab.delete(
                "configmaps",
                NAMESPACES[n as usize],
                &format!("o{i}"),
                DeleteOptions::default(),
            ),
        };
    }

    fn lab_with_namespaces() -> Lab {
        let mut lab = Lab::new();
        for ns in &NAMESPACES[1..] {
            lab.create("namespaces", "", json!({"metadata": {"name": ns}}))
                .unwrap();
        }
        lab
    }

    /// Timings, not assertions (run with `--ignored --nocapture`): 50k pods
    /// listed as kubectl lists them (pages of 500) next to one full list,
    /// and one Service change fanned out to 10 watchers of 10k Services.
    #[test]
    #[ignore]
    fn bench_paged_list_and_fan_out() {
        use std::time::Instant;
        let mut lab = Lab::with(Box::new(AdmitAll), 10_000);
        for n in 0..50 {
            lab.create(
                "namespaces",
                "",
                json!({"metadata": {"name": format!("ns-{n}")}}),
            )
            .unwrap();
        }
        let t = Instant::now();
        for i in 0..50_000 {
            lab.create(
                "pods",
                &format!("ns-{}", i % 50),
                running_pod(&format!("pod-{i}")),
            )
            .unwrap();
        }
        let created = t.elapsed();
        let t = Instant::now();
        let full = lab
            .store
            .list(resource("pods"), &ListOptions::default())
            .unwrap();
        let one = t.elapsed();
        let t = Instant::now();
        let (mut token, mut seen, mut pages) = (None, 0, 0);
        loop {
            let page = lab
                .store
                .list(
                    resource("pods"),
                    &ListOptions {
                        limit: Some(500),
                        continue_token: token.take(),
                        ..Default::default()
                    },
                )
                .unwrap();
            seen += page.items.len();
            pages += 1;
            match page.continue_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let paged = t.elapsed();
        assert_eq!((seen, full.items.len()), (50_000, 50_000));
        println!(
            "50k pods: created in {created:?}; one list {one:?}; {pages} pages of 500 {paged:?} \
             (paged/one = {:.1})",
            paged.as_secs_f64() / one.as_secs_f64()
        );

        for i in 0..10_000 {
            lab.create(
                "services",
                "ns-0",
                json!({"metadata": {"name": format!("svc-{i}"), "labels": {"app": "x"}}, "spec": {"ports": [{"port": 80}]}}),
            )
            .unwrap();
        }
        let mut watches: Vec<Watch> = (0..10)
            .map(|i| {
                let selector = (i % 2 == 0).then(|| "app=x".to_owned());
                lab.store
                    .watch(
                        resource("services"),
                        &ListOptions {
                            resource_version: Some(lab.store.resource_version().to_string()),
                            label_selector: selector,
                            ..Default::default()
                        },
                    )
                    .unwrap()
            })
            .collect();
        let mut worst = std::time::Duration::ZERO;
        for round in 0..100 {
            let t = Instant::now();
            lab.update(
                "services",
                "ns-0",
                "svc-5000",
                json!({"metadata": {"name": "svc-5000", "labels": {"app": "x"}}, "spec": {"ports": [{"port": 1000 + round}]}}),
                None,
            )
            .unwrap();
            for w in &mut watches {
                assert!(w.live.try_recv().is_ok());
            }
            worst = worst.max(t.elapsed());
        }
        println!("10k services, one change to 10 watchers: worst of 100 rounds {worst:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn pages_concatenated_are_the_list(
            ops in proptest::collection::vec(op(), 0..80),
            limit in 1usize..7,
            namespace in proptest::option::of(0..3usize),
            selector in proptest::option::of(0..3u8),
        ) {
            let mut lab = lab_with_namespaces();
            for op in &ops {
                apply(&mut lab, op);
            }
            let base = ListOptions {
                namespace: namespace.map(|n| NAMESPACES[n].to_owned()),
                label_selector: selector.map(|l| format!("tier=t{l}")),
                ..Default::default()
            };
            let full = lab.store.list(resource("configmaps"), &base).unwrap();
            let mut paged = Vec::new();
            let mut token = None;
            loop {
                let page = lab.store.list(resource("configmaps"), &ListOptions {
                    limit: Some(limit),
                    continue_token: token.clone(),
                    ..base.clone()
                }).unwrap();
                prop_assert!(page.items.len() <= limit);
                prop_assert_eq!(page.resource_version, full.resource_version);
                if selector.is_none() {
                    if let Some(remaining) = page.remaining_item_count {
                        prop_assert_eq!(
                            remaining as usize,
                            full.items.len() - paged.len() - page.items.len()
                        );
                    }
                }
                paged.extend(page.items);
                match page.continue_token {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            let names = |items: &[Arc<Value>]| items.iter().map(|o| key_text(o)).collect::<Vec<_>>();
            prop_assert_eq!(names(&paged), names(&full.items));
            let mut sorted = names(&full.items);
            sorted.sort_by(|a, b| {
                let split = |s: &str| s.split_once('/').map(|(n, m)| (n.to_owned(), m.to_owned()));
                split(a).cmp(&split(b))
            });
            prop_assert_eq!(names(&full.items), sorted);
        }

        #[test]
        fn a_watch_from_a_list_replays_onto_the_final_list(
            before in proptest::collection::vec(op(), 0..30),
            after in proptest::collection::vec(op(), 0..60),
            namespace in proptest::option::of(0..3usize),
            selector in proptest::option::of(0..3u8),
        ) {
            let mut lab = lab_with_namespaces();
            for op in &before {
                apply(&mut lab, op);
            }
            let options = ListOptions {
                namespace: namespace.map(|n| NAMESPACES[n].to_owned()),
                label_selector: selector.map(|l| format!("tier=t{l}")),
                ..Default::default()
            };
            let start = lab.store.list(resource("configmaps"), &options).unwrap();
            // Half the later writes before the watch starts (backlog), half after (live).
            let (early, late) = after.split_at(after.len() / 2);
            for op in early {
                apply(&mut lab, op);
            }
            let mut watch = lab.store.watch(resource("configmaps"), &ListOptions {
                resource_version: Some(start.resource_version.to_string()),
                ..options.clone()
            }).unwrap();
            for op in late {
                apply(&mut lab, op);
            }
            let mut state: BTreeMap<String, Value> = start
                .items
                .iter()
                .map(|o| (key_text(o), (**o).clone()))
                .collect();
            let mut last_rv = start.resource_version;
            for event in drain(&mut watch) {
                prop_assert!(event.resource_version > last_rv);
                last_rv = event.resource_version;
                prop_assert_eq!(rv_of(&event.object), event.resource_version);
                let k = key_text(&event.object);
                match event.kind {
                    EventType::Added => prop_assert!(state.insert(k, (*event.object).clone()).is_none()),
                    EventType::Modified => prop_assert!(state.insert(k, (*event.object).clone()).is_some()),
                    EventType::Deleted => prop_assert!(state.remove(&k).is_some()),
                    EventType::Bookmark => {}
                    EventType::Error => prop_assert!(false, "no compaction here"),
                }
            }
            let end = lab.store.list(resource("configmaps"), &options).unwrap();
            let end: BTreeMap<String, Value> = end.items.iter().map(|o| (key_text(o), (**o).clone())).collect();
            prop_assert_eq!(state, end);
        }
    }
}
