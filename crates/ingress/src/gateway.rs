//! Gateway API → a [`GatewayTable`] and the status the spec asks of the
//! controller: GatewayClasses of `strait.dev/gateway-controller`, their
//! Gateways' HTTP and HTTPS listeners, the HTTPRoutes attached to them, and
//! the ReferenceGrants that let a route or a listener refer to another
//! namespace. Pure and deterministic like the Ingress planner: the same
//! snapshot gives the same table and the same conditions.
//!
//! A route that cannot be honoured as written hurts only itself (and only
//! the rule or the backend share at fault): it gets the condition and
//! reason the spec names, and every other route is served.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use regex::Regex;
use strait_model::gateway::{
    parse_duration, Gateway, GatewayClass, GatewayClassStatus, GatewayStatus, HTTPBackendRef,
    HTTPHeaderFilter, HTTPPathModifier, HTTPRoute, HTTPRouteFilter, HTTPRouteMatch, Listener,
    ListenerStatus, ParentReference, RouteGroupKind, RouteParentStatus, GROUP,
};
use strait_model::k8s_openapi::api::core::v1::Namespace;
use strait_model::k8s_openapi::api::networking::v1::ServiceBackendPort;
use strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use strait_model::{ClusterState, Kind, ObjectKey, Selector};

use crate::plan::{Backend, TlsCertificate};

/// The `spec.controllerName` of the GatewayClasses strait serves.
pub const GATEWAY_CONTROLLER: &str = "strait.dev/gateway-controller";

// ---- status, as the planner decides it ----

/// One status condition: `type`, `status` (True/False), `reason`,
/// `message`, and the generation it was computed for. (The time of the
/// transition is the writer's: the planner has no clock.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
    pub observed_generation: Option<i64>,
}

/// The condition of `type_` in `list`.
pub fn condition<'a>(list: &'a [Cond], type_: &str) -> Option<&'a Cond> {
    list.iter().find(|c| c.type_ == type_)
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListenerReport {
    pub name: String,
    pub supported_kinds: Vec<RouteGroupKind>,
    pub attached_routes: i32,
    pub conditions: Vec<Cond>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatewayReport {
    pub conditions: Vec<Cond>,
    pub listeners: Vec<ListenerReport>,
}

impl GatewayReport {
    pub fn listener(&self, name: &str) -> Option<&ListenerReport> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouteParentReport {
    pub parent_ref: ParentReference,
    pub conditions: Vec<Cond>,
}

/// The status of every object of strait's classes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatewayStatuses {
    /// GatewayClasses by name.
    pub classes: BTreeMap<String, Vec<Cond>>,
    pub gateways: BTreeMap<ObjectKey, GatewayReport>,
    /// One entry per parentRef that names a Gateway of strait's.
    pub routes: BTreeMap<ObjectKey, Vec<RouteParentReport>>,
}

impl Cond {
    /// As the API writes it, with the time of the transition the writer
    /// gives (the planner has no clock).
    pub fn to_condition(&self, now: &Time) -> Condition {
        Condition {
            last_transition_time: now.clone(),
            message: self.message.clone(),
            observed_generation: self.observed_generation,
            reason: self.reason.to_owned(),
            status: if self.status { "True" } else { "False" }.to_owned(),
            type_: self.type_.to_owned(),
        }
    }
}

impl GatewayStatuses {
    /// The `status` of a GatewayClass of strait's, as the API holds it.
    pub fn gateway_class_status(&self, name: &str, now: &Time) -> Option<GatewayClassStatus> {
        let conditions = self.classes.get(name)?;
        Some(GatewayClassStatus {
            conditions: conditions.iter().map(|c| c.to_condition(now)).collect(),
        })
    }

    /// The `status` of a Gateway of strait's (without `addresses`: those
    /// are where the data plane listens, which the planner does not know).
    pub fn gateway_status(&self, key: &ObjectKey, now: &Time) -> Option<GatewayStatus> {
        let report = self.gateways.get(key)?;
        Some(GatewayStatus {
            addresses: Vec::new(),
            conditions: report
                .conditions
                .iter()
                .map(|c| c.to_condition(now))
                .collect(),
            listeners: report
                .listeners
                .iter()
                .map(|l| ListenerStatus {
                    name: l.name.clone(),
                    supported_kinds: l.supported_kinds.clone(),
                    attached_routes: l.attached_routes,
                    conditions: l.conditions.iter().map(|c| c.to_condition(now)).collect(),
                })
                .collect(),
        })
    }

    /// strait's entries of an HTTPRoute's `status.parents` (one per
    /// parentRef naming a Gateway of strait's; other controllers' entries
    /// are theirs to keep).
    pub fn route_parents(
        &self,
        key: &ObjectKey,
        controller: &str,
        now: &Time,
    ) -> Vec<RouteParentStatus> {
        self.routes
            .get(key)
            .into_iter()
            .flatten()
            .map(|p| RouteParentStatus {
                parent_ref: p.parent_ref.clone(),
                controller_name: controller.to_owned(),
                conditions: p.conditions.iter().map(|c| c.to_condition(now)).collect(),
            })
            .collect()
    }
}

// ---- the table the data plane executes ----

/// A hostname as Gateway API reads it: any, exact, or `*.` and a suffix
/// (which matches one label or more).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    Any,
    Exact(String),
    /// The suffix with its leading dot: `.example.com`.
    Wildcard(String),
}

impl HostPattern {
    fn parse(host: Option<&str>) -> HostPattern {
        match host {
            None | Some("") => HostPattern::Any,
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => HostPattern::Wildcard(suffix.to_ascii_lowercase()),
                None => HostPattern::Exact(h.to_ascii_lowercase()),
            },
        }
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }

    /// Larger is more specific: exact names before wildcards, longer
    /// before shorter, anything last.
    fn rank(&self) -> (u8, usize) {
        match self {
            HostPattern::Any => (0, 0),
            HostPattern::Wildcard(s) => (1, s.len()),
            HostPattern::Exact(h) => (2, h.len()),
        }
    }

    fn text(&self) -> String {
        match self {
            HostPattern::Any => String::new(),
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Wildcard(s) => format!("*{s}"),
        }
    }

    /// The hostnames both a listener and a route accept (the spec's
    /// intersection), or `None` if they have none in common.
    fn intersect(listener: &HostPattern, route: &HostPattern) -> Option<HostPattern> {
        use HostPattern::*;
        match (listener, route) {
            (Any, r) => Some(r.clone()),
            (l, Any) => Some(l.clone()),
            (Exact(l), Exact(r)) => (l == r).then(|| Exact(l.clone())),
            (Wildcard(_), Exact(r)) => listener.matches(r).then(|| route.clone()),
            (Exact(l), Wildcard(_)) => route.matches(l).then(|| listener.clone()),
            (Wildcard(l), Wildcard(r)) => {
                if r.ends_with(l.as_str()) {
                    Some(route.clone())
                } else if l.ends_with(r.as_str()) {
                    Some(listener.clone())
                } else {
                    None
                }
            }
        }
    }
}

#[derive(Debug)]
pub enum PathMatch {
    Exact(String),
    /// Element-wise prefix: the path's `/`-separated elements.
    Prefix {
        value: String,
        elements: Vec<String>,
    },
    RegularExpression(Regex),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix { elements, .. } => {
                let mut request = path.split('/').filter(|e| !e.is_empty());
                elements.iter().all(|e| request.next() == Some(e.as_str()))
            }
            PathMatch::RegularExpression(re) => re.is_match(path),
        }
    }

    /// The spec's order: Exact, then (strait's choice for what the spec
    /// leaves to implementations) RegularExpression, then PathPrefix; the
    /// longer value first within a type.
    fn rank(&self) -> (u8, usize) {
        match self {
            PathMatch::Exact(p) => (2, p.len()),
            PathMatch::RegularExpression(re) => (1, re.as_str().len()),
            PathMatch::Prefix { value, .. } => (0, value.len()),
        }
    }
}

