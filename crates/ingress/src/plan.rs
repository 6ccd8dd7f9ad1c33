//! Ingresses → a [`RouteTable`]: every Kubernetes rule of Ingress v1 lives
//! here, pure and deterministic (the same snapshot gives the same table).
//!
//! Which Ingresses are ours (IngressClass), what a host and a path match
//! (the API reference's table for `Exact` and `Prefix`), which route wins
//! when several match, and where a backend's requests go (the ready
//! endpoints of the Service port, never its virtual IP). An Ingress that
//! cannot be honoured as written is reported as a [`Problem`] and hurts
//! only itself.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use strait_model::k8s_openapi::api::core::v1::{Secret, Service};
use strait_model::k8s_openapi::api::discovery::v1::EndpointSlice;
use strait_model::k8s_openapi::api::networking::v1::{
    HTTPIngressPath, Ingress, IngressBackend, IngressClass,
};
use strait_model::{ClusterState, Kind, ObjectKey, Selector};

/// The `spec.controller` of the IngressClasses strait serves.
pub const CONTROLLER: &str = "strait.dev/ingress";

/// Marks the IngressClass that Ingresses without a class belong to.
pub const ANNOTATION_DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";

/// The class annotation that came before `spec.ingressClassName`; the API
/// still says to respect it when the field is unset.
pub const ANNOTATION_INGRESS_CLASS: &str = "kubernetes.io/ingress.class";

const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
const SECRET_TYPE_TLS: &str = "kubernetes.io/tls";

/// `pathType`, in the order a tie between equally long paths is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathType {
    /// The whole path, byte for byte (case-sensitive).
    Exact,
    /// Element-wise prefix: the path split by `/` is a prefix of the
    /// request's (`/foo/bar` matches `/foo/bar/baz`, not `/foo/barbaz`);
    /// a trailing `/` on either side is ignored.
    Prefix,
    /// strait's meaning: the same element-wise prefix match as `Prefix`,
    /// ranked after a `Prefix` path of the same length. (No regular
    /// expressions: a path means the same thing whatever its type's name.)
    ImplementationSpecific,
}

impl PathType {
    fn parse(s: &str) -> Option<PathType> {
        match s {
            "Exact" => Some(PathType::Exact),
            "Prefix" => Some(PathType::Prefix),
            "ImplementationSpecific" => Some(PathType::ImplementationSpecific),
            _ => None,
        }
    }
}

/// Where the requests of one Service port go.
#[derive(Debug)]
pub struct Backend {
    /// `namespace/service:port`, for logs and error pages.
    pub name: String,
    /// The usable endpoints (ready; else serving while terminating, as
    /// kube-proxy chooses), sorted.
    pub endpoints: Vec<SocketAddr>,
    /// Round robin position, shared by every worker.
    next: AtomicUsize,
}

impl Backend {
    pub fn new(name: impl Into<String>, endpoints: Vec<SocketAddr>) -> Backend {
        Backend {
            name: name.into(),
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The next endpoint in round robin order; `None` without endpoints.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.endpoints[i % self.endpoints.len()])
    }
}

impl PartialEq for Backend {
    fn eq(&self, other: &Backend) -> bool {
        self.name == other.name && self.endpoints == other.endpoints
    }
}

/// One path of one rule.
#[derive(Debug, PartialEq)]
pub struct Route {
    pub path_type: PathType,
    pub path: String,
    /// The path's non-empty elements (what `Prefix` compares).
    elements: Vec<String>,
    pub backend: Arc<Backend>,
    /// The Ingress the path comes from.
    pub ingress: ObjectKey,
}

impl Route {
    /// Whether a request for `path` (without its query) takes this route.
    pub fn matches(&self, path: &str) -> bool {
        match self.path_type {
            PathType::Exact => path == self.path,
            PathType::Prefix | PathType::ImplementationSpecific => {
                let mut request = path.split('/').filter(|e| !e.is_empty());
                self.elements
                    .iter()
                    .all(|e| request.next() == Some(e.as_str()))
            }
        }
    }
}

/// The routes of one host (or of every host), best first.
#[derive(Debug, Default, PartialEq)]
pub struct HostRoutes {
    pub routes: Vec<Route>,
}

impl HostRoutes {
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(path))
    }
}

