//! [`KubeSource`]: the Kubernetes API as a [`Source`] of cluster state.
//!
//! One kube-runtime watcher per kind runs on a small tokio runtime of its
//! own; each event's object goes through the model's admission there and
//! is sent to the consumer's thread, where [`Cache`] keeps the snapshot.
//! [`Source::next`] takes every event that arrived (a burst while the
//! consumer was busy is one update) and hands out the snapshot with the
//! change set of what differs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use strait_agent::{Source, Update};
use strait_model::Kind;

use crate::admit::admit;
use crate::cache::{Admitted, Cache, Notice};
use crate::metrics::KubeMetrics;
use crate::{Error, Result};

/// Every kind a part of the node agent reads (the source's default). The
/// agent itself watches only what the parts it runs read: see
/// [`Options::agent`].
pub const AGENT_KINDS: &[Kind] = &[
    Kind::Service,
    Kind::EndpointSlice,
    Kind::Node,
    Kind::Namespace,
    Kind::Pod,
    Kind::NetworkPolicy,
    Kind::Ingress,
    Kind::IngressClass,
];

/// What the node agent watches when the API server serves it (looked up
/// in discovery at start): ClusterNetworkPolicy is a CRD a cluster may not
/// have installed, and a kind that is never listed would hold the first
/// update back forever.
pub const AGENT_OPTIONAL_KINDS: &[Kind] = &[Kind::ClusterNetworkPolicy];

/// What every node agent reads: the Service proxy its Services and their
/// EndpointSlices, and Nodes (their addresses for NodePorts, whether this
/// node is being removed); the overlay and the CNI install read Nodes too.
/// kube-proxy watches no more (Pods' endpoints are in the EndpointSlices).
pub const PROXY_KINDS: &[Kind] = &[Kind::Service, Kind::EndpointSlice, Kind::Node];

/// What NetworkPolicy (`strait agent --network-policy`) reads besides:
/// pods (labels, addresses, named ports, node), namespaces (labels) and
/// the policies. Pods are most of a cluster's objects: a node that does
/// not enforce policy does not list them.
pub const POLICY_KINDS: &[Kind] = &[Kind::Namespace, Kind::Pod, Kind::NetworkPolicy];

/// What the DNS server reads: Services, their endpoints, and pods (pod
/// names, hostnames of headless Services).
pub const DNS_KINDS: &[Kind] = &[Kind::Service, Kind::EndpointSlice, Kind::Pod];

/// What the Ingress controller reads: its classes, the Ingresses, the
/// Services and endpoints they send to, and the `kubernetes.io/tls`
/// Secrets their `tls` names (an Ingress controller must read Secrets; the
/// node agent and DNS never do).
pub const INGRESS_KINDS: &[Kind] = &[
    Kind::IngressClass,
    Kind::Ingress,
    Kind::Service,
    Kind::EndpointSlice,
    Kind::Secret,
    // Their labels: a Gateway listener's `allowedRoutes.namespaces.selector`.
    Kind::Namespace,
];

/// What the Ingress controller watches when the API server serves it:
/// Gateway API is a set of CRDs a cluster may not have installed, and
/// Ingress must be served without them.
pub const INGRESS_OPTIONAL_KINDS: &[Kind] = &[
    Kind::GatewayClass,
    Kind::Gateway,
    Kind::HTTPRoute,
    Kind::ReferenceGrant,
];

/// Where the client's configuration comes from.
#[derive(Clone, Debug)]
pub enum ClientConfig {
    /// As kubectl and kube-proxy find it: `$KUBECONFIG`, `~/.kube/config`,
    /// else the pod's service account (in-cluster).
    Infer,
    /// A kubeconfig file.
    Kubeconfig(PathBuf),
    /// A kubeconfig's text (tests, the lab).
    KubeconfigYaml(String),
}