#[derive(Debug)]
pub enum ValueMatch {
    Exact(String),
    RegularExpression(Regex),
}

impl ValueMatch {
    fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(v) => v == value,
            ValueMatch::RegularExpression(re) => re.is_match(value),
        }
    }
}

/// One `matches[]` entry, compiled.
#[derive(Debug)]
pub struct Matcher {
    pub path: PathMatch,
    pub headers: Vec<(HeaderName, ValueMatch)>,
    pub query: Vec<(String, ValueMatch)>,
    pub method: Option<String>,
}

impl Matcher {
    pub fn matches(&self, head: &RequestHead<'_>) -> bool {
        if self.method.as_deref().is_some_and(|m| m != head.method) {
            return false;
        }
        if !self.path.matches(head.path) {
            return false;
        }
        let headers_ok = self.headers.iter().all(|(name, want)| {
            head.headers
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| want.matches(v)))
        });
        if !headers_ok {
            return false;
        }
        self.query.iter().all(|(name, want)| {
            // The first value of a parameter given twice, as the spec
            // suggests.
            query_pairs(head.query.unwrap_or_default())
                .find(|(n, _)| n == name)
                .is_some_and(|(_, v)| want.matches(&v))
        })
    }
}

fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(n), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RequestHeaderModifier / ResponseHeaderModifier, validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderModifier {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderModifier {
    fn from_filter(f: &HTTPHeaderFilter) -> Result<HeaderModifier, String> {
        let pair = |h: &strait_model::gateway::HTTPHeader| -> Result<_, String> {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("{:?} is not a header name", h.name))?;
            let value = HeaderValue::from_str(&h.value)
                .map_err(|_| format!("{:?} is not a header value", h.value))?;
            Ok((name, value))
        };
        Ok(HeaderModifier {
            set: f.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: f.add.iter().map(pair).collect::<Result<_, _>>()?,
            remove: f
                .remove
                .iter()
                .map(|n| {
                    HeaderName::from_bytes(n.as_bytes())
                        .map_err(|_| format!("{n:?} is not a header name"))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// The filter applied to a head's headers: `set` replaces, `add`
    /// appends to a value already there (`a,b`, as the spec's example
    /// shows), `remove` removes.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            let joined = headers.get(name).and_then(|old| {
                let mut v = old.as_bytes().to_vec();
                v.push(b',');
                v.extend_from_slice(value.as_bytes());
                HeaderValue::from_bytes(&v).ok()
            });
            headers.insert(name.clone(), joined.unwrap_or_else(|| value.clone()));
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// How a path is rewritten (URLRewrite) or redirected (RequestRedirect).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathRewrite {
    Full(String),
    /// Replace what the rule's PathPrefix matched.
    Prefix {
        matched: String,
        replacement: String,
    },
}

impl PathRewrite {
    fn from_modifier(p: &HTTPPathModifier, matched_prefix: Option<&str>) -> Option<PathRewrite> {
        match p.type_.as_str() {
            "ReplaceFullPath" => Some(PathRewrite::Full(
                p.replace_full_path.clone().unwrap_or_default(),
            )),
            "ReplacePrefixMatch" => Some(PathRewrite::Prefix {
                matched: matched_prefix?.to_owned(),
                replacement: p.replace_prefix_match.clone().unwrap_or_default(),
            }),
            _ => None,
        }
    }

    /// The new path of a request for `path`. Prefix replacement works on
    /// whole elements: the matched prefix (its trailing `/` aside) is cut
    /// from the path and the replacement (its trailing `/` aside) put in
    /// front of the rest; an empty result is `/`.
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathRewrite::Full(p) => {
                if p.is_empty() {
                    "/".into()
                } else {
                    p.clone()
                }
            }
            PathRewrite::Prefix {
                matched,
                replacement,
            } => {
                let matched = matched.trim_end_matches('/');
                let rest = path.get(matched.len()..).unwrap_or_default();
                let joined = format!("{}{}", replacement.trim_end_matches('/'), rest);
                if joined.is_empty() {
                    "/".into()
                } else if !joined.starts_with('/') {
                    format!("/{joined}")
                } else {
                    joined
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathRewrite>,
    pub port: Option<u16>,
    pub status: u16,
}

impl Redirect {
    /// The `Location` of the redirect of a request, as the spec derives
    /// it: the scheme, host and path given, else the request's; the port
    /// given, else the scheme's well-known one if a scheme is given, else
    /// the listener's; 80 for http and 443 for https are left out.
    pub fn location(&self, head: &RequestHead<'_>) -> String {
        let scheme = self
            .scheme
            .clone()
            .unwrap_or_else(|| if head.https { "https" } else { "http" }.into());
        let host = self.hostname.as_deref().unwrap_or(head.host);
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => p,
            (None, Some(s)) => {
                if s == "https" {
                    443
                } else {
                    80
                }
            }
            (None, None) => head.listener_port,
        };
        let default_port = (scheme == "http" && port == 80) || (scheme == "https" && port == 443);
        let path = match &self.path {
            Some(p) => p.apply(head.path),
            None => head.path.to_owned(),
        };
        let mut out = format!("{scheme}://{host}");
        if !default_port && port != 0 {
            out.push_str(&format!(":{port}"));
        }
        out.push_str(&path);
        if let Some(q) = head.query.filter(|q| !q.is_empty()) {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

/// The filters of a rule (or of one backendRef), compiled.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filters {
    pub request_headers: Option<HeaderModifier>,
    pub response_headers: Option<HeaderModifier>,
    pub redirect: Option<Redirect>,
    /// URLRewrite: the new host and path.
    pub rewrite_host: Option<String>,
    pub rewrite_path: Option<PathRewrite>,
    pub mirrors: Vec<Mirror>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Mirror {
    pub backend: Arc<Backend>,
    /// The share of requests mirrored, in millionths.
    pub per_million: u32,
}

/// Where one backendRef's share of a rule's requests goes.
#[derive(Debug)]
pub enum Target {
    Backend(Arc<Backend>),
    /// An invalid reference: its share is answered 500, as the spec says.
    Invalid(String),
}

#[derive(Debug)]
pub struct WeightedBackend {
    pub weight: u32,
    pub target: Target,
    pub filters: Filters,
}

/// What a rule does with the requests it matches.
#[derive(Debug)]
pub struct Action {
    pub route: ObjectKey,
    pub rule: usize,
    pub filters: Filters,
    pub backends: Vec<WeightedBackend>,
    total_weight: u64,
    next: AtomicU64,
    /// `timeouts.request` (then `backendRequest`): answered 504 after it.
    pub timeout: Option<Duration>,
    /// Why every request of this rule is answered 500 (an unsupported
    /// filter), if so.
    pub fails: Option<String>,
}

impl Action {
    /// The next backendRef by weight, in smooth order (a deterministic
    /// weighted round robin: exact shares over every `total` requests).
    fn pick(&self) -> Option<&WeightedBackend> {
        if self.total_weight == 0 {
            return None;
        }
        let mut n = self.next.fetch_add(1, Ordering::Relaxed) % self.total_weight;
        for b in &self.backends {
            if n < u64::from(b.weight) {
                return Some(b);
            }
            n -= u64::from(b.weight);
        }
        None
    }
}

/// One match of one rule of one route, on one listener, for one hostname.
#[derive(Debug)]
pub struct RouteEntry {
    pub host: HostPattern,
    pub matcher: Arc<Matcher>,
    pub action: Arc<Action>,
    /// The precedence key (smaller first).
    order: EntryOrder,
}

type EntryOrder = (
    Reverse<(u8, usize)>,
    Reverse<(u8, usize)>,
    Reverse<bool>,
    Reverse<usize>,
    Reverse<usize>,
    String,
    String,
    usize,
    usize,
);

/// The routes of one listener, best first.
#[derive(Debug)]
pub struct ListenerRoutes {
    pub gateway: ObjectKey,
    pub name: String,
    pub port: u16,
    pub host: HostPattern,
    pub entries: Vec<RouteEntry>,
}

/// What the data plane serves of Gateway API: the HTTP and the HTTPS
/// listeners, each list most specific hostname first.
#[derive(Debug, Default)]
pub struct GatewayTable {
    pub http: Vec<ListenerRoutes>,
    pub https: Vec<ListenerRoutes>,
}

impl PartialEq for GatewayTable {
    fn eq(&self, other: &GatewayTable) -> bool {
        // Compared by what is served where (tables are compared only to
        // skip a swap that changes nothing).
        let key = |l: &[ListenerRoutes]| -> Vec<(ObjectKey, String, usize)> {
            l.iter()
                .map(|l| (l.gateway.clone(), l.name.clone(), l.entries.len()))
                .collect()
        };
        key(&self.http) == key(&other.http) && key(&self.https) == key(&other.https)
    }
}

/// What the data plane needs of a request to route it.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// Lower case, without port.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a str,
    pub headers: &'a HeaderMap,
    pub https: bool,
    /// The port of the listener that took it (what a redirect without
    /// scheme or port keeps); 0 when unknown.
    pub listener_port: u16,
}

/// A reply of the proxy's own (redirects, errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub location: Option<String>,
    pub message: String,
}

/// Where a request goes, with the filters to apply on the way.
#[derive(Debug)]
pub struct Forward<'t> {
    pub backend: &'t Arc<Backend>,
    pub action: Option<&'t Action>,
    pub backend_filters: Option<&'t Filters>,
}

impl Forward<'_> {
    pub fn timeout(&self) -> Option<Duration> {
        self.action.and_then(|a| a.timeout)
    }

    /// The mirrors this request is copied to.
    pub fn mirrors(&self) -> Vec<&Arc<Backend>> {
        let mut out = Vec::new();
        for f in [self.action.map(|a| &a.filters), self.backend_filters]
            .into_iter()
            .flatten()
        {
            for m in &f.mirrors {
                if m.per_million >= 1_000_000 || sample(m.per_million) {
                    out.push(&m.backend);
                }
            }
        }
        out
    }

    /// URLRewrite's new path and query for the request, if it changes
    /// them (the backend's filter after the rule's).
    pub fn rewritten_path(&self, head: &RequestHead<'_>) -> Option<String> {
        let mut new_path = None;
        for f in [self.action.map(|a| &a.filters), self.backend_filters]
            .into_iter()
            .flatten()
        {
            if let Some(p) = &f.rewrite_path {
                let path = p.apply(head.path);
                new_path = Some(match head.query {
                    Some(q) if !q.is_empty() => format!("{path}?{q}"),
                    _ => path,
                });
            }
        }
        new_path
    }

    /// The request headers as the backend gets them: URLRewrite's host,
    /// then RequestHeaderModifier (the rule's, then the backend's).
    pub fn apply_request_headers(&self, headers: &mut HeaderMap) {
        for f in [self.action.map(|a| &a.filters), self.backend_filters]
            .into_iter()
            .flatten()
        {
            if let Some(host) = &f.rewrite_host {
                if let Ok(v) = HeaderValue::from_str(host) {
                    headers.insert(hyper::header::HOST, v);
                }
            }
            if let Some(m) = &f.request_headers {
                m.apply(headers);
            }
        }
    }

    /// ResponseHeaderModifier on the response's headers.
    pub fn apply_response(&self, headers: &mut HeaderMap) {
        for f in [self.action.map(|a| &a.filters), self.backend_filters]
            .into_iter()
            .flatten()
        {
            if let Some(m) = &f.response_headers {
                m.apply(headers);
            }
        }
    }
}

fn sample(per_million: u32) -> bool {
    static N: AtomicU64 = AtomicU64::new(0);
    // Deterministic spread: the n-th request is mirrored when the share
    // of those mirrored so far is below the wanted one.
    let n = N.fetch_add(1, Ordering::Relaxed);
    let before = n * u64::from(per_million) / 1_000_000;
    let after = (n + 1) * u64::from(per_million) / 1_000_000;
    after > before
}

/// The data plane's decision for one request.
#[derive(Debug)]
pub enum Decision<'t> {
    /// No listener or route takes it: 404.
    NotFound,
    /// A reply of ours (redirect, 500 for an invalid backend share).
    Reply(Reply),
    Forward(Forward<'t>),
}

impl GatewayTable {
    pub fn is_empty(&self) -> bool {
        self.http.is_empty() && self.https.is_empty()
    }

    /// The routes served, counted by entry.
    pub fn len(&self) -> usize {
        self.http
            .iter()
            .chain(&self.https)
            .map(|l| l.entries.len())
            .sum()
    }

    /// The listener a request is for: the most specific hostname that
    /// covers its host (no falling through to a less specific listener).
    pub fn listener(&self, head: &RequestHead<'_>) -> Option<&ListenerRoutes> {
        let list = if head.https { &self.https } else { &self.http };
        list.iter().find(|l| l.host.matches(head.host))
    }

    /// Route a request: `None` when no Gateway listener takes its host
    /// (the Ingress routes may), else the decision.
    pub fn decide(&self, head: &RequestHead<'_>) -> Option<Decision<'_>> {
        let listener = self.listener(head)?;
        let mut head = *head;
        if head.listener_port == 0 {
            head.listener_port = listener.port;
        }
        let Some(entry) = listener
            .entries
            .iter()
            .find(|e| e.host.matches(head.host) && e.matcher.matches(&head))
        else {
            return Some(Decision::NotFound);
        };
        let action = &*entry.action;
        if let Some(why) = &action.fails {
            return Some(Decision::Reply(Reply {
                status: 500,
                location: None,
                message: why.clone(),
            }));
        }
        if let Some(r) = &action.filters.redirect {
            return Some(Decision::Reply(Reply {
                status: r.status,
                location: Some(r.location(&head)),
                message: String::new(),
            }));
        }
        let Some(chosen) = action.pick() else {
            return Some(Decision::Reply(Reply {
                status: 500,
                location: None,
                message: "no backend for this route\n".into(),
            }));
        };
        if let Some(r) = &chosen.filters.redirect {
            return Some(Decision::Reply(Reply {
                status: r.status,
                location: Some(r.location(&head)),
                message: String::new(),
            }));
        }
        match &chosen.target {
            Target::Invalid(why) => Some(Decision::Reply(Reply {
                status: 500,
                location: None,
                message: format!("{why}\n"),
            })),
            Target::Backend(backend) => Some(Decision::Forward(Forward {
                backend,
                action: Some(action),
                backend_filters: Some(&chosen.filters),
            })),
        }
    }
}

impl crate::plan::RouteTable {
    /// The one call the data plane makes per request: Gateway API
    /// listeners first (for the hosts they cover), then the Ingress rules.
    pub fn decide(&self, head: &RequestHead<'_>) -> Decision<'_> {
        if let Some(d) = self.gateway.decide(head) {
            return d;
        }
        match self.route(head.host, head.path) {
            Some(backend) => Decision::Forward(Forward {
                backend,
                action: None,
                backend_filters: None,
            }),
            None => Decision::NotFound,
        }
    }
}

/// The Ingress and the Gateway API planners together: the table the data
/// plane serves, and the Gateway API objects' status.
pub fn plan_all(
    state: &ClusterState,
    ingress_controller: &str,
    gateway_controller: &str,
    only: Option<&[ObjectKey]>,
) -> (crate::plan::RouteTable, GatewayStatuses) {
    plan_all_on(state, ingress_controller, gateway_controller, only, None)
}

/// The ports a process listens on: a listener on another port is not
/// served (`Accepted=False/PortUnavailable`) rather than served on a port
/// it does not name. `None` (manifest mode): every HTTP listener is served
/// on the one HTTP socket and every HTTPS listener on the one HTTPS
/// socket, whatever their port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerPorts {
    pub http: Option<u16>,
    pub https: Option<u16>,
}

/// [`plan_all`], with listeners held to the ports the process listens on.
pub fn plan_all_on(
    state: &ClusterState,
    ingress_controller: &str,
    gateway_controller: &str,
    only: Option<&[ObjectKey]>,
    ports: Option<ListenerPorts>,
) -> (crate::plan::RouteTable, GatewayStatuses) {
    let mut table = crate::plan::plan(state, ingress_controller);
    let gateways = plan_gateways_on(state, gateway_controller, only, ports);
    table.gateway = gateways.table;
    table.certificates.extend(gateways.certificates);
    (table, gateways.status)
}

// ---- the planner ----

/// What [`plan_gateways`] gives: the table, the certificates of its HTTPS
/// listeners, and every object's status.
#[derive(Debug, Default)]
pub struct GatewayPlan {
    pub table: GatewayTable,
    pub certificates: Vec<TlsCertificate>,
    pub status: GatewayStatuses,
}

fn cond(
    type_: &'static str,
    status: bool,
    reason: &'static str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Cond {
    Cond {
        type_,
        status,
        reason,
        message: message.into(),
        observed_generation: generation,
    }
}

const HTTP_ROUTE_KIND: &str = "HTTPRoute";

/// Why a reference or an attachment is refused: the spec's reason and a
/// message.
type Refusal = (&'static str, String);

/// The listeners a parentRef attaches to, each with the hostnames the
/// route has there.
type Attached = Vec<(usize, Vec<HostPattern>)>;

/// A listener as the planner sees it once checked.
struct PlannedListener<'a> {
    gateway: &'a Gateway,
    key: ObjectKey,
    spec: &'a Listener,
    host: HostPattern,
    /// Accepted and served (its refs resolved, no conflict).
    serves: bool,
    /// Routes may attach (it is accepted, even if not programmed).
    accepts: bool,
    allows_http_route: bool,
    report: ListenerReport,
    entries: Vec<RouteEntry>,
    certificate: Option<TlsCertificate>,
}

/// Plan every Gateway of a GatewayClass whose `controllerName` is
/// `controller`; `only` limits the table (not the status) to the named
/// Gateways.
pub fn plan_gateways(
    state: &ClusterState,
    controller: &str,
    only: Option<&[ObjectKey]>,
) -> GatewayPlan {
    plan_gateways_on(state, controller, only, None)
}

/// [`plan_gateways`], with listeners held to `ports` (see [`ListenerPorts`]).
pub fn plan_gateways_on(
    state: &ClusterState,
    controller: &str,
    only: Option<&[ObjectKey]>,
    ports: Option<ListenerPorts>,
) -> GatewayPlan {
    let mut plan = GatewayPlan::default();
    let grants = Grants::of(state);
    // Classes.
    let mut ours: BTreeSet<String> = BTreeSet::new();
    for class in state.gateway_classes.iter() {
        let class: &GatewayClass = class;
        if class.spec.controller_name != controller {
            continue;
        }
        let name = class.metadata.name.clone().unwrap_or_default();
        let generation = class.metadata.generation;
        let accepted = match &class.spec.parameters_ref {
            Some(_) => cond(
                "Accepted",
                false,
                "InvalidParameters",
                "strait's GatewayClass takes no parameters",
                generation,
            ),
            None => {
                ours.insert(name.clone());
                cond(
                    "Accepted",
                    true,
                    "Accepted",
                    "handled by strait",
                    generation,
                )
            }
        };
        plan.status.classes.insert(name, vec![accepted]);
    }

    // Gateways, oldest first: on a conflict the older listener wins.
    let mut gateways: Vec<&Gateway> = state
        .gateways
        .iter()
        .map(|g| &**g)
        .filter(|g| ours.contains(&g.spec.gateway_class_name))
        .collect();
    gateways.sort_by_cached_key(|g| age(&g.metadata));
    let mut listeners: Vec<PlannedListener<'_>> = Vec::new();
    let mut taken: HashMap<(u16, HostPattern), ObjectKey> = HashMap::new();
    let mut port_protocols: HashMap<u16, (String, ObjectKey)> = HashMap::new();
    for gateway in &gateways {
        let key = key_of(Kind::Gateway, &gateway.metadata);
        let generation = gateway.metadata.generation;
        for l in &gateway.spec.listeners {
            listeners.push(plan_listener(
                state,
                &grants,
                gateway,
                &key,
                l,
                generation,
                ports,
                &mut taken,
                &mut port_protocols,
            ));
        }
    }

    // Routes: attach, compile, report.
    let namespaces: HashMap<&str, &Namespace> = state
        .namespaces
        .iter()
        .map(|n| (n.metadata.name.as_deref().unwrap_or_default(), &**n))
        .collect();
    let mut routes: Vec<&HTTPRoute> = state.http_routes.iter().map(|r| &**r).collect();
    routes.sort_by_cached_key(|r| age(&r.metadata));
    let mut backends = BackendCache::default();
    for route in routes {
        plan_route(
            state,
            &grants,
            &namespaces,
            route,
            &gateways,
            &mut listeners,
            &mut backends,
            controller,
            &mut plan.status,
        );
    }

    // Gateways' own conditions and the table.
    for gateway in &gateways {
        let key = key_of(Kind::Gateway, &gateway.metadata);
        let generation = gateway.metadata.generation;
        let mine: Vec<&PlannedListener<'_>> = listeners.iter().filter(|l| l.key == key).collect();
        let valid = mine.iter().filter(|l| l.accepts).count();
        let programmed = mine.iter().filter(|l| l.serves).count();
        let mut conditions = Vec::new();
        if !gateway.spec.addresses.is_empty() {
            conditions.push(cond("Accepted", false, "UnsupportedAddress", "strait serves on the addresses it is given to listen on (strait ingress --listen), not on spec.addresses", generation));
            conditions.push(cond(
                "Programmed",
                false,
                "AddressNotUsable",
                "spec.addresses is not supported",
                generation,
            ));
        } else {
            conditions.push(match (valid, mine.len()) {
                (v, n) if v == n => cond(
                    "Accepted",
                    true,
                    "Accepted",
                    "all listeners are valid",
                    generation,
                ),
                (0, _) => cond(
                    "Accepted",
                    false,
                    "ListenersNotValid",
                    "no listener is valid",
                    generation,
                ),
                _ => cond(
                    "Accepted",
                    true,
                    "ListenersNotValid",
                    "some listeners are not valid (see their conditions)",
                    generation,
                ),
            });
            conditions.push(if programmed > 0 {
                cond(
                    "Programmed",
                    true,
                    "Programmed",
                    "served by strait",
                    generation,
                )
            } else {
                cond(
                    "Programmed",
                    false,
                    "Invalid",
                    "no listener can be served",
                    generation,
                )
            });
        }
        plan.status.gateways.insert(
            key.clone(),
            GatewayReport {
                conditions,
                listeners: mine.iter().map(|l| l.report.clone()).collect(),
            },
        );
    }
    for mut l in listeners {
        if !l.serves {
            continue;
        }
        let gateway_ok = plan
            .status
            .gateways
            .get(&l.key)
            .and_then(|g| condition(&g.conditions, "Accepted"))
            .is_some_and(|c| c.status);
        if !gateway_ok || only.is_some_and(|only| !only.contains(&l.key)) {
            continue;
        }
        l.entries.sort_by(|a, b| a.order.cmp(&b.order));
        let Ok(port) = u16::try_from(l.spec.port) else {
            continue;
        };
        let routes = ListenerRoutes {
            gateway: l.key.clone(),
            name: l.spec.name.clone(),
            port,
            host: l.host.clone(),
            entries: l.entries,
        };
        if l.spec.protocol == "HTTPS" {
            if let Some(c) = l.certificate.take() {
                plan.certificates.push(c);
            }
            plan.table.https.push(routes);
        } else {
            plan.table.http.push(routes);
        }
    }
    // Most specific hostname first; the older listener first on a tie.
    // Listeners with the same hostname on different ports share the one
    // socket of their protocol: their routes are served together, ranked
    // as one list (else the second would be shadowed by the first).
    for list in [&mut plan.table.http, &mut plan.table.https] {
        list.sort_by(|a, b| {
            Reverse(a.host.rank())
                .cmp(&Reverse(b.host.rank()))
                .then_with(|| a.host.cmp(&b.host))
        });
        let mut merged: Vec<ListenerRoutes> = Vec::with_capacity(list.len());
        for l in list.drain(..) {
            match merged.last_mut() {
                Some(last) if last.host == l.host => {
                    last.entries.extend(l.entries);
                    last.entries.sort_by(|a, b| a.order.cmp(&b.order));
                }
                _ => merged.push(l),
            }
        }
        *list = merged;
    }
    plan
}

#[allow(clippy::too_many_arguments)]
fn plan_listener<'a>(
    state: &ClusterState,
    grants: &Grants,
    gateway: &'a Gateway,
    key: &ObjectKey,
    l: &'a Listener,
    generation: Option<i64>,
    ports: Option<ListenerPorts>,
    taken: &mut HashMap<(u16, HostPattern), ObjectKey>,
    port_protocols: &mut HashMap<u16, (String, ObjectKey)>,
) -> PlannedListener<'a> {
    let host = HostPattern::parse(l.hostname.as_deref());
    let mut conditions = Vec::new();
    let mut accepts = true;
    let mut serves = true;
    // Route kinds.
    let mut supported = Vec::new();
    let mut invalid_kinds = Vec::new();
    let http_like = matches!(l.protocol.as_str(), "HTTP" | "HTTPS");
    match l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
        Some(kinds) => {
            for k in kinds {
                let group = k.group.as_deref().unwrap_or(GROUP);
                if group == GROUP && k.kind == HTTP_ROUTE_KIND && http_like {
                    supported.push(RouteGroupKind {
                        group: Some(GROUP.into()),
                        kind: HTTP_ROUTE_KIND.into(),
                    });
                } else {
                    invalid_kinds.push(format!("{group}/{}", k.kind));
                }
            }
        }
        None if http_like => supported.push(RouteGroupKind {
            group: Some(GROUP.into()),
            kind: HTTP_ROUTE_KIND.into(),
        }),
        None => {}
    }
    let allows_http_route = !supported.is_empty();
    // Protocol.
    let port = u16::try_from(l.port).unwrap_or(0);
    let passthrough = l.tls.as_ref().and_then(|t| t.mode.as_deref()) == Some("Passthrough");
    if !http_like {
        accepts = false;
        serves = false;
        conditions.push(cond(
            "Accepted",
            false,
            "UnsupportedProtocol",
            format!(
                "protocol {:?} is not supported: HTTP and HTTPS are",
                l.protocol
            ),
            generation,
        ));
    } else if passthrough {
        accepts = false;
        serves = false;
        conditions.push(cond(
            "Accepted",
            false,
            "UnsupportedProtocol",
            "TLS mode Passthrough is not supported for HTTPS: Terminate is",
            generation,
        ));
    } else if let Some(listening) = ports.and_then(|p| {
        let (on, flag) = if l.protocol == "HTTPS" {
            (p.https, "--tls-listen")
        } else {
            (p.http, "--listen")
        };
        (on != Some(port)).then_some((on, flag))
    }) {
        // Served on a socket of another port, clients of the listener's
        // port would find nothing: not accepted, and said why.
        accepts = false;
        serves = false;
        let message = match listening {
            (Some(on), flag) => format!(
                "strait serves {} listeners on port {on} ({flag}), not {port}",
                l.protocol
            ),
            (None, flag) => format!(
                "strait does not serve {} here: no {flag} address",
                l.protocol
            ),
        };
        conditions.push(cond(
            "Accepted",
            false,
            "PortUnavailable",
            message,
            generation,
        ));
    } else {
        conditions.push(cond("Accepted", true, "Accepted", "", generation));
    }
    // Conflicts: one protocol per port, one listener per port and hostname
    // (across the Gateways served: the older wins).
    let mut conflict = None;
    if accepts {
        match port_protocols.get(&port) {
            Some((protocol, owner)) if *protocol != l.protocol => {
                conflict = Some((
                    "ProtocolConflict",
                    format!("port {port} is {protocol} on {owner}"),
                ));
            }
            Some(_) => {}
            None => {
                port_protocols.insert(port, (l.protocol.clone(), key.clone()));
            }
        }
        if conflict.is_none() {
            match taken.get(&(port, host.clone())) {
                Some(owner) if owner != key => {
                    conflict = Some((
                        "HostnameConflict",
                        format!(
                            "port {port} with hostname {:?} is served by {owner}, which is older",
                            host.text()
                        ),
                    ));
                }
                _ => {
                    taken.insert((port, host.clone()), key.clone());
                }
            }
        }
    }
    match &conflict {
        Some((reason, message)) => {
            serves = false;
            conditions.push(cond(
                "Conflicted",
                true,
                reason,
                message.clone(),
                generation,
            ));
        }
        None => conditions.push(cond("Conflicted", false, "NoConflicts", "", generation)),
    }
    // References: route kinds, certificates.
    let mut resolved: Result<(), Refusal> = Ok(());
    if !invalid_kinds.is_empty() {
        resolved = Err((
            "InvalidRouteKinds",
            format!("route kinds not supported: {}", invalid_kinds.join(", ")),
        ));
    }
    let mut certificate = None;
    if l.protocol == "HTTPS" && !passthrough && resolved.is_ok() {
        match listener_certificate(state, grants, gateway, key, l, &host) {
            Ok(c) => certificate = Some(c),
            Err(e) => resolved = Err(e),
        }
    }
    match resolved {
        Ok(()) => conditions.push(cond("ResolvedRefs", true, "ResolvedRefs", "", generation)),
        Err((reason, message)) => {
            if reason != "InvalidRouteKinds" || !allows_http_route {
                serves = false;
            }
            conditions.push(cond("ResolvedRefs", false, reason, message, generation));
        }
    }
    conditions.push(if serves {
        cond("Programmed", true, "Programmed", "", generation)
    } else {
        cond(
            "Programmed",
            false,
            "Invalid",
            "not served: see the other conditions",
            generation,
        )
    });
    PlannedListener {
        gateway,
        key: key.clone(),
        spec: l,
        host,
        serves,
        accepts,
        allows_http_route,
        report: ListenerReport {
            name: l.name.clone(),
            supported_kinds: supported,
            attached_routes: 0,
            conditions,
        },
        entries: Vec::new(),
        certificate,
    }
}

/// The certificate of an HTTPS listener (its first certificateRef; strait
/// serves one per listener).
fn listener_certificate(
    state: &ClusterState,
    grants: &Grants,
    gateway: &Gateway,
    key: &ObjectKey,
    l: &Listener,
    host: &HostPattern,
) -> Result<TlsCertificate, Refusal> {
    let refs = l
        .tls
        .as_ref()
        .map(|t| t.certificate_refs.as_slice())
        .unwrap_or_default();
    let Some(r) = refs.first() else {
        return Err((
            "InvalidCertificateRef",
            "no certificateRefs: strait needs a kubernetes.io/tls Secret".into(),
        ));
    };
    let group = r.group.as_deref().unwrap_or_default();
    let kind = r.kind.as_deref().unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        return Err((
            "InvalidCertificateRef",
            format!("certificateRefs[0]: {group}/{kind} is not supported: a core Secret is"),
        ));
    }
    let namespace = r.namespace.clone().unwrap_or_else(|| key.namespace.clone());
    if namespace != key.namespace
        && !grants.permits(
            GROUP,
            "Gateway",
            &key.namespace,
            "",
            "Secret",
            &namespace,
            &r.name,
        )
    {
        return Err(("RefNotPermitted", format!("certificateRefs[0]: Secret {namespace}/{} is in another namespace and no ReferenceGrant there allows it", r.name)));
    }
    let _ = gateway;
    let Some(secret) = state.secrets.get(&namespace, &r.name) else {
        return Err((
            "InvalidCertificateRef",
            format!(
                "certificateRefs[0]: Secret {namespace}/{} not found",
                r.name
            ),
        ));
    };
    if secret.type_.as_deref() != Some("kubernetes.io/tls") {
        return Err((
            "InvalidCertificateRef",
            format!(
                "certificateRefs[0]: Secret {namespace}/{} is not of type kubernetes.io/tls",
                r.name
            ),
        ));
    }
    let get = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|v| v.0.clone())
            .filter(|v| !v.is_empty())
    };
    let (Some(cert_pem), Some(key_pem)) = (get("tls.crt"), get("tls.key")) else {
        return Err((
            "InvalidCertificateRef",
            format!(
                "certificateRefs[0]: Secret {namespace}/{} has an empty tls.crt or tls.key",
                r.name
            ),
        ));
    };
    let cert = TlsCertificate {
        hosts: match host {
            HostPattern::Any => Vec::new(),
            h => vec![h.text()],
        },
        secret: ObjectKey::new(Kind::Secret, namespace.clone(), r.name.clone()),
        cert_pem,
        key_pem,
    };
    let (_, problems) = crate::tls::Certificates::load(std::slice::from_ref(&cert));
    if let Some(p) = problems.first() {
        return Err(("InvalidCertificateRef", format!("certificateRefs[0]: {p}")));
    }
    Ok(cert)
}