/// A certificate for the hosts of an Ingress's `spec.tls` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCertificate {
    /// Hosts it is chosen for by SNI (exact or `*.` wildcards); empty: the
    /// default certificate, for names no other one has.
    pub hosts: Vec<String>,
    pub secret: ObjectKey,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// Something in an object that strait cannot honour, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub object: ObjectKey,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.object, self.message)
        } else {
            write!(f, "{}: {}: {}", self.object, self.field, self.message)
        }
    }
}

/// Everything the data plane serves: routes by host, the default backend,
/// the certificates; and what was left out, with why.
#[derive(Debug, Default, PartialEq)]
pub struct RouteTable {
    /// Rules with an exact `host`, by host.
    pub exact: HashMap<String, HostRoutes>,
    /// Rules with a `*.` host, by what follows `*.`.
    pub wildcard: HashMap<String, HostRoutes>,
    /// Rules without a host: for every host that has no rule of its own.
    pub any_host: HostRoutes,
    /// `spec.defaultBackend`: requests no rule's path matches.
    pub default_backend: Option<Arc<Backend>>,
    pub certificates: Vec<TlsCertificate>,
    /// The Ingresses served.
    pub ingresses: Vec<ObjectKey>,
    /// The Gateway API listeners and routes served (before the Ingress
    /// routes, for the hosts they cover).
    pub gateway: crate::gateway::GatewayTable,
    pub problems: Vec<Problem>,
}

impl RouteTable {
    /// The rules a request for `host` (lower case, no port) is matched
    /// against: the host's own if it has some, else those of the wildcard
    /// that covers it (one label), else the host-less rules. A more
    /// specific host never falls through to a less specific one: a host's
    /// path that does not match goes to the default backend, as with
    /// Ingress controllers that make one server per host.
    pub fn host_routes(&self, host: &str) -> &HostRoutes {
        if let Some(routes) = self.exact.get(host) {
            return routes;
        }
        if let Some((first, rest)) = host.split_once('.') {
            if !first.is_empty() {
                if let Some(routes) = self.wildcard.get(rest) {
                    return routes;
                }
            }
        }
        &self.any_host
    }

    /// Where a request for `host` and `path` goes; `None`: nowhere (404).
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Backend>> {
        match self.host_routes(host).find(path) {
            Some(route) => Some(&route.backend),
            None => self.default_backend.as_ref(),
        }
    }

    /// The number of paths served.
    pub fn len(&self) -> usize {
        self.exact.values().map(|h| h.routes.len()).sum::<usize>()
            + self
                .wildcard
                .values()
                .map(|h| h.routes.len())
                .sum::<usize>()
            + self.any_host.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.default_backend.is_none()
    }
}