/// How the source watches.
#[derive(Clone, Debug)]
pub struct Options {
    pub kinds: Vec<Kind>,
    /// Kinds watched only if the API server serves them (discovery, once
    /// at start; a kind installed later needs a restart): one it does not
    /// serve counts as listed, with no object.
    pub optional: Vec<Kind>,
    /// Objects per page of a list: bounds the memory of one response.
    pub page_size: u32,
    /// How long the server keeps one watch request open (`timeoutSeconds`;
    /// `None`: kube-rs's default, 290 s); the watch then resumes from the
    /// last version it saw (a relist if that is 410 Gone).
    pub watch_timeout: Option<u32>,
}

impl Options {
    /// What the node agent watches: the kinds its parts read, no more.
    /// With NetworkPolicy, also ClusterNetworkPolicy where the API server
    /// serves it.
    pub fn agent(network_policy: bool) -> Options {
        let mut kinds = PROXY_KINDS.to_vec();
        let mut optional = Vec::new();
        if network_policy {
            kinds.extend_from_slice(POLICY_KINDS);
            optional.extend_from_slice(AGENT_OPTIONAL_KINDS);
        }
        Options {
            kinds,
            optional,
            ..Options::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kinds: AGENT_KINDS.to_vec(),
            optional: AGENT_OPTIONAL_KINDS.to_vec(),
            page_size: 500,
            watch_timeout: None,
        }
    }
}

/// One kind's events as the watch task sends them.
struct Message {
    kind: Kind,
    event: Event<Admitted>,
}

/// What `/healthz` reads: how fresh the applied state is. Shared between
/// the watch tasks (which queue events), the source and the consumer
/// (which say when what was queued is applied).
#[derive(Default)]
pub struct Health {
    inner: Mutex<HealthInner>,
    /// Woken when the API server answers a kind that was failing: the
    /// other kinds' watches stop backing off and retry.
    answered: tokio::sync::Notify,
}

#[derive(Default)]
struct HealthInner {
    /// Events sent by the watch tasks, and taken by the source.
    sent: u64,
    taken: u64,
    /// How many had been taken when the last update was handed out.
    handed_out: u64,
    /// Since when an event waits to be applied (`None`: nothing waits).
    queued_since: Option<Instant>,
    /// When the state the node has was last brought up to date.
    last_updated: Option<SystemTime>,
    /// Kinds whose watch fails now, with since when and why.
    failing: BTreeMap<Kind, (SystemTime, String)>,
}

/// A view of [`Health`] at one instant.
#[derive(Clone, Debug)]
pub struct HealthReport {
    /// When the node's state was last brought up to date (`None`: never,
    /// the first full sync is not done).
    pub last_updated: Option<SystemTime>,
    /// How long the oldest event not yet applied has waited.
    pub oldest_queued: Option<Duration>,
    /// Watches that fail now: kind, since when, why.
    pub failing: Vec<(Kind, SystemTime, String)>,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, HealthInner> {
        // A panic elsewhere while holding it leaves plain counters: use them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queued(&self) {
        let mut h = self.lock();
        h.sent += 1;
        h.queued_since.get_or_insert_with(Instant::now);
    }

    fn took(&self, n: u64) {
        self.lock().taken += n;
    }

    fn handing_out(&self) {
        let mut h = self.lock();
        h.handed_out = h.taken;
    }

    /// Everything taken so far is applied (or needed nothing).
    fn caught_up(&self, through: u64) {
        let mut h = self.lock();
        h.last_updated = Some(SystemTime::now());
        h.queued_since = if h.sent == through {
            None
        } else {
            // Later events wait; they arrived after this instant at the earliest.
            Some(Instant::now())
        };
    }

    /// The consumer applied the last update handed out.
    pub fn updated(&self) {
        let through = self.lock().handed_out;
        self.caught_up(through);
    }

    fn watch_ok(&self, kind: Kind) {
        let mut h = self.lock();
        if h.failing.remove(&kind).is_some() {
            drop(h);
            self.answered.notify_waiters();
        }
    }