/// The route's hostnames as patterns (empty: any).
fn route_hosts(route: &HTTPRoute) -> Vec<HostPattern> {
    route
        .spec
        .hostnames
        .iter()
        .map(|h| HostPattern::parse(Some(h)))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn plan_route(
    state: &ClusterState,
    grants: &Grants,
    namespaces: &HashMap<&str, &Namespace>,
    route: &HTTPRoute,
    gateways: &[&Gateway],
    listeners: &mut [PlannedListener<'_>],
    backends: &mut BackendCache,
    controller: &str,
    status: &mut GatewayStatuses,
) {
    let key = key_of(Kind::HTTPRoute, &route.metadata);
    let generation = route.metadata.generation;
    let hosts = route_hosts(route);
    // The rules, compiled once for every parent.
    let compiled = compile_rules(state, grants, route, &key, backends);
    let mut reports = Vec::new();
    for parent in &route.spec.parent_refs {
        let group = parent.group.as_deref().unwrap_or(GROUP);
        let kind = parent.kind.as_deref().unwrap_or("Gateway");
        if group != GROUP || kind != "Gateway" {
            continue;
        }
        let gw_ns = parent
            .namespace
            .clone()
            .unwrap_or_else(|| key.namespace.clone());
        let Some(gateway) = gateways.iter().find(|g| {
            g.metadata.namespace.as_deref() == Some(gw_ns.as_str())
                && g.metadata.name.as_deref() == Some(parent.name.as_str())
        }) else {
            // Not a Gateway of strait's: another controller's to report.
            continue;
        };
        let _ = gateway;
        let gw_key = ObjectKey::new(Kind::Gateway, gw_ns.clone(), parent.name.clone());
        let mut conditions = Vec::new();
        let candidates: Vec<usize> = listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| l.key == gw_key)
            .filter(|(_, l)| {
                parent
                    .section_name
                    .as_ref()
                    .is_none_or(|s| *s == l.spec.name)
            })
            .filter(|(_, l)| parent.port.is_none_or(|p| p == l.spec.port))
            .map(|(i, _)| i)
            .collect();
        let accepted: Result<Attached, Refusal> = if candidates.is_empty() {
            Err((
                "NoMatchingParent",
                match (&parent.section_name, parent.port) {
                    (Some(s), _) => format!("{gw_key} has no listener named {s:?}"),
                    (None, Some(p)) => format!("{gw_key} has no listener on port {p}"),
                    _ => format!("{gw_key} has no listener"),
                },
            ))
        } else {
            let allowed: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| {
                    listeners[i].accepts
                        && listeners[i].allows_http_route
                        && namespace_allowed(&listeners[i], &key.namespace, namespaces)
                })
                .collect();
            if allowed.is_empty() {
                Err(("NotAllowedByListeners", format!("no listener of {gw_key} that this reference names allows HTTPRoutes from namespace {}", key.namespace)))
            } else {
                let with_hosts: Vec<(usize, Vec<HostPattern>)> = allowed
                    .iter()
                    .filter_map(|&i| {
                        let l = &listeners[i];
                        let effective: Vec<HostPattern> = if hosts.is_empty() {
                            vec![l.host.clone()]
                        } else {
                            let mut v: Vec<HostPattern> = hosts
                                .iter()
                                .filter_map(|h| HostPattern::intersect(&l.host, h))
                                .collect();
                            v.sort();
                            v.dedup();
                            v
                        };
                        (!effective.is_empty()).then_some((i, effective))
                    })
                    .collect();
                if with_hosts.is_empty() {
                    Err(("NoMatchingListenerHostname", "no hostname of the route matches a hostname of the listeners it may attach to".into()))
                } else {
                    Ok(with_hosts)
                }
            }
        };
        match accepted {
            Err((reason, message)) => {
                conditions.push(cond("Accepted", false, reason, message, generation))
            }
            Ok(attached) if compiled.rules.is_empty() => {
                let _ = attached;
                conditions.push(cond(
                    "Accepted",
                    false,
                    "UnsupportedValue",
                    compiled.dropped.join("; "),
                    generation,
                ));
            }
            Ok(attached) => {
                conditions.push(cond("Accepted", true, "Accepted", "", generation));
                for (i, effective) in attached {
                    let l = &mut listeners[i];
                    l.report.attached_routes += 1;
                    for host in &effective {
                        for rule in &compiled.rules {
                            for (m, matcher) in rule.matchers.iter().enumerate() {
                                l.entries.push(RouteEntry {
                                    host: host.clone(),
                                    matcher: matcher.clone(),
                                    action: rule.action.clone(),
                                    order: (
                                        Reverse(host.rank()),
                                        Reverse(matcher.path.rank()),
                                        Reverse(matcher.method.is_some()),
                                        Reverse(matcher.headers.len()),
                                        Reverse(matcher.query.len()),
                                        age_text(&route.metadata),
                                        format!("{}/{}", key.namespace, key.name),
                                        rule.index,
                                        m,
                                    ),
                                });
                            }
                        }
                    }
                }
            }
        }
        conditions.push(match &compiled.unresolved {
            None => cond("ResolvedRefs", true, "ResolvedRefs", "", generation),
            Some((reason, message)) => {
                cond("ResolvedRefs", false, reason, message.clone(), generation)
            }
        });
        if !compiled.dropped.is_empty() && !compiled.rules.is_empty() {
            conditions.push(cond(
                "PartiallyInvalid",
                true,
                "UnsupportedValue",
                compiled.dropped.join("; "),
                generation,
            ));
        }
        reports.push(RouteParentReport {
            parent_ref: parent.clone(),
            conditions,
        });
    }
    let _ = controller;
    if !reports.is_empty() {
        status.routes.insert(key, reports);
    }
}