/// The Ingresses of `state` that belong to `controller` as a route table.
pub fn plan(state: &ClusterState, controller: &str) -> RouteTable {
    let mut table = RouteTable::default();
    let classes = Classes::of(state, controller);
    // Older Ingresses first: on a tie (the same host and path, two default
    // backends, two certificates for one host) the oldest wins, as most
    // controllers decide.
    let mut ingresses: Vec<&Ingress> = state.ingresses.iter().map(|i| &**i).collect();
    ingresses.sort_by_cached_key(|a| age(a));

    let mut pending: Vec<(Host, PendingRoute)> = Vec::new();
    let mut backends = Backends::default();
    let mut cert_hosts: BTreeMap<String, ObjectKey> = BTreeMap::new();
    let mut default_cert: Option<ObjectKey> = None;
    let mut default_from: Option<ObjectKey> = None;
    for (order, ingress) in ingresses.into_iter().enumerate() {
        let key = key_of(ingress);
        match classes.owns(ingress) {
            Ownership::Ours => {}
            Ownership::NotOurs => continue,
            Ownership::Ambiguous(message) => {
                table.problems.push(Problem {
                    object: key,
                    field: "spec.ingressClassName".into(),
                    message,
                });
                continue;
            }
        }
        if let Err((field, message)) = validate(ingress) {
            table.problems.push(Problem {
                object: key,
                field,
                message,
            });
            continue;
        }
        let spec = ingress.spec.as_ref().expect("validated");
        let namespace = key.namespace.clone();
        let mut problems = Vec::new();
        if let Some(backend) = &spec.default_backend {
            let resolved = backends.resolve(
                state,
                &namespace,
                backend,
                "spec.defaultBackend",
                &key,
                &mut problems,
            );
            match &default_from {
                None => {
                    table.default_backend = Some(resolved);
                    default_from = Some(key.clone());
                }
                Some(first) => problems.push(Problem {
                    object: key.clone(),
                    field: "spec.defaultBackend".into(),
                    message: format!("not used: {first} is older and has one too"),
                }),
            }
        }
        for (i, rule) in spec.rules.iter().flatten().enumerate() {
            let host = match rule.host.as_deref().unwrap_or_default() {
                "" => Host::Any,
                h if h.starts_with("*.") => Host::Wildcard(h[2..].to_owned()),
                h => Host::Exact(h.to_owned()),
            };
            for (j, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let at = format!("spec.rules[{i}].http.paths[{j}]");
                let backend = backends.resolve(
                    state,
                    &namespace,
                    &path.backend,
                    &format!("{at}.backend"),
                    &key,
                    &mut problems,
                );
                let index = pending.len();
                pending.push((
                    host.clone(),
                    PendingRoute::new(path, backend, key.clone(), order, index, at),
                ));
            }
        }
        for (i, tls) in spec.tls.iter().flatten().enumerate() {
            let at = format!("spec.tls[{i}]");
            let Some(secret_name) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                // No Secret: TLS by SNI alone, which strait does not route.
                continue;
            };
            let Some((cert_pem, key_pem, secret)) =
                tls_secret(state, &namespace, secret_name, &at, &key, &mut problems)
            else {
                continue;
            };
            let mut hosts = Vec::new();
            for host in tls.hosts.iter().flatten() {
                match cert_hosts.get(host) {
                    Some(first) => problems.push(Problem {
                        object: key.clone(),
                        field: format!("{at}.hosts"),
                        message: format!(
                            "{host}: not used, {first} is older and has a certificate for it"
                        ),
                    }),
                    None => {
                        cert_hosts.insert(host.clone(), key.clone());
                        hosts.push(host.clone());
                    }
                }
            }
            if tls.hosts.as_ref().is_none_or(Vec::is_empty) {
                // The API: the hosts default to the controller's wildcard,
                // i.e. this is the certificate of every name.
                if let Some(first) = &default_cert {
                    problems.push(Problem {
                        object: key.clone(),
                        field: format!("{at}.hosts"),
                        message: format!(
                            "not used as the default certificate: {first} is older and has one"
                        ),
                    });
                    continue;
                }
                default_cert = Some(key.clone());
            } else if hosts.is_empty() {
                continue;
            }
            table.certificates.push(TlsCertificate {
                hosts,
                secret,
                cert_pem,
                key_pem,
            });
        }
        table.problems.extend(problems);
        table.ingresses.push(key);
    }

    // Precedence: the longest path first; of equally long ones Exact, then
    // Prefix, then ImplementationSpecific; then the older Ingress, then the
    // order of the paths in it.
    pending.sort_by_key(|(_, a)| a.rank());
    let mut seen: HashMap<(Host, PathType, Vec<String>, Option<String>), ObjectKey> =
        HashMap::new();
    for (host, route) in pending {
        // The same path twice: the later one can never be taken.
        let exact = (route.route.path_type == PathType::Exact).then(|| route.route.path.clone());
        let same = (
            host.clone(),
            route.route.path_type,
            route.route.elements.clone(),
            exact,
        );
        if let Some(first) = seen.get(&same) {
            if *first != route.route.ingress {
                table.problems.push(Problem {
                    object: route.route.ingress.clone(),
                    field: route.at.clone(),
                    message: format!(
                        "{} {:?} is not served: {first} is older and has the same path for this host",
                        route.route.path_type.as_str(),
                        route.route.path
                    ),
                });
            }
            continue;
        }
        seen.insert(same, route.route.ingress.clone());
        let routes = match host {
            Host::Any => &mut table.any_host,
            Host::Exact(h) => table.exact.entry(h).or_default(),
            Host::Wildcard(h) => table.wildcard.entry(h).or_default(),
        };
        routes.routes.push(route.route);
    }
    table.problems.sort();
    table
}

