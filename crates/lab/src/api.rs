//! The lab's Kubernetes API: the controller runs strait's API server, and
//! its store is the cluster's truth. kubectl (with the kubeconfig at
//! `/run/strait/NAME/kubeconfig`) and `strait lab apply` write the desired
//! objects there; each round the controller reads them, runs the standalone
//! controllers, and writes back what it made and saw — Pods of Deployments
//! with their status, EndpointSlices, Nodes (Service addresses are
//! allocated in the write itself: `crate::alloc`) —
//! so that `kubectl get` shows the cluster as it is.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use strait_apiserver::auth::{Tokens, UserInfo};
use strait_apiserver::server::{PodLogs, Server, ServerConfig};
use strait_apiserver::store::{DeleteOptions, ListOptions, Store};
use strait_apiserver::tls::Pki;
use strait_apiserver::{Resource, Subresource, RESOURCES};
use strait_model::controllers::LABEL_MANAGED_BY;
use strait_model::{parse_str_with, Admission, ClusterState, Format, Object, Origin};

use crate::layout::Layout;
use crate::{Error, Result};

/// How many events the API server's watch history keeps.
const HISTORY: usize = 100_000;

/// Where the lab's nodes reach the control plane: the underlay's gateway
/// address, in the underlay's namespace, on kube-apiserver's port.
pub const CONTROL_PLANE: ([u8; 4], u16) = ([172, 18, 0, 1], 6443);

/// The identities and least-privilege roles strait runs with in a real
/// cluster: the lab's agents and DNS are held to the very same RBAC.
const DEPLOY_RBAC: &str = include_str!("../../../deploy/00-rbac.yaml");

/// The service accounts the lab gives tokens to: (namespace, name).
const AGENT_ACCOUNT: (&str, &str) = ("kube-system", "strait");
const DNS_ACCOUNT: (&str, &str) = ("kube-system", "strait-dns");
const INGRESS_ACCOUNT: (&str, &str) = ("kube-system", "strait-ingress");

/// One stored object: its kind, namespace and name.
type Key = (&'static str, String, String);

fn resource_of(key: &Key) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.kind == key.0)
}

/// The API server of a lab and what the controller remembers of its writes.
pub struct LabApi {
    server: Option<Server>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Objects `lab up -f` put there (desired.json) as they were put:
    /// deleted when they leave it, written again only when they change.
    imported: BTreeMap<Key, Value>,
    /// What the controller last wrote of each object, and the
    /// resourceVersion that write got: unchanged, it is not written again.
    published: BTreeMap<Key, (Value, String)>,
    /// The store's version after the controller's own last write.
    seen: u64,
    /// The last read of the desired objects and of the pods being deleted,
    /// at the store version it was made: read again only when the store
    /// changed (a refused object is logged once per change, not per round).
    read: Option<Read>,
}

/// One read of the store by the controller.
struct Read {
    resource_version: u64,
    desired: Vec<(Object, Origin)>,
    leaving: BTreeSet<(String, String)>,
}

/// `kubectl logs` reads the container logs the lab keeps.
struct LabLogs {
    layout: Layout,
}

impl PodLogs for LabLogs {
    fn log(&self, namespace: &str, name: &str, container: Option<&str>) -> Result<Vec<u8>, String> {
        let dir = self.layout.pod_dir(namespace, name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|_| format!("pod {namespace}/{name} is not running"))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        files.sort();
        let file = match container {
            Some(c) => files
                .into_iter()
                .find(|p| p.file_stem().is_some_and(|s| s == c))
                .ok_or_else(|| format!("container {c} is not valid for pod {name}"))?,
            None => files
                .into_iter()
                .next()
                .ok_or_else(|| format!("pod {namespace}/{name} has no log yet"))?,
        };
        read_tail(&file, MAX_LOG_BYTES).map_err(|e| format!("cannot read the log: {e}"))
    }
}