fn namespace_allowed(
    l: &PlannedListener<'_>,
    route_ns: &str,
    namespaces: &HashMap<&str, &Namespace>,
) -> bool {
    let rn = l
        .spec
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match rn.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Selector" => {
            let Some(selector) = rn
                .and_then(|n| n.selector.as_ref())
                .and_then(|s| Selector::from_label_selector(s).ok())
            else {
                return false;
            };
            namespaces
                .get(route_ns)
                .is_some_and(|ns| selector.matches_opt(ns.metadata.labels.as_ref()))
        }
        _ => l.gateway.metadata.namespace.as_deref() == Some(route_ns),
    }
}

struct CompiledRule {
    index: usize,
    matchers: Vec<Arc<Matcher>>,
    action: Arc<Action>,
}

struct CompiledRoute {
    rules: Vec<CompiledRule>,
    /// Rules left out, with why (they make the route PartiallyInvalid, or
    /// not Accepted when none is left).
    dropped: Vec<String>,
    /// The first reference that did not resolve: (reason, message).
    unresolved: Option<Refusal>,
}

/// A size bound for compiled regular expressions: a hostile pattern cannot
/// make the planner (or a request) expensive.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

fn compile_regex(pattern: &str) -> Result<Regex, String> {
    // The whole value must match (as RE2-based implementations do).
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("regular expression {pattern:?} does not compile: {e}"))
}