    fn watch_failed(&self, kind: Kind, why: String) {
        let mut h = self.lock();
        let since = h.failing.get(&kind).map_or_else(SystemTime::now, |f| f.0);
        h.failing.insert(kind, (since, why));
    }

    pub fn report(&self) -> HealthReport {
        let h = self.lock();
        HealthReport {
            last_updated: h.last_updated,
            oldest_queued: h.queued_since.map(|t| t.elapsed()),
            failing: h
                .failing
                .iter()
                .map(|(k, (t, why))| (*k, *t, why.clone()))
                .collect(),
        }
    }
}

/// The Kubernetes API as a source of cluster state.
pub struct KubeSource {
    rx: Receiver<Message>,
    cache: Cache,
    health: Arc<Health>,
    metrics: Arc<KubeMetrics>,
    runtime: Option<tokio::runtime::Runtime>,
    /// For the few writes the agent makes (its Node's annotations).
    pub(crate) client: Client,
}

impl KubeSource {
    /// Connect (nothing is requested yet) and start the watches. Errors:
    /// no configuration to be found, or one that cannot make a client.
    pub fn start(config: ClientConfig, options: Options) -> Result<KubeSource> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strait-kube")
            .enable_all()
            .build()
            .map_err(|e| Error::Runtime(e.to_string()))?;
        let config = runtime.block_on(load_config(config))?;
        let health = Arc::new(Health::default());
        let mut kinds = options.kinds.clone();
        kinds.extend(
            options
                .optional
                .iter()
                .filter(|k| !options.kinds.contains(k)),
        );
        let client = {
            let _inside = runtime.enter();
            kube::client::ClientBuilder::try_from(config)
                .map_err(|e| Error::Client(e.to_string()))?
                .with_layer(&Observe::new(health.clone(), &kinds))
                .build()
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let metrics = Arc::new(KubeMetrics::default());
        for &kind in &kinds {
            let mut wc = watcher::Config::default().page_size(options.page_size);
            if let Some(t) = options.watch_timeout {
                wc = wc.timeout(t);
            }
            runtime.spawn(watch_kind(
                client.clone(),
                kind,
                !options.kinds.contains(&kind),
                wc,
                tx.clone(),
                health.clone(),
                metrics.clone(),
            ));
        }
        Ok(KubeSource {
            rx,
            cache: Cache::new(kinds.iter().copied()),
            health,
            metrics,
            runtime: Some(runtime),
            client,
        })
    }

    /// The runtime the watches run on (writes run there too).
    pub(crate) fn runtime(&self) -> Result<&tokio::runtime::Runtime> {
        self.runtime.as_ref().ok_or(Error::Stopped)
    }