/// The most of a container's log one `kubectl logs` gets: its end, as
/// `--limit-bytes` would (a log grows without bound; a reply must not).
const MAX_LOG_BYTES: u64 = 16 * 1024 * 1024;

/// The last `max` bytes of `path`.
fn read_tail(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut out = Vec::new();
    file.take(max).read_to_end(&mut out)?;
    Ok(out)
}

impl LabApi {
    /// Start the API server on `listen` (port 0: any) and, inside the
    /// `underlay` namespace, on [`CONTROL_PLANE`]; write the admin
    /// kubeconfig and the nodes' (a service-account token each for the
    /// agent, DNS and Ingress controller, held to `deploy/`'s RBAC) beside the lab's other files.
    pub fn start(
        layout: &Layout,
        listen: SocketAddr,
        underlay: &strait_linux::NetNs,
        extra_hosts: &[String],
        cluster: &strait_model::controllers::ClusterConfig,
    ) -> Result<LabApi> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strait-apiserver")
            .enable_all()
            .build()
            .map_err(crate::error::io("start the API server's runtime"))?;
        let control_plane = SocketAddr::from(CONTROL_PLANE);
        let mut hosts: Vec<String> = vec![
            "127.0.0.1".into(),
            "localhost".into(),
            control_plane.ip().to_string(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
        ];
        hosts.extend_from_slice(extra_hosts);
        let pki = Pki::create(&hosts).map_err(|e| Error::Step(format!("the lab's CA: {e}")))?;
        // Bound from a thread inside the underlay: the socket stays there.
        let inside = underlay
            .run(move || std::net::TcpListener::bind(control_plane))?
            .map_err(crate::error::io(format!(
                "listen on {control_plane} in the underlay"
            )))?;
        let agent_token = (strait_apiserver::tls::new_token(), AGENT_ACCOUNT);
        let dns_token = (strait_apiserver::tls::new_token(), DNS_ACCOUNT);
        let ingress_token = (strait_apiserver::tls::new_token(), INGRESS_ACCOUNT);
        let tokens = Tokens {
            tokens: [&agent_token, &dns_token, &ingress_token]
                .iter()
                .map(|(t, (ns, name))| (t.clone(), UserInfo::service_account(ns, name)))
                .collect(),
        };
        let server = runtime
            .block_on(Server::start(ServerConfig {
                listen,
                pki,
                tokens,
                // Service addresses are allocated in the write, as
                // kube-apiserver does, by the controllers' own rules.
                admission: Box::new(crate::alloc::LabAdmission::new(cluster.clone())),
                history: HISTORY,
                extra_listeners: vec![inside],
            }))
            .map_err(|e| Error::Step(format!("the API server: {e}")))?;
        seed_rbac(&server)?;
        let url = format!("https://{control_plane}");
        for ((token, (ns, name)), path) in [
            (&agent_token, layout.agent_kubeconfig()),
            (&dns_token, layout.dns_kubeconfig()),
            (&ingress_token, layout.ingress_kubeconfig()),
        ] {
            let user = format!("system:serviceaccount:{ns}:{name}");
            let text = strait_apiserver::tls::kubeconfig(
                "strait-lab",
                &url,
                server.ca_cert_pem(),
                &user,
                token,
            );
            Layout::write_private(&path, text.as_bytes())?;
        }
        server.set_logs(Arc::new(LabLogs {
            layout: layout.clone(),
        }));
        Layout::write_private(&layout.kubeconfig(), server.admin_kubeconfig().as_bytes())?;
        tracing::info!(address = %server.addr(), kubeconfig = %layout.kubeconfig().display(), "API server serving");
        Ok(LabApi {
            server: Some(server),
            runtime: Some(runtime),
            imported: BTreeMap::new(),
            published: BTreeMap::new(),
            seen: 0,
            read: None,
        })
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("running until dropped")
    }

    pub fn store(&self) -> &Arc<Store> {
        self.server().store()
    }