fn compile_match(m: &HTTPRouteMatch) -> Result<Matcher, String> {
    let path = m.path.as_ref();
    let value = path
        .and_then(|p| p.value.clone())
        .unwrap_or_else(|| "/".into());
    let path = match path
        .and_then(|p| p.type_.as_deref())
        .unwrap_or("PathPrefix")
    {
        "Exact" => PathMatch::Exact(value),
        "RegularExpression" => PathMatch::RegularExpression(compile_regex(&value)?),
        _ => PathMatch::Prefix {
            elements: value
                .split('/')
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect(),
            value,
        },
    };
    let value_match = |t: Option<&str>, v: &str| -> Result<ValueMatch, String> {
        Ok(match t.unwrap_or("Exact") {
            "RegularExpression" => ValueMatch::RegularExpression(compile_regex(v)?),
            _ => ValueMatch::Exact(v.to_owned()),
        })
    };
    let mut headers = Vec::new();
    for h in &m.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("{:?} is not a header name", h.name))?;
        headers.push((name, value_match(h.type_.as_deref(), &h.value)?));
    }
    let mut query = Vec::new();
    for q in &m.query_params {
        query.push((q.name.clone(), value_match(q.type_.as_deref(), &q.value)?));
    }
    Ok(Matcher {
        path,
        headers,
        query,
        method: m.method.clone(),
    })
}