    /// Freshness for `/healthz`; the consumer calls [`Health::updated`]
    /// once it applied an update.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    pub fn metrics(&self) -> Arc<KubeMetrics> {
        self.metrics.clone()
    }

    /// Objects refused by admission now, with why.
    pub fn refused(&self) -> usize {
        self.cache.refused().len()
    }

    /// Complete lists of `kind` so far (the first, and relists).
    pub fn full_lists(&self, kind: Kind) -> u64 {
        self.metrics.full_lists(kind)
    }

    /// Kinds still waiting for their first full list.
    pub fn unsynced(&self) -> Vec<Kind> {
        self.cache.unsynced()
    }

    fn handle(&mut self, m: Message) {
        let kind = m.kind;
        self.metrics.event(kind);
        for notice in self.cache.apply(kind, m.event) {
            match notice {
                Notice::Refused { message, kept, .. } => {
                    if kept {
                        tracing::error!("{message}; keeping its previous version");
                    } else {
                        tracing::error!("{message}; left out");
                    }
                }
                Notice::RefusedPolicyIsolates { key, message } => {
                    tracing::error!(
                        "{message}; until it is fixed, every pod of namespace {:?} is isolated both ways in its place (fail closed)",
                        key.namespace
                    );
                }
                Notice::Relisted { kind, changed } => {
                    self.metrics.relisted(kind);
                    tracing::info!(%kind, changed, "full list");
                }
            }
        }
        self.metrics.refused(self.cache.refused().len());
    }

    /// The next update, waiting at most `timeout` (`None`: forever).
    /// `Ok(None)`: the time ran out, or the watches ended (never, short
    /// of the runtime stopping).
    pub fn next_timeout(&mut self, timeout: Option<Duration>) -> Result<Option<Update>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if !self.cache.pending() {
                let m = match deadline {
                    None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    Some(d) => self
                        .rx
                        .recv_timeout(d.saturating_duration_since(Instant::now())),
                };
                match m {
                    Ok(m) => {
                        self.handle(m);
                        self.health.took(1);
                    }
                    Err(RecvTimeoutError::Timeout) => return Ok(None),
                    Err(RecvTimeoutError::Disconnected) => return Err(Error::Stopped),
                }
            }
            // Everything that came meanwhile: one update for a burst.
            let mut n = 0;
            while let Ok(m) = self.rx.try_recv() {
                self.handle(m);
                n += 1;
            }
            self.health.took(n);
            if let Some(update) = self.cache.take() {
                self.health.handing_out();
                self.metrics.update();
                return Ok(Some(update));
            }
            if self.cache.synced() {
                // What came changed nothing (a relist of the same objects):
                // the node is as up to date as it was.
                let taken = self.health.lock().taken;
                self.health.caught_up(taken);
            }
        }
    }
}

impl Source for KubeSource {
    fn next(&mut self) -> strait_agent::Result<Option<Update>> {
        match self.next_timeout(None) {
            Ok(u) => Ok(u),
            Err(Error::Stopped) => Ok(None),
            Err(e) => Err(strait_agent::Error::Input {
                message: e.to_string(),
            }),
        }
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        // Without waiting: dropping a runtime inside another one (a test's)
        // would panic, and the watches hold nothing to flush.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn load_config(config: ClientConfig) -> Result<kube::Config> {
    let options = kube::config::KubeConfigOptions::default();
    match config {
        ClientConfig::Infer => kube::Config::infer()
            .await
            .map_err(|e| Error::Config(e.to_string())),
        ClientConfig::Kubeconfig(path) => {
            let kc = kube::config::Kubeconfig::read_from(&path)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
        }
        ClientConfig::KubeconfigYaml(text) => {
            let kc = kube::config::Kubeconfig::from_yaml(&text)
                .map_err(|e| Error::Config(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::Config(e.to_string()))
        }
    }
}

/// The API resource of a kind strait reads.
pub fn api_resource(kind: Kind) -> Option<ApiResource> {
    Some(match kind {
        Kind::Service => ApiResource::erase::<Service>(&()),
        Kind::EndpointSlice => ApiResource::erase::<EndpointSlice>(&()),
        Kind::Node => ApiResource::erase::<Node>(&()),
        Kind::Namespace => ApiResource::erase::<Namespace>(&()),
        Kind::Pod => ApiResource::erase::<Pod>(&()),
        Kind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
        Kind::Ingress => ApiResource::erase::<Ingress>(&()),
        Kind::IngressClass => ApiResource::erase::<IngressClass>(&()),
        Kind::ClusterNetworkPolicy => ApiResource::erase::<strait_model::ClusterNetworkPolicy>(&()),
        // The Gateway API controller's input (CRDs a cluster may not have).
        Kind::GatewayClass => ApiResource::erase::<strait_model::GatewayClass>(&()),
        Kind::Gateway => ApiResource::erase::<strait_model::Gateway>(&()),
        Kind::HTTPRoute => ApiResource::erase::<strait_model::HTTPRoute>(&()),
        Kind::ReferenceGrant => ApiResource::erase::<strait_model::ReferenceGrant>(&()),
        // Controllers' input, not a node's: the API server's controllers
        // turn them into Pods and EndpointSlices.
        Kind::Deployment | Kind::Endpoints => return None,
        // The Ingress controller's certificates; watched only by what
        // serves TLS (not yet a part of the agent).
        Kind::Secret => ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
    })
}

/// Sees every answer of the API server on its way to kube-rs: a kind
/// whose list or watch request is answered 2xx again is no longer failing.
/// A watch that resumes after an outage brings no event by itself (kube-rs
/// says nothing when a re-watch works), so without this a recovered kind
/// would be reported failing until its next change.
#[derive(Clone)]
struct Observe {
    health: Arc<Health>,
    /// The resource (plural) of each watched kind.
    kinds: Arc<Vec<(String, Kind)>>,
}

impl Observe {
    fn new(health: Arc<Health>, kinds: &[Kind]) -> Observe {
        let kinds = kinds
            .iter()
            .filter_map(|&k| Some((api_resource(k)?.plural, k)))
            .collect();
        Observe {
            health,
            kinds: Arc::new(kinds),
        }
    }

    /// The watched kind a request's path lists or watches
    /// (`/api/v1/services`, `/apis/discovery.k8s.io/v1/endpointslices`).
    fn kind_of(&self, path: &str) -> Option<Kind> {
        let last = path.rsplit('/').next()?;
        self.kinds
            .iter()
            .find(|(plural, _)| plural == last)
            .map(|(_, k)| *k)
    }
}

impl<S> tower::Layer<S> for Observe {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            observe: self.clone(),
        }
    }
}