    /// Whether the store changed since the controller last looked, waiting
    /// until `until` at most.
    pub fn wait_change(&self, until: Instant) -> bool {
        loop {
            if self.store().resource_version() != self.seen {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(Duration::from_millis(5)));
        }
    }

    /// Make the store hold `objects` (what `lab up -f` wrote to
    /// desired.json, imported once when the controller starts): create what
    /// is new, update what changed, delete what an earlier import put there
    /// and is gone now. A refusal is logged and keeps the stored version.
    pub fn import(&mut self, objects: &[(Object, Origin)]) {
        let mut now = BTreeMap::new();
        // Namespaces first, and those the objects name but nobody defines
        // are made, as `lab apply` always allowed (kubectl would refuse);
        // then IngressClasses (an Ingress created before the default class
        // would not get it, as with kube-apiserver's admission).
        let mut ordered: Vec<&Object> = objects.iter().map(|(o, _)| o).collect();
        ordered.sort_by_key(|o| match o.kind() {
            strait_model::Kind::Namespace => 0,
            strait_model::Kind::IngressClass => 1,
            _ => 2,
        });
        let namespaces = Resource::by_plural("", "v1", "namespaces").expect("served");
        let named: BTreeSet<String> = objects
            .iter()
            .filter_map(|(o, _)| o.metadata().namespace.clone())
            .filter(|ns| !ns.is_empty())
            .collect();
        for ns in named {
            if self.store().get(namespaces, "", &ns).is_err() {
                let value = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                let store = self.store().clone();
                if let Err(e) = self
                    .server()
                    .with_write_context(|ctx| store.create(namespaces, "", value, ctx))
                {
                    tracing::error!("namespace {ns}: {e}");
                }
            }
        }
        for object in ordered {
            let Some((resource, value)) = to_value(object) else {
                continue;
            };
            let key = key_of(resource, &value);
            let unchanged = self.imported.get(&key) == Some(&value)
                && self.store().get(resource, &key.1, &key.2).is_ok();
            if !unchanged {
                if let Err(e) = self.put(resource, &key, value.clone(), false) {
                    tracing::error!("{} {}/{}: {e}", resource.kind, key.1, key.2);
                }
            }
            now.insert(key, value);
        }
        let gone: Vec<Key> = self
            .imported
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.delete(&key);
        }
        self.imported = now;
        self.seen = self.store().resource_version();
    }

    /// The objects users keep in the store (everything but what the
    /// controllers make), as the model reads them.
    pub fn desired(&mut self) -> Result<Vec<(Object, Origin)>> {
        Ok(self.read()?.desired.clone())
    }

    /// The store as the controller reads it, again only when it changed.
    fn read(&mut self) -> Result<&Read> {
        let store = self.store().clone();
        let resource_version = store.resource_version();
        if self
            .read
            .as_ref()
            .is_some_and(|r| r.resource_version == resource_version)
        {
            return Ok(self.read.as_ref().expect("checked"));
        }
        let mut items = Vec::new();
        let mut leaving = BTreeSet::new();
        for resource in RESOURCES.iter().filter(|r| r.model_kind().is_some()) {
            let list = store
                .list(resource, &ListOptions::default())
                .map_err(|e| Error::Step(format!("list {}: {e}", resource.plural)))?;
            if resource.kind == "Pod" {
                leaving.extend(
                    list.items
                        .iter()
                        .filter(|p| p["metadata"]["deletionTimestamp"].is_string())
                        .map(|p| {
                            let meta = &p["metadata"];
                            (
                                meta["namespace"].as_str().unwrap_or("").to_owned(),
                                meta["name"].as_str().unwrap_or("").to_owned(),
                            )
                        }),
                );
            }
            items.extend(list.items.into_iter().filter(|o| !made_by_controllers(o)));
        }
        // Written as text: the items are shared, not copied.
        let mut text = String::from(r#"{"apiVersion":"v1","kind":"List","items":["#);
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(
                &serde_json::to_string(item.as_ref()).map_err(|e| Error::Step(e.to_string()))?,
            );
        }
        text.push_str("]}");
        let loaded = parse_str_with("the API server", &text, Format::Json, Admission::PerObject)?;
        for refusal in &loaded.refused {
            tracing::error!("{}; left out", refusal.error);
        }
        Ok(self.read.insert(Read {
            resource_version,
            desired: loaded.objects,
            leaving,
        }))
    }

    /// Write what the controllers made and the lab saw: objects made by
    /// controllers (created, replaced, deleted when gone), pod status,
    /// allocated Service addresses, and objects every cluster has.
    pub fn publish(&mut self, actual: &ClusterState) {
        let mut made = BTreeSet::new();
        for object in actual.objects() {
            let Some((resource, mut value)) = to_value(&object) else {
                continue;
            };
            if resource.kind == "Deployment" {
                value["status"] = deployment_status(actual, &value);
            }
            let key = key_of(resource, &value);
            let controllers = made_by_controllers(&value);
            if controllers {
                made.insert(key.clone());
            }
            if let Err(e) = self.put(resource, &key, value, true) {
                tracing::warn!("publish {} {}/{}: {e}", resource.kind, key.1, key.2);
            }
        }
        // What controllers made before and no longer make.
        for resource in RESOURCES.iter().filter(|r| r.model_kind().is_some()) {
            let Ok(list) = self.store().list(resource, &ListOptions::default()) else {
                continue;
            };
            for item in list.items.iter().filter(|o| made_by_controllers(o)) {
                let key = key_of(resource, item);
                if !made.contains(&key) {
                    self.delete(&key);
                }
            }
        }
        self.seen = self.store().resource_version();
    }

    /// Pods deleted through the API and still in their grace period: the
    /// lab stops them (a Deployment's pod is then made again, as its
    /// ReplicaSet would replace it).
    pub fn leaving_pods(&mut self) -> BTreeSet<(String, String)> {
        match self.read() {
            Ok(read) => read.leaving.clone(),
            Err(e) => {
                tracing::error!("{e}");
                BTreeSet::new()
            }
        }
    }

    /// A pod whose deletion the lab finished: gone from the store.
    pub fn pod_stopped(&mut self, namespace: &str, name: &str) {
        let key = ("Pod", namespace.to_owned(), name.to_owned());
        self.delete(&key);
        self.seen = self.store().resource_version();
    }

    fn delete(&mut self, key: &Key) {
        let Some(resource) = resource_of(key) else {
            return;
        };
        let options = DeleteOptions {
            grace_period_seconds: Some(0),
            ..DeleteOptions::default()
        };
        let store = self.server().store().clone();
        let result = self
            .server()
            .with_write_context(|ctx| store.delete(resource, &key.1, &key.2, &options, ctx));
        match result {
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => tracing::warn!("delete {} {}/{}: {e}", resource.kind, key.1, key.2),
        }
        self.published.remove(key);
    }

    /// Create `value`, or bring the stored object to it. `observed`: the
    /// lab's own observations (controller outputs, status, allocations)
    /// rather than a user's object.
    fn put(
        &mut self,
        resource: &'static Resource,
        key: &Key,
        value: Value,
        observed: bool,
    ) -> Result<(), String> {
        let store = self.server().store().clone();
        let current = match store.get(resource, &key.1, &key.2) {
            Ok(c) => Some(c),
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(e.to_string()),
        };
        let Some(current) = current else {
            let created = self
                .server()
                .with_write_context(|ctx| store.create(resource, &key.1, value.clone(), ctx))
                .map_err(|e| e.to_string())?;
            if resource.has(Subresource::Status) && value.get("status").is_some() && observed {
                self.write_status(resource, key, &created, &value)?;
            }
            if observed {
                self.remember(key, value, &store, resource);
            }
            return Ok(());
        };
        let rv = current["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if observed
            && self
                .published
                .get(key)
                .is_some_and(|(sent, at)| *sent == value && *at == rv)
        {
            return Ok(());
        }
        let new = if observed && !made_by_controllers(&value) {
            // A user's object: only what the lab decides goes in.
            merge_observed(resource, &current, &value)
        } else {
            // The server keeps its identity of the object.
            let mut new = value.clone();
            for field in ["resourceVersion", "uid", "creationTimestamp"] {
                new["metadata"][field] = current["metadata"][field].clone();
            }
            Some(new)
        };
        if let Some(new) = new.filter(|n| !same_object(&current, n)) {
            self.server()
                .with_write_context(|ctx| {
                    store.update(resource, &key.1, &key.2, new.clone(), None, ctx)
                })
                .map_err(|e| e.to_string())?;
        }
        if observed && resource.has(Subresource::Status) && value.get("status").is_some() {
            let now = store
                .get(resource, &key.1, &key.2)
                .map_err(|e| e.to_string())?;
            if now.get("status") != value.get("status") {
                self.write_status(resource, key, &now, &value)?;
            }
        }
        if observed {
            self.remember(key, value, &store, resource);
        }
        Ok(())
    }

    fn write_status(
        &self,
        resource: &Resource,
        key: &Key,
        current: &Value,
        value: &Value,
    ) -> Result<(), String> {
        let store = self.server().store().clone();
        let mut with_status = (*current).clone();
        with_status["status"] = value["status"].clone();
        self.server()
            .with_write_context(|ctx| {
                store.update(
                    resource,
                    &key.1,
                    &key.2,
                    with_status,
                    Some(Subresource::Status),
                    ctx,
                )
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn remember(&mut self, key: &Key, value: Value, store: &Store, resource: &Resource) {
        if let Ok(now) = store.get(resource, &key.1, &key.2) {
            let rv = now["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            self.published.insert(key.clone(), (value, rv));
        }
    }
}

/// `deploy/`'s ServiceAccounts, ClusterRoles and Bindings, in the store.
fn seed_rbac(server: &Server) -> Result<()> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(DEPLOY_RBAC)
        .map_err(|e| Error::Step(format!("deploy/00-rbac.yaml: {e}")))?;
    for document in documents.into_iter().filter(Value::is_object) {
        let api_version = document["apiVersion"].as_str().unwrap_or("").to_owned();
        let kind = document["kind"].as_str().unwrap_or("").to_owned();
        let resource = Resource::by_kind(&api_version, &kind)
            .ok_or_else(|| Error::Step(format!("deploy/00-rbac.yaml: {kind} is not served")))?;
        let ns = document["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let store = server.store().clone();
        server
            .with_write_context(|ctx| store.create(resource, &ns, document, ctx))
            .map_err(|e| Error::Step(format!("deploy/00-rbac.yaml: {kind}: {e}")))?;
    }
    Ok(())
}

impl Drop for LabApi {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// A Deployment's status as the deployment controller would report it,
/// from the pods of its ReplicaSet (`NAME-HASH`) that are not leaving.
fn deployment_status(actual: &ClusterState, deployment: &Value) -> Value {
    let ns = deployment["metadata"]["namespace"].as_str().unwrap_or("");
    let name = deployment["metadata"]["name"].as_str().unwrap_or("");
    let prefix = format!("{name}-");
    let mut replicas = 0;
    let mut ready = 0;
    for pod in actual.pods.in_namespace(ns) {
        let meta = &pod.metadata;
        let owned = meta.owner_references.iter().flatten().any(|o| {
            o.kind == "ReplicaSet"
                && o.name
                    .strip_prefix(&prefix)
                    .is_some_and(|hash| !hash.contains('-'))
        });
        if !owned || meta.deletion_timestamp.is_some() {
            continue;
        }
        replicas += 1;
        if pod.is_ready() {
            ready += 1;
        }
    }
    let generation = deployment["metadata"]["generation"].clone();
    serde_json::json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": replicas - ready,
    })
}

/// An object of the model as the API serves it.
fn to_value(object: &Object) -> Option<(&'static Resource, Value)> {
    let kind = object.kind();
    let resource = Resource::by_kind(kind.api_version(), kind.as_str())?;
    let mut value = serde_json::to_value(object).ok()?;
    value["apiVersion"] = kind.api_version().into();
    value["kind"] = kind.as_str().into();
    Some((resource, value))
}

fn key_of(resource: &'static Resource, value: &Value) -> Key {
    let meta = &value["metadata"];
    (
        resource.kind,
        meta["namespace"].as_str().unwrap_or("").to_owned(),
        meta["name"].as_str().unwrap_or("").to_owned(),
    )
}

/// Made by the standalone controllers (and so made again each round):
/// Pods of a Deployment's ReplicaSet, EndpointSlices of the EndpointSlice
/// (or mirroring) controller, Endpoints of a Service.
fn made_by_controllers(object: &Value) -> bool {
    let kind = object["kind"].as_str().unwrap_or("");
    let owners = object["metadata"]["ownerReferences"].as_array();
    let owned_by = |k: &str| owners.is_some_and(|o| o.iter().any(|r| r["kind"] == k));
    match kind {
        "Pod" => owned_by("ReplicaSet"),
        "EndpointSlice" => object["metadata"]["labels"][LABEL_MANAGED_BY].is_string(),
        "Endpoints" => owned_by("Service"),
        _ => false,
    }
}

/// The fields the lab decides of a user's object: a Service's allocated
/// addresses and ports, a Pod's node. `None` when the stored object
/// already has them.
fn merge_observed(resource: &Resource, current: &Value, observed: &Value) -> Option<Value> {
    let mut new = current.clone();
    let mut changed = false;
    let mut take = |pointer: &str, new: &mut Value| {
        let seen = observed.pointer(pointer);
        let stored = new.pointer(pointer);
        if seen.is_some() && stored.is_none_or(Value::is_null) {
            set_pointer(new, pointer, seen.cloned().unwrap_or_default());
            changed = true;
        }
    };
    match resource.kind {
        "Service" => {
            for p in [
                "/spec/clusterIP",
                "/spec/clusterIPs",
                "/spec/ipFamilies",
                "/spec/healthCheckNodePort",
            ] {
                take(p, &mut new);
            }
            // Node ports are allocated per port.
            let ports = observed
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .cloned();
            if let (Some(ports), Some(stored)) = (
                ports,
                new.pointer_mut("/spec/ports").and_then(Value::as_array_mut),
            ) {
                for (s, o) in stored.iter_mut().zip(ports.iter()) {
                    if s.get("nodePort").is_none_or(Value::is_null)
                        && o.get("nodePort").is_some_and(|n| !n.is_null())
                    {
                        s["nodePort"] = o["nodePort"].clone();
                        changed = true;
                    }
                }
            }
        }
        "Pod" => take("/spec/nodeName", &mut new),
        _ => {}
    }
    changed.then_some(new)
}

fn set_pointer(value: &mut Value, pointer: &str, new: Value) {
    let mut at = value;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !at.is_object() {
            *at = Value::Object(Default::default());
        }
        let map = at.as_object_mut().expect("made an object");
        if i + 1 == parts.len() {
            map.insert((*part).to_owned(), new);
            return;
        }
        at = map
            .entry((*part).to_owned())
            .or_insert(Value::Object(Default::default()));
    }
}

/// Equal but for what the server sets.
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
                "managedFields",
            ] {
                meta.remove(k);
            }
        }
        if let Some(o) = v.as_object_mut() {
            o.remove("status");
        }
        v
    };
    strip(a) == strip(b)
}