/// Compile a route's rules: a rule whose matches or filters cannot be
/// served is dropped (and said); an invalid backendRef takes only its
/// share of the rule's requests (answered 500).
fn compile_rules(
    state: &ClusterState,
    grants: &Grants,
    route: &HTTPRoute,
    key: &ObjectKey,
    backends: &mut BackendCache,
) -> CompiledRoute {
    let mut out = CompiledRoute {
        rules: Vec::new(),
        dropped: Vec::new(),
        unresolved: None,
    };
    let default_rules = [Default::default()];
    let rules = route.spec.rules.as_deref().unwrap_or(&default_rules);
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let default_match = [HTTPRouteMatch::default()];
        let matches = rule
            .matches
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or(&default_match);
        let compiled: Result<Vec<Matcher>, String> = matches
            .iter()
            .enumerate()
            .map(|(j, m)| compile_match(m).map_err(|e| format!("{at}.matches[{j}]: {e}")))
            .collect();
        let matchers = match compiled {
            Ok(m) => m,
            Err(e) => {
                out.dropped.push(e);
                continue;
            }
        };
        // The prefix ReplacePrefixMatch replaces: the single PathPrefix
        // match admission insists on.
        let prefix = match &matchers[..] {
            [Matcher {
                path: PathMatch::Prefix { value, .. },
                ..
            }] => Some(value.as_str()),
            _ => None,
        };
        let mut unresolved = |reason: &'static str, message: String| {
            out.unresolved.get_or_insert((reason, message));
        };
        let (filters, fails) = match compile_filters(
            state,
            grants,
            key,
            &rule.filters,
            prefix,
            backends,
            &format!("{at}.filters"),
            &mut unresolved,
        ) {
            Ok(f) => (f, None),
            Err(e) => (Filters::default(), Some(e)),
        };
        let mut weighted = Vec::new();
        for (j, b) in rule.backend_refs.iter().enumerate() {
            let at = format!("{at}.backendRefs[{j}]");
            let target = match resolve_backend(state, grants, key, b, backends) {
                Ok(backend) => Target::Backend(backend),
                Err((reason, message)) => {
                    let message = format!("{at}: {message}");
                    unresolved(reason, message.clone());
                    Target::Invalid(message)
                }
            };
            let (bf, target) = match compile_filters(
                state,
                grants,
                key,
                &b.filters,
                prefix,
                backends,
                &format!("{at}.filters"),
                &mut unresolved,
            ) {
                Ok(f) => (f, target),
                Err(e) => (Filters::default(), Target::Invalid(e)),
            };
            weighted.push(WeightedBackend {
                weight: u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0),
                target,
                filters: bf,
            });
        }
        let total_weight = weighted.iter().map(|b| u64::from(b.weight)).sum();
        let timeout = rule.timeouts.as_ref().and_then(|t| {
            let ms =
                |v: &Option<String>| v.as_deref().and_then(parse_duration).filter(|ms| *ms > 0);
            match (ms(&t.request), ms(&t.backend_request)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .map(Duration::from_millis)
        });
        out.rules.push(CompiledRule {
            index: i,
            matchers: matchers.into_iter().map(Arc::new).collect(),
            action: Arc::new(Action {
                route: key.clone(),
                rule: i,
                filters,
                backends: weighted,
                total_weight,
                next: AtomicU64::new(0),
                timeout,
                fails,
            }),
        });
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn compile_filters(
    state: &ClusterState,
    grants: &Grants,
    key: &ObjectKey,
    list: &[HTTPRouteFilter],
    prefix: Option<&str>,
    backends: &mut BackendCache,
    at: &str,
    unresolved: &mut impl FnMut(&'static str, String),
) -> Result<Filters, String> {
    let mut f = Filters::default();
    for (i, filter) in list.iter().enumerate() {
        let at = format!("{at}[{i}]");
        match filter.type_.as_str() {
            "RequestHeaderModifier" => {
                if let Some(h) = &filter.request_header_modifier {
                    f.request_headers =
                        Some(HeaderModifier::from_filter(h).map_err(|e| format!("{at}: {e}"))?);
                }
            }
            "ResponseHeaderModifier" => {
                if let Some(h) = &filter.response_header_modifier {
                    f.response_headers =
                        Some(HeaderModifier::from_filter(h).map_err(|e| format!("{at}: {e}"))?);
                }
            }
            "RequestRedirect" => {
                if let Some(r) = &filter.request_redirect {
                    f.redirect = Some(Redirect {
                        scheme: r.scheme.clone(),
                        hostname: r.hostname.clone(),
                        path: r
                            .path
                            .as_ref()
                            .and_then(|p| PathRewrite::from_modifier(p, prefix)),
                        port: r.port.and_then(|p| u16::try_from(p).ok()),
                        status: r
                            .status_code
                            .and_then(|c| u16::try_from(c).ok())
                            .unwrap_or(302),
                    });
                }
            }
            "URLRewrite" => {
                if let Some(r) = &filter.url_rewrite {
                    f.rewrite_host = r.hostname.clone();
                    f.rewrite_path = r
                        .path
                        .as_ref()
                        .and_then(|p| PathRewrite::from_modifier(p, prefix));
                }
            }
            "RequestMirror" => {
                if let Some(m) = &filter.request_mirror {
                    let b = HTTPBackendRef {
                        group: m.backend_ref.group.clone(),
                        kind: m.backend_ref.kind.clone(),
                        name: m.backend_ref.name.clone(),
                        namespace: m.backend_ref.namespace.clone(),
                        port: m.backend_ref.port,
                        weight: None,
                        filters: Vec::new(),
                    };
                    match resolve_backend(state, grants, key, &b, backends) {
                        Ok(backend) => {
                            let per_million = match (&m.percent, &m.fraction) {
                                (Some(p), _) => u32::try_from(*p).unwrap_or(0).min(100) * 10_000,
                                (None, Some(fr)) => {
                                    let d = i64::from(fr.denominator.unwrap_or(100).max(1));
                                    u32::try_from(i64::from(fr.numerator) * 1_000_000 / d)
                                        .unwrap_or(0)
                                }
                                (None, None) => 1_000_000,
                            };
                            f.mirrors.push(Mirror {
                                backend,
                                per_million,
                            });
                        }
                        // A mirror that does not resolve is not sent; the
                        // route says why.
                        Err((reason, message)) => {
                            unresolved(reason, format!("{at}.requestMirror.backendRef: {message}"))
                        }
                    }
                }
            }
            "ExtensionRef" => {
                let message = format!("{at}: ExtensionRef filters are not supported by strait");
                unresolved("InvalidKind", message.clone());
                return Err(message);
            }
            other => return Err(format!("{at}: filter type {other:?} is not supported")),
        }
    }
    Ok(f)
}

/// A backendRef to the endpoints of a Service port, or (reason, why).
fn resolve_backend(
    state: &ClusterState,
    grants: &Grants,
    route: &ObjectKey,
    b: &HTTPBackendRef,
    cache: &mut BackendCache,
) -> Result<Arc<Backend>, Refusal> {
    let group = b.group.as_deref().unwrap_or_default();
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err((
            "InvalidKind",
            format!("{group}/{kind} backends are not supported: use a Service"),
        ));
    }
    let namespace = b
        .namespace
        .clone()
        .unwrap_or_else(|| route.namespace.clone());
    if namespace != route.namespace
        && !grants.permits(
            GROUP,
            HTTP_ROUTE_KIND,
            &route.namespace,
            "",
            "Service",
            &namespace,
            &b.name,
        )
    {
        return Err(("RefNotPermitted", format!("Service {namespace}/{} is in another namespace and no ReferenceGrant there allows it", b.name)));
    }
    let Some(port) = b.port else {
        return Err(("UnsupportedValue", "a Service backend needs a port".into()));
    };
    cache.resolve(state, &namespace, &b.name, port)
}

#[derive(Default)]
struct BackendCache {
    resolved: HashMap<(String, String, i32), Result<Arc<Backend>, Refusal>>,
}

impl BackendCache {
    fn resolve(
        &mut self,
        state: &ClusterState,
        namespace: &str,
        name: &str,
        port: i32,
    ) -> Result<Arc<Backend>, Refusal> {
        self.resolved
            .entry((namespace.to_owned(), name.to_owned(), port))
            .or_insert_with(|| {
                let p = ServiceBackendPort {
                    name: None,
                    number: Some(port),
                };
                match crate::plan::endpoints_of(state, namespace, name, &p) {
                    Ok(endpoints) => Ok(Arc::new(Backend::new(
                        format!("{namespace}/{name}:{port}"),
                        endpoints,
                    ))),
                    Err((_, why)) => Err(("BackendNotFound", why)),
                }
            })
            .clone()
    }
}

/// The ReferenceGrants of a snapshot, asked whether a reference may cross
/// into their namespace.
struct Grants<'a> {
    state: &'a ClusterState,
}