impl PathType {
    pub fn as_str(self) -> &'static str {
        match self {
            PathType::Exact => "Exact",
            PathType::Prefix => "Prefix",
            PathType::ImplementationSpecific => "ImplementationSpecific",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Host {
    Any,
    Exact(String),
    /// What follows `*.`.
    Wildcard(String),
}

struct PendingRoute {
    route: Route,
    order: usize,
    index: usize,
    at: String,
}

impl PendingRoute {
    fn new(
        path: &HTTPIngressPath,
        backend: Arc<Backend>,
        ingress: ObjectKey,
        order: usize,
        index: usize,
        at: String,
    ) -> PendingRoute {
        let path_type =
            PathType::parse(&path.path_type).expect("validated: pathType is one of three");
        // ImplementationSpecific may leave the path out: it means `/`.
        let text = path
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        let elements = text
            .split('/')
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        PendingRoute {
            route: Route {
                path_type,
                path: text,
                elements,
                backend,
                ingress,
            },
            order,
            index,
            at,
        }
    }

    fn rank(&self) -> (std::cmp::Reverse<usize>, PathType, usize, usize) {
        (
            std::cmp::Reverse(self.route.elements.len()),
            self.route.path_type,
            self.order,
            self.index,
        )
    }
}

/// Creation time, then namespace and name: a total order that is the same
/// on every run.
fn age(ingress: &Ingress) -> (Option<String>, String, String) {
    let m = &ingress.metadata;
    (
        m.creation_timestamp.as_ref().map(|t| t.0.to_string()),
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

fn key_of(ingress: &Ingress) -> ObjectKey {
    ObjectKey::new(
        Kind::Ingress,
        ingress.metadata.namespace.clone().unwrap_or_default(),
        ingress.metadata.name.clone().unwrap_or_default(),
    )
}

enum Ownership {
    Ours,
    NotOurs,
    Ambiguous(String),
}

/// The IngressClasses, as far as they decide which Ingresses are ours.
struct Classes {
    ours: Vec<String>,
    /// Default classes: (name, whether ours).
    defaults: Vec<(String, bool)>,
}

impl Classes {
    fn of(state: &ClusterState, controller: &str) -> Classes {
        let mut ours = Vec::new();
        let mut defaults = Vec::new();
        for class in state.ingress_classes.iter() {
            let class: &IngressClass = class;
            let name = class.metadata.name.clone().unwrap_or_default();
            let mine =
                class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(controller);
            let default = class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_DEFAULT_CLASS))
                .is_some_and(|v| v == "true");
            if mine {
                ours.push(name.clone());
            }
            if default {
                defaults.push((name, mine));
            }
        }
        Classes { ours, defaults }
    }

    fn owns(&self, ingress: &Ingress) -> Ownership {
        let named = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
            .filter(|n| !n.is_empty())
            .or_else(|| {
                ingress
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_INGRESS_CLASS))
                    .map(String::as_str)
                    .filter(|n| !n.is_empty())
            });
        match named {
            Some(class) if self.ours.iter().any(|c| c == class) => Ownership::Ours,
            Some(_) => Ownership::NotOurs,
            None => match self.defaults.as_slice() {
                [] => Ownership::NotOurs,
                [(_, true)] => Ownership::Ours,
                [(_, false)] => Ownership::NotOurs,
                several if several.iter().any(|(_, mine)| *mine) => {
                    let names: Vec<&str> = several.iter().map(|(n, _)| n.as_str()).collect();
                    Ownership::Ambiguous(format!(
                        "unset, and {} IngressClasses are marked default ({}): not served until one is",
                        names.len(),
                        names.join(", ")
                    ))
                }
                _ => Ownership::NotOurs,
            },
        }
    }
}

/// Backends resolved once per Service port and shared by every route to
/// it, with the reason a backend has no endpoints when there is one.
type Resolved = (Arc<Backend>, Option<(String, String)>);

#[derive(Default)]
struct Backends {
    resolved: HashMap<(String, String, String), Resolved>,
}