#[derive(Clone)]
struct Observed<S> {
    inner: S,
    observe: Observe,
}

type BoxedFuture<T, E> =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::result::Result<T, E>> + Send>>;

impl<S, B, R> tower::Service<hyper::Request<B>> for Observed<S>
where
    S: tower::Service<hyper::Request<B>, Response = hyper::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxedFuture<S::Response, S::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: hyper::Request<B>) -> Self::Future {
        let kind = self.observe.kind_of(request.uri().path());
        let health = self.observe.health.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            if let (Some(kind), Ok(response)) = (kind, &answer) {
                if response.status().is_success() {
                    health.watch_ok(kind);
                }
            }
            answer
        })
    }
}

/// Follow one kind until the runtime stops: events admitted and sent;
/// errors said (kube-runtime's default backoff spaces the retries, the
/// last state stays). An `optional` kind is first looked up in discovery;
/// one the API server does not serve is sent as an empty full list.
#[allow(clippy::too_many_arguments)]
async fn watch_kind(
    client: Client,
    kind: Kind,
    optional: bool,
    config: watcher::Config,
    tx: Sender<Message>,
    health: Arc<Health>,
    metrics: Arc<KubeMetrics>,
) {
    let Some(ar) = api_resource(kind) else {
        tracing::error!(%kind, "strait does not watch this kind");
        return;
    };
    let resource = ar.plural.clone();
    if optional && !served(&client, kind, &ar, &health).await {
        tracing::info!(
            "the API server does not serve {}/{resource}: {kind} not watched (restart the agent once it is installed)",
            ar.api_version
        );
        for event in [Event::Init, Event::InitDone] {
            health.queued();
            if tx.send(Message { kind, event }).is_err() {
                return;
            }
        }
        return;
    }
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let mut stream = std::pin::pin!(watcher::watcher(api, config));
    // kube-rs's (and client-go's) backoff: 0.8 s doubling to 30 s, with
    // jitter, reset by an event. Driven here rather than by
    // `default_backoff()` so that a wait ends early once the API server
    // answers another kind again: after an outage every kind comes back
    // at the first retry of any, not each at its own (up to 30 s later).
    let mut backoff = watcher::DefaultBackoff::default();
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => {
                kube::runtime::utils::Backoff::reset(&mut backoff);
                event
            }
            Err(e) => {
                metrics.watch_error(kind);
                let (gone, why) = describe(&resource, &e);
                if gone {
                    tracing::info!("{why}");
                } else {
                    tracing::error!("{why}");
                    health.watch_failed(kind, why);
                }
                let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                let answered = health.answered.notified();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = answered, if !gone => {}
                }
                continue;
            }
        };
        health.watch_ok(kind);
        let event = match event {
            Event::Init => Event::Init,
            Event::InitDone => Event::InitDone,
            Event::InitApply(o) => Event::InitApply(admit(kind, &resource, o)),
            Event::Apply(o) => Event::Apply(admit(kind, &resource, o)),
            Event::Delete(o) => Event::Delete(admit(kind, &resource, o)),
        };
        health.queued();
        if tx.send(Message { kind, event }).is_err() {
            // The source is gone.
            return;
        }
    }
}

