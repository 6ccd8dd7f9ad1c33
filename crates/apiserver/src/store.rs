//! The object store: every object as JSON, one monotonic resourceVersion
//! over all of them (as etcd's revision), and a bounded history of events
//! so that a watch can start from a version the client already has.
//!
//! Pure and synchronous: no HTTP, no clock of its own (the caller passes
//! `now`), no randomness beyond what the caller hands in — tests drive it
//! directly. The HTTP layer maps requests onto these calls.

use std::sync::Arc;

use serde_json::Value;

use crate::error::ApiError;
use crate::resources::{Resource, Subresource};

/// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` as a watch sends them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
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

/// The store. Cheap to share (`Arc<Store>`); every call locks briefly.
pub struct Store {
    _private: (),
}

impl Store {
    /// An empty store whose history keeps the last `history` events.
    pub fn new(_admission: Box<dyn Admission>, _history: usize) -> Store {
        Store { _private: () }
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        0
    }

    pub fn get(
        &self,
        resource: &Resource,
        _namespace: &str,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        Err(ApiError::not_found(resource, name))
    }

    pub fn list(&self, _resource: &Resource, _options: &ListOptions) -> Result<List, ApiError> {
        Err(ApiError::internal("store: not yet"))
    }

    /// POST: `namespace` from the URL (the object's own must agree or be empty).
    pub fn create(
        &self,
        _resource: &Resource,
        _namespace: &str,
        _object: Value,
        _ctx: &mut WriteContext<'_>,
    ) -> Result<Arc<Value>, ApiError> {
        Err(ApiError::internal("store: not yet"))
    }

    /// PUT of the object or of a subresource (`status`: only `.status` changes;
    /// main resource: `.status` is kept). A stale `metadata.resourceVersion` is 409.
    pub fn update(
        &self,
        _resource: &Resource,
        _namespace: &str,
        _name: &str,
        _object: Value,
        _subresource: Option<Subresource>,
        _ctx: &mut WriteContext<'_>,
    ) -> Result<Arc<Value>, ApiError> {
        Err(ApiError::internal("store: not yet"))
    }

    /// Read, change with `change`, write back — retried on a concurrent
    /// write, as kube-apiserver's patch does.
    pub fn modify(
        &self,
        _resource: &Resource,
        _namespace: &str,
        _name: &str,
        _subresource: Option<Subresource>,
        _change: &mut dyn FnMut(&Value) -> Result<Value, ApiError>,
        _ctx: &mut WriteContext<'_>,
    ) -> Result<Arc<Value>, ApiError> {
        Err(ApiError::internal("store: not yet"))
    }

    /// DELETE: graceful for pods (sets `deletionTimestamp`, the object stays
    /// until deleted again with grace 0), immediate otherwise.
    pub fn delete(
        &self,
        _resource: &Resource,
        _namespace: &str,
        name: &str,
        _options: &DeleteOptions,
        _ctx: &mut WriteContext<'_>,
    ) -> Result<Arc<Value>, ApiError> {
        Err(ApiError::internal(format!("store: not yet ({name})")))
    }

    /// A `BOOKMARK` event carrying the current resourceVersion, for the
    /// periodic bookmarks of watches that allow them.
    pub fn bookmark(&self, resource: &Resource) -> Event {
        let rv = self.resource_version();
        Event {
            kind: EventType::Bookmark,
            object: Arc::new(serde_json::json!({
                "kind": resource.kind,
                "apiVersion": resource.api_version(),
                "metadata": {"resourceVersion": rv.to_string()},
            })),
            previous: None,
            resource_version: rv,
        }
    }

    pub fn watch(&self, _resource: &Resource, _options: &ListOptions) -> Result<Watch, ApiError> {
        Err(ApiError::internal("store: not yet"))
    }
}