impl Backends {
    fn resolve(
        &mut self,
        state: &ClusterState,
        namespace: &str,
        backend: &IngressBackend,
        at: &str,
        ingress: &ObjectKey,
        problems: &mut Vec<Problem>,
    ) -> Arc<Backend> {
        let service = backend
            .service
            .as_ref()
            .expect("validated: a Service backend");
        let port = service.port.as_ref().expect("validated: a port");
        let port_text = match (&port.name, port.number) {
            (Some(name), _) if !name.is_empty() => name.clone(),
            (_, Some(number)) => number.to_string(),
            _ => String::new(),
        };
        let cache_key = (namespace.to_owned(), service.name.clone(), port_text);
        let (backend, problem) =
            self.resolved
                .entry(cache_key)
                .or_insert_with_key(|(ns, svc, port_text)| {
                    let name = format!("{ns}/{svc}:{port_text}");
                    match endpoints_of(state, ns, svc, port) {
                        Ok(e) => (Arc::new(Backend::new(name, e)), None),
                        Err(p) => (Arc::new(Backend::new(name, Vec::new())), Some(p)),
                    }
                });
        if let Some((field, message)) = problem {
            problems.push(Problem {
                object: ingress.clone(),
                field: format!("{at}.service.{field}"),
                message: message.clone(),
            });
        }
        backend.clone()
    }
}

/// The usable endpoints of a Service port, or the (field, why) of a
/// backend that cannot be served (requests to it are answered 503).
pub(crate) fn endpoints_of(
    state: &ClusterState,
    namespace: &str,
    name: &str,
    port: &strait_model::k8s_openapi::api::networking::v1::ServiceBackendPort,
) -> Result<Vec<SocketAddr>, (String, String)> {
    let Some(service) = state.services.get(namespace, name) else {
        return Err((
            "name".into(),
            format!("Service {namespace}/{name} not found"),
        ));
    };
    let service: &Service = service;
    let spec = service.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        return Err((
            "name".into(),
            format!("Service {namespace}/{name} is of type ExternalName, which strait does not proxy to"),
        ));
    }
    let ports = spec
        .and_then(|s| s.ports.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let found = ports.iter().find(|p| {
        p.protocol.as_deref().unwrap_or("TCP") == "TCP"
            && match (&port.name, port.number) {
                (Some(n), _) if !n.is_empty() => p.name.as_deref() == Some(n.as_str()),
                (_, Some(number)) => p.port == number,
                _ => false,
            }
    });
    let Some(service_port) = found else {
        let (field, what) = match (&port.name, port.number) {
            (Some(n), _) if !n.is_empty() => ("port.name", format!("named {n:?}")),
            (_, Some(number)) => ("port.number", format!("{number}")),
            _ => ("port", String::new()),
        };
        return Err((
            field.into(),
            format!("Service {namespace}/{name} has no TCP port {what}"),
        ));
    };
    let port_name = service_port.name.clone().unwrap_or_default();
    let slices = slices_of(state, namespace, name);
    Ok(usable_endpoints(&slices, &port_name))
}

fn slices_of<'a>(state: &'a ClusterState, namespace: &str, name: &str) -> Vec<&'a EndpointSlice> {
    let by_label = |s: &EndpointSlice| {
        s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SERVICE_NAME))
            .is_some_and(|n| n == name)
    };
    match Selector::from_map(&[(LABEL_SERVICE_NAME.to_owned(), name.to_owned())].into()) {
        Ok(selector) => state
            .endpoint_slices
            .select(namespace, &selector)
            .into_iter()
            .map(|s| &**s)
            .collect(),
        Err(_) => state
            .endpoint_slices
            .in_namespace(namespace)
            .map(|s| &**s)
            .filter(|s| by_label(s))
            .collect(),
    }
}

/// kube-proxy's choice: the ready endpoints; if there are none, those
/// serving while terminating (a rolling update never runs dry).
fn usable_endpoints(slices: &[&EndpointSlice], port_name: &str) -> Vec<SocketAddr> {
    // address → (ready, serving and terminating)
    let mut found: BTreeMap<SocketAddr, (bool, bool)> = BTreeMap::new();
    for slice in slices {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| {
                p.name.as_deref().unwrap_or_default() == port_name
                    && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
            })
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            continue;
        };
        for e in &slice.endpoints {
            let Some(ip) = e
                .addresses
                .first()
                .and_then(|a| a.trim().parse::<IpAddr>().ok())
            else {
                continue;
            };
            let c = e.conditions.as_ref();
            // Unset conditions mean ready and serving, not terminating.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(true);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let entry = found
                .entry(SocketAddr::new(ip, port))
                .or_insert((false, false));
            entry.0 |= ready;
            entry.1 |= serving && terminating;
        }
    }
    let ready: Vec<SocketAddr> = found
        .iter()
        .filter(|(_, (r, _))| *r)
        .map(|(a, _)| *a)
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    found
        .into_iter()
        .filter(|(_, (_, st))| *st)
        .map(|(a, _)| a)
        .collect()
}