/// Whether the API server serves `ar` (its group version lists the
/// resource). Asked until it answers: 404 is "not served", any other
/// failure is retried with backoff (the watches of the other kinds wait
/// for the same server).
async fn served(client: &Client, kind: Kind, ar: &ApiResource, health: &Health) -> bool {
    let mut backoff = watcher::DefaultBackoff::default();
    loop {
        match client.list_api_group_resources(&ar.api_version).await {
            Ok(list) => {
                health.watch_ok(kind);
                return list.resources.iter().any(|r| r.name == ar.plural);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                health.watch_ok(kind);
                return false;
            }
            Err(e) => {
                let why = format!(
                    "cannot look up {} in discovery ({}): {e}; retrying with backoff",
                    ar.plural, ar.api_version
                );
                tracing::error!("{why}");
                health.watch_failed(kind, why);
                let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                let answered = health.answered.notified();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = answered => {}
                }
            }
        }
    }
}

/// A watch error in words that name the resource and the verb; `true`
/// when it is the expiry of a watch (410 Gone), which a relist repairs.
fn describe(resource: &str, e: &watcher::Error) -> (bool, String) {
    use watcher::Error as W;
    let (verb, status, detail) = match e {
        W::InitialListFailed(c) => ("list", api_status(c), c.to_string()),
        W::WatchStartFailed(c) | W::WatchFailed(c) => ("watch", api_status(c), c.to_string()),
        W::WatchError(s) => ("watch", Some((s.code, s.message.clone())), s.to_string()),
        W::NoResourceVersion => (
            "watch",
            None,
            "the API server gave no resourceVersion".to_owned(),
        ),
    };
    match status {
        Some((410, _)) => (
            true,
            format!("the watch of {resource} expired (410 Gone): listing {resource} again"),
        ),
        Some((401, m)) => (
            false,
            format!(
                "the API server does not know us (401 Unauthorized) when we {verb} {resource}: {m}; check the kubeconfig or the service account token; retrying"
            ),
        ),
        Some((403, m)) => (
            false,
            format!(
                "the API server forbids us to {verb} {resource} (403 Forbidden): {m}; the agent's ClusterRole must allow get, list and watch on {resource}; retrying"
            ),
        ),
        _ => (
            false,
            format!(
                "cannot {verb} {resource}: {detail}; keeping the last state, retrying with backoff"
            ),
        ),
    }
}