impl<'a> Grants<'a> {
    fn of(state: &'a ClusterState) -> Grants<'a> {
        Grants { state }
    }

    #[allow(clippy::too_many_arguments)]
    fn permits(
        &self,
        from_group: &str,
        from_kind: &str,
        from_ns: &str,
        to_group: &str,
        to_kind: &str,
        to_ns: &str,
        to_name: &str,
    ) -> bool {
        self.state.reference_grants.in_namespace(to_ns).any(|g| {
            g.spec
                .from
                .iter()
                .any(|f| f.group == from_group && f.kind == from_kind && f.namespace == from_ns)
                && g.spec.to.iter().any(|t| {
                    t.group == to_group
                        && t.kind == to_kind
                        && t.name
                            .as_deref()
                            .is_none_or(|n| n.is_empty() || n == to_name)
                })
        })
    }
}

fn key_of(
    kind: Kind,
    meta: &strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> ObjectKey {
    ObjectKey::new(
        kind,
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Oldest first; then by namespace/name (the spec's tie-break).
fn age(
    meta: &strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (String, String, String) {
    (
        age_text(meta),
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The creation time as sortable text (RFC 3339 in UTC sorts as time);
/// unset sorts first.
fn age_text(
    meta: &strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    meta.creation_timestamp
        .as_ref()
        .and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn prefix_rewrites_follow_the_spec_table() {
        let cases = [
            ("/foo", "/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo", "/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo/", "/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo/", "/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo", "/foo/", "/xyz", "/xyz/"),
            ("/foo", "/foo/bar", "", "/bar"),
            ("/foo", "/foo/bar", "/", "/bar"),
            ("/foo", "/foo", "/", "/"),
            ("/foo", "/foo/", "/", "/"),
            ("/", "/foo", "/xyz", "/xyz/foo"),
        ];
        for (matched, path, replacement, want) in cases {
            let r = PathRewrite::Prefix {
                matched: matched.into(),
                replacement: replacement.into(),
            };
            assert_eq!(r.apply(path), want, "{matched} {path} {replacement}");
        }
    }

    #[test]
    fn hostnames_intersect_as_the_spec_says() {
        let p = |h: &str| HostPattern::parse(Some(h));
        assert_eq!(
            HostPattern::intersect(&p("*.example.com"), &p("foo.example.com")),
            Some(p("foo.example.com"))
        );
        assert_eq!(
            HostPattern::intersect(&p("foo.example.com"), &p("*.example.com")),
            Some(p("foo.example.com"))
        );
        assert_eq!(
            HostPattern::intersect(&p("*.example.com"), &p("*.foo.example.com")),
            Some(p("*.foo.example.com"))
        );
        assert_eq!(
            HostPattern::intersect(&p("*.example.com"), &p("example.com")),
            None
        );
        assert_eq!(
            HostPattern::intersect(&p("a.example.com"), &p("b.example.com")),
            None
        );
        assert!(p("*.example.com").matches("a.b.example.com"));
        assert!(!p("*.example.com").matches("example.com"));
    }

    #[test]
    fn headers_are_set_added_and_removed() {
        let m = HeaderModifier {
            set: vec![(
                HeaderName::from_static("x-set"),
                HeaderValue::from_static("new"),
            )],
            add: vec![(
                HeaderName::from_static("x-add"),
                HeaderValue::from_static("b"),
            )],
            remove: vec![HeaderName::from_static("x-gone")],
        };
        let mut h = HeaderMap::new();
        h.insert("x-set", HeaderValue::from_static("old"));
        h.insert("x-add", HeaderValue::from_static("a"));
        h.insert("x-gone", HeaderValue::from_static("v"));
        m.apply(&mut h);
        assert_eq!(h["x-set"], "new");
        assert_eq!(h["x-add"], "a,b");
        assert!(!h.contains_key("x-gone"));
    }
}