/// The certificate and key of a `kubernetes.io/tls` Secret.
fn tls_secret(
    state: &ClusterState,
    namespace: &str,
    name: &str,
    at: &str,
    ingress: &ObjectKey,
    problems: &mut Vec<Problem>,
) -> Option<(Vec<u8>, Vec<u8>, ObjectKey)> {
    let mut fail = |message: String| {
        problems.push(Problem {
            object: ingress.clone(),
            field: format!("{at}.secretName"),
            message,
        });
        None
    };
    let Some(secret) = state.secrets.get(namespace, name) else {
        return fail(format!("Secret {namespace}/{name} not found"));
    };
    let secret: &Secret = secret;
    if secret.type_.as_deref() != Some(SECRET_TYPE_TLS) {
        return fail(format!(
            "Secret {namespace}/{name} is of type {:?}, not {SECRET_TYPE_TLS}",
            secret.type_.as_deref().unwrap_or("Opaque")
        ));
    }
    let data = secret.data.as_ref();
    let get = |k: &str| {
        data.and_then(|d| d.get(k))
            .map(|v| v.0.clone())
            .filter(|v| !v.is_empty())
    };
    match (get("tls.crt"), get("tls.key")) {
        (Some(cert), Some(key)) => Some((cert, key, ObjectKey::new(Kind::Secret, namespace, name))),
        _ => fail(format!(
            "Secret {namespace}/{name} has an empty tls.crt or tls.key"
        )),
    }
}

type Check = Result<(), (String, String)>;

fn bad(field: impl Into<String>, message: impl Into<String>) -> Check {
    Err((field.into(), message.into()))
}

/// kube-apiserver's validation of an Ingress spec (`ValidateIngressSpec`),
/// for what the planner reads: an object from a manifest is not admitted
/// by an API server first, and one from a cluster is checked again because
/// it costs nothing.
fn validate(ingress: &Ingress) -> Check {
    let Some(spec) = ingress.spec.as_ref() else {
        return bad(
            "spec",
            "missing: either defaultBackend or rules must be specified",
        );
    };
    let rules = spec.rules.as_deref().unwrap_or_default();
    if rules.is_empty() && spec.default_backend.is_none() {
        return bad("spec", "either defaultBackend or rules must be specified");
    }
    if let Some(class) = spec.ingress_class_name.as_deref() {
        if let Err(why) = strait_model::validate_dns_subdomain(class) {
            return bad("spec.ingressClassName", format!("{class:?} {why}"));
        }
    }
    if let Some(b) = &spec.default_backend {
        validate_backend(b, "spec.defaultBackend")?;
    }
    for (i, rule) in rules.iter().enumerate() {
        if let Some(host) = rule.host.as_deref().filter(|h| !h.is_empty()) {
            validate_host(host, &format!("spec.rules[{i}].host"))?;
        }
        let Some(http) = &rule.http else {
            continue;
        };
        if http.paths.is_empty() {
            return bad(
                format!("spec.rules[{i}].http.paths"),
                "missing: at least one path",
            );
        }
        for (j, path) in http.paths.iter().enumerate() {
            let at = format!("spec.rules[{i}].http.paths[{j}]");
            validate_path(path, &at)?;
            validate_backend(&path.backend, &format!("{at}.backend"))?;
        }
    }
    for (i, tls) in spec.tls.iter().flatten().enumerate() {
        for (j, host) in tls.hosts.iter().flatten().enumerate() {
            validate_host(host, &format!("spec.tls[{i}].hosts[{j}]"))?;
        }
        if let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) {
            if let Err(why) = strait_model::validate_dns_subdomain(secret) {
                return bad(
                    format!("spec.tls[{i}].secretName"),
                    format!("{secret:?} {why}"),
                );
            }
        }
    }
    Ok(())
}