fn api_status(e: &kube::Error) -> Option<(u16, String)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.message.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Discovery against the lab's API server: ClusterNetworkPolicy is
    /// served, a group version it does not have is not (404), and neither
    /// leaves the kind failing.
    #[test]
    fn discovery_tells_a_served_kind_from_one_that_is_not() {
        use strait_apiserver::auth::Tokens;
        use strait_apiserver::server::{Server, ServerConfig};
        use strait_apiserver::store::AdmitAll;
        use strait_apiserver::tls::Pki;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let server = runtime
            .block_on(Server::start(ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                pki: Pki::create(&["127.0.0.1".into()]).expect("pki"),
                tokens: Tokens::default(),
                admission: Box::new(AdmitAll),
                history: 100,
                extra_listeners: Vec::new(),
            }))
            .expect("server starts");
        let kubeconfig = server.admin_kubeconfig();
        let health = Health::default();
        let (cnp, widgets) = runtime.block_on(async {
            let config = load_config(ClientConfig::KubeconfigYaml(kubeconfig))
                .await
                .expect("config");
            let client = Client::try_from(config).expect("client");
            let ar = api_resource(Kind::ClusterNetworkPolicy).expect("resource");
            let cnp = served(&client, Kind::ClusterNetworkPolicy, &ar, &health).await;
            let mut widgets = ar.clone();
            widgets.api_version = "widgets.example.com/v1".into();
            widgets.group = "widgets.example.com".into();
            widgets.plural = "widgets".into();
            let other = served(&client, Kind::ClusterNetworkPolicy, &widgets, &health).await;
            (cnp, other)
        });
        server.shutdown();
        assert!(cnp, "the lab serves clusternetworkpolicies");
        assert!(!widgets, "widgets.example.com/v1 is not served");
        assert!(health.report().failing.is_empty());
    }

    #[test]
    fn health_counts_a_queued_event_until_the_update_is_applied() {
        let h = Health::default();
        let r = h.report();
        assert!(r.last_updated.is_none() && r.oldest_queued.is_none());
        h.queued();
        h.queued();
        assert!(h.report().oldest_queued.is_some());
        // Both taken and handed out as one update; a third arrives meanwhile.
        h.took(2);
        h.handing_out();
        h.queued();
        h.updated();
        let r = h.report();
        assert!(r.last_updated.is_some());
        assert!(r.oldest_queued.is_some(), "the third still waits");
        h.took(1);
        h.handing_out();
        h.updated();
        assert!(h.report().oldest_queued.is_none());
    }

    #[test]
    fn an_answer_to_a_kinds_list_or_watch_clears_its_failure() {
        let health = Arc::new(Health::default());
        let observe = Observe::new(health.clone(), AGENT_KINDS);
        assert_eq!(observe.kind_of("/api/v1/services"), Some(Kind::Service));
        assert_eq!(
            observe.kind_of("/apis/discovery.k8s.io/v1/endpointslices"),
            Some(Kind::EndpointSlice)
        );
        assert_eq!(observe.kind_of("/api/v1/namespaces"), Some(Kind::Namespace));
        assert_eq!(observe.kind_of("/api/v1/configmaps"), None);
        health.watch_failed(Kind::Service, "down".into());
        health.watch_failed(Kind::Pod, "down".into());
        let mut service = tower::Layer::layer(
            &observe,
            tower::service_fn(|r: hyper::Request<()>| async move {
                let status = if r.uri().path().ends_with("pods") {
                    503
                } else {
                    200
                };
                let mut answer = hyper::Response::new(());
                *answer.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                Ok::<_, std::convert::Infallible>(answer)
            }),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for path in ["/api/v1/services?watch=true", "/api/v1/pods"] {
            let request = hyper::Request::builder().uri(path).body(()).unwrap();
            runtime
                .block_on(tower::Service::call(&mut service, request))
                .unwrap();
        }
        let failing: Vec<Kind> = health.report().failing.iter().map(|f| f.0).collect();
        assert_eq!(failing, vec![Kind::Pod], "a 503 leaves pods failing");
    }

    #[test]
    fn errors_name_the_resource_and_the_verb() {
        let status = |code: u16| {
            kube::core::Status {
            code,
            message: "services is forbidden: User \"system:serviceaccount:kube-system:strait\" cannot list resource \"services\"".into(),
            ..Default::default()
        }
        };
        let e = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status(403))));
        let (gone, why) = describe("services", &e);
        assert!(!gone);
        assert!(
            why.contains("forbids us to list services (403 Forbidden)"),
            "{why}"
        );
        let e = watcher::Error::WatchStartFailed(kube::Error::Api(Box::new(status(401))));
        assert!(describe("pods", &e)
            .1
            .contains("401 Unauthorized) when we watch pods"));
        let e = watcher::Error::WatchError(Box::new(status(410)));
        let (gone, why) = describe("endpointslices", &e);
        assert!(gone, "{why}");
    }
}