fn validate_host(host: &str, at: &str) -> Check {
    if host.parse::<IpAddr>().is_ok() {
        return bad(
            at,
            format!("{host:?} must be a DNS name, not an IP address"),
        );
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if let Err(why) = strait_model::validate_dns_subdomain(name) {
        let what = if name.len() == host.len() {
            "a DNS name, or *. and a DNS name"
        } else {
            "a wildcard: *. and a DNS name"
        };
        return bad(at, format!("{host:?} is not {what}: {why}"));
    }
    Ok(())
}

/// Sequences kube-apiserver refuses in `Exact` and `Prefix` paths.
const INVALID_PATH_SEQUENCES: &[&str] = &["//", "/./", "/../", "%2f", "%2F"];
const INVALID_PATH_SUFFIXES: &[&str] = &["/..", "/."];

fn validate_path(path: &HTTPIngressPath, at: &str) -> Check {
    let Some(kind) = PathType::parse(&path.path_type) else {
        return bad(
            format!("{at}.pathType"),
            format!(
                "{:?} is not supported: Exact, Prefix or ImplementationSpecific",
                path.path_type
            ),
        );
    };
    let text = path.path.as_deref().unwrap_or_default();
    match kind {
        PathType::Exact | PathType::Prefix => {
            if !text.starts_with('/') {
                return bad(
                    format!("{at}.path"),
                    format!("{text:?} must be an absolute path"),
                );
            }
            for seq in INVALID_PATH_SEQUENCES {
                if text.contains(seq) {
                    return bad(
                        format!("{at}.path"),
                        format!("{text:?} must not contain {seq:?}"),
                    );
                }
            }
            for suffix in INVALID_PATH_SUFFIXES {
                if text.ends_with(suffix) {
                    return bad(
                        format!("{at}.path"),
                        format!("{text:?} cannot end with {suffix:?}"),
                    );
                }
            }
        }
        PathType::ImplementationSpecific => {
            if !text.is_empty() && !text.starts_with('/') {
                return bad(
                    format!("{at}.path"),
                    format!("{text:?} must be an absolute path"),
                );
            }
        }
    }
    Ok(())
}

fn validate_backend(backend: &IngressBackend, at: &str) -> Check {
    match (&backend.service, &backend.resource) {
        (Some(_), Some(_)) => bad(at, "cannot set both service and resource"),
        (None, Some(r)) => bad(
            format!("{at}.resource"),
            format!(
                "{}/{} backends are not supported by strait: use a Service",
                r.api_group.as_deref().unwrap_or_default(),
                r.kind
            ),
        ),
        (None, None) => bad(at, "missing: a service backend"),
        (Some(service), None) => {
            if let Err(why) = dns1035_label(&service.name) {
                return bad(
                    format!("{at}.service.name"),
                    format!("{:?} {why}", service.name),
                );
            }
            let Some(port) = &service.port else {
                return bad(
                    format!("{at}.service.port"),
                    "missing: a port name or number",
                );
            };
            match (port.name.as_deref().filter(|n| !n.is_empty()), port.number) {
                (Some(_), Some(_)) => bad(
                    format!("{at}.service.port"),
                    "cannot set both port name and port number",
                ),
                (None, None) => bad(
                    format!("{at}.service.port"),
                    "missing: a port name or number",
                ),
                (None, Some(n)) if !(1..=65535).contains(&n) => bad(
                    format!("{at}.service.port.number"),
                    format!("{n} must be between 1 and 65535, inclusive"),
                ),
                (Some(name), None) => match port_name(name) {
                    Ok(()) => Ok(()),
                    Err(why) => bad(format!("{at}.service.port.name"), format!("{name:?} {why}")),
                },
                _ => Ok(()),
            }
        }
    }
}

/// An RFC 1035 label (what a Service name is).
fn dns1035_label(s: &str) -> Result<(), &'static str> {
    strait_model::validate_dns_label(s)?;
    if s.as_bytes()[0].is_ascii_lowercase() {
        Ok(())
    } else {
        Err("must start with a lower case letter")
    }
}

/// An IANA service name (a port name): at most 15 characters, lower case
/// letters, digits and `-`, at least one letter, no `-` at either end nor
/// twice in a row.
fn port_name(s: &str) -> Result<(), &'static str> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err("must be at most 15 lower case letters, digits or '-', with a letter, and no '-' at the ends or twice in a row")
    }
}

#[cfg(test)]
mod tests;
