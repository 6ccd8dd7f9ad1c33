//! Gateway API (`gateway.networking.k8s.io`): GatewayClass, Gateway and
//! HTTPRoute of v1, ReferenceGrant of v1beta1 — the roles of the
//! infrastructure provider, the cluster operator and the application
//! developer, and the consent of a namespace to be referred to.
//!
//! k8s-openapi has no types for them (they are CRDs), so they are here,
//! shaped like the API's Go types and implementing k8s-openapi's `Resource`
//! and `Metadata`, as [`crate::cnp`] does. Admission ([`admit`]) defaults
//! what the CRDs' schemas default and refuses what their OpenAPI schema and
//! CEL rules refuse, naming the field: an object a real API server would
//! not store is not stored here either. What the schema cannot see (a
//! Service that does not exist, a regular expression that does not
//! compile) is the controller's to report in `status`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

use crate::names::dns_label;
use crate::selector::Selector;

/// The API group of every kind here.
pub const GROUP: &str = "gateway.networking.k8s.io";

// ---- shared references ----

/// A reference from a Route to the Gateway (and listener) it attaches to.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// Defaulted to `gateway.networking.k8s.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Defaulted to `Gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The Route's own namespace when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: String,
    /// A listener's name: attach to that listener only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// A listener's port: attach to the listeners on that port only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// A reference to a backend (a Service unless group/kind say otherwise).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendObjectReference {
    /// Defaulted to `""` (the core group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Defaulted to `Service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// A reference to a Secret (or another kind holding a certificate).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectReference {
    /// Defaulted to `""`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Defaulted to `Secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteGroupKind {
    /// Defaulted to `gateway.networking.k8s.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: String,
}

// ---- GatewayClass ----

/// The kind of Gateways one controller implements.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClass {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: GatewayClassSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<GatewayClassStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassSpec {
    /// `domain/path`: strait's is `strait.dev/gateway-controller`.
    #[serde(default)]
    pub controller_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_ref: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

// ---- Gateway ----

/// Listeners (ports, protocols, hostnames, certificates) of one class.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: GatewaySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<GatewayStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    #[serde(default)]
    pub gateway_class_name: String,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<GatewayAddress>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayAddress {
    /// Defaulted to `IPAddress`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default)]
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub port: i32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTlsConfig>,
    /// Defaulted to `{namespaces: {from: Same}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTlsConfig {
    /// `Terminate` (the default) or `Passthrough`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_refs: Vec<SecretObjectReference>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoutes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<RouteGroupKind>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteNamespaces {
    /// `All`, `Same` (the default) or `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<GatewayAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub name: String,
    #[serde(default)]
    pub supported_kinds: Vec<RouteGroupKind>,
    #[serde(default)]
    pub attached_routes: i32,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

// ---- HTTPRoute ----

/// HTTP routing rules, attached to Gateways' listeners.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: HTTPRouteSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RouteStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Defaulted to one rule that matches every path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<HTTPRouteRule>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Defaulted to `[{path: {type: PathPrefix, value: /}}]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<HTTPRouteMatch>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HTTPRouteFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HTTPBackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HTTPRouteTimeouts>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HTTPHeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<HTTPQueryParamMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPPathMatch {
    /// `Exact`, `PathPrefix` (the default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Defaulted to `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPHeaderMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// The same shape as a header match.
pub type HTTPQueryParamMatch = HTTPHeaderMatch;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteFilter {
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HTTPHeaderFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HTTPHeaderFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<HTTPRequestMirrorFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<HTTPRequestRedirectFilter>,
    #[serde(
        default,
        rename = "urlRewrite",
        skip_serializing_if = "Option::is_none"
    )]
    pub url_rewrite: Option<HTTPURLRewriteFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<LocalObjectReference>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPHeaderFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HTTPHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HTTPHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPHeader {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRequestMirrorFilter {
    #[serde(default)]
    pub backend_ref: BackendObjectReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fraction {
    #[serde(default)]
    pub numerator: i32,
    /// Defaulted to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRequestRedirectFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Defaulted to 302.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPURLRewriteFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathModifier>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPPathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPBackendRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Defaulted to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HTTPRouteFilter>,
}

impl HTTPBackendRef {
    pub fn object_ref(&self) -> BackendObjectReference {
        BackendObjectReference {
            group: self.group.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            port: self.port,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    #[serde(default)]
    pub parents: Vec<RouteParentStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    pub parent_ref: ParentReference,
    pub controller_name: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

// ---- ReferenceGrant ----

/// A namespace's consent: objects of `from` may refer to its objects of
/// `to`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrant {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ReferenceGrantSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantSpec {
    #[serde(default)]
    pub from: Vec<ReferenceGrantFrom>,
    #[serde(default)]
    pub to: Vec<ReferenceGrantTo>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantFrom {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantTo {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

// ---- the kinds as k8s-openapi resources ----

/// Written with `apiVersion` and `kind`, as k8s-openapi writes built-in
/// kinds; `Resource`, `ListableResource` and `Metadata` as kube-rs needs.
macro_rules! crd {
    ($ty:ident, $version:literal, $plural:literal, $scope:ty, spec: $spec:ident, status: $status:ident) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                #[derive(Serialize)]
                #[serde(rename_all = "camelCase")]
                struct Whole<'a> {
                    api_version: &'static str,
                    kind: &'static str,
                    metadata: &'a ObjectMeta,
                    spec: &'a $spec,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    status: Option<&'a $status>,
                }
                Whole {
                    api_version: <Self as k8s_openapi::Resource>::API_VERSION,
                    kind: <Self as k8s_openapi::Resource>::KIND,
                    metadata: &self.metadata,
                    spec: &self.spec,
                    status: crd!(@status self, $status),
                }
                .serialize(s)
            }
        }

        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = concat!("gateway.networking.k8s.io/", $version);
            const GROUP: &'static str = GROUP;
            const KIND: &'static str = stringify!($ty);
            const VERSION: &'static str = $version;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = $scope;
        }

        impl k8s_openapi::ListableResource for $ty {
            const LIST_KIND: &'static str = concat!(stringify!($ty), "List");
        }

        impl k8s_openapi::Metadata for $ty {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
    (@status $self:ident, NoStatus) => { None };
    (@status $self:ident, $status:ident) => { $self.status.as_ref() };
}

/// ReferenceGrant has no status.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NoStatus;

crd!(GatewayClass, "v1", "gatewayclasses", k8s_openapi::ClusterResourceScope, spec: GatewayClassSpec, status: GatewayClassStatus);
crd!(Gateway, "v1", "gateways", k8s_openapi::NamespaceResourceScope, spec: GatewaySpec, status: GatewayStatus);
crd!(HTTPRoute, "v1", "httproutes", k8s_openapi::NamespaceResourceScope, spec: HTTPRouteSpec, status: RouteStatus);
crd!(ReferenceGrant, "v1beta1", "referencegrants", k8s_openapi::NamespaceResourceScope, spec: ReferenceGrantSpec, status: NoStatus);

// ---- admission ----

type Check = Result<(), (String, String)>;

fn bad(field: impl Into<String>, why: impl Into<String>) -> Check {
    Err((field.into(), why.into()))
}

/// The limits of the CRDs' schemas.
const MAX_LISTENERS: usize = 64;
const MAX_ADDRESSES: usize = 16;
const MAX_CERTIFICATE_REFS: usize = 64;
const MAX_ROUTE_KINDS: usize = 8;
const MAX_PARENT_REFS: usize = 32;
const MAX_HOSTNAMES: usize = 16;
const MAX_RULES: usize = 16;
const MAX_MATCHES: usize = 64;
const MAX_HEADER_MATCHES: usize = 16;
const MAX_FILTERS: usize = 16;
const MAX_BACKEND_REFS: usize = 16;
const MAX_HEADER_CHANGES: usize = 16;
const MAX_GRANT_ENTRIES: usize = 16;
const MAX_PATH: usize = 1024;
const MAX_HEADER_VALUE: usize = 4096;

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn too_many(field: &str, len: usize, max: usize) -> Check {
    if len > max {
        return bad(
            field,
            format!("Too many: {len}: must have at most {max} items"),
        );
    }
    Ok(())
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Check {
    if allowed.contains(&value) {
        return Ok(());
    }
    if value.is_empty() {
        return bad(field, "Required value");
    }
    let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
    bad(
        field,
        format!(
            "Unsupported value: {value:?}: supported values: {}",
            list.join(", ")
        ),
    )
}

fn port(field: &str, port: i32) -> Check {
    if !(1..=65535).contains(&port) {
        return bad(
            field,
            format!("Invalid value: {port}: must be between 1 and 65535"),
        );
    }
    Ok(())
}

/// `Hostname`: a DNS name, optionally `*.` and a DNS name; no IP address.
/// (The schema's pattern: lower-case RFC 1123 labels.)
pub fn validate_hostname(field: &str, host: &str, wildcard_allowed: bool) -> Check {
    let invalid = |why: &str| bad(field, format!("Invalid value: {host:?}: {why}"));
    if host.is_empty() {
        return invalid("must not be empty");
    }
    if host.len() > 253 {
        return invalid("must be no more than 253 characters");
    }
    if host.parse::<IpAddr>().is_ok() {
        return invalid("must be a DNS name, not an IP address");
    }
    let name = match host.strip_prefix("*.") {
        Some(rest) if wildcard_allowed => rest,
        Some(_) => return invalid("a wildcard is not allowed here"),
        None => host,
    };
    for label in name.split('.') {
        if dns_label(label).is_err() {
            return invalid(
                "must be lower case DNS labels (letters, digits, '-') separated by '.', optionally after '*.'",
            );
        }
    }
    Ok(())
}

/// `SectionName` and the names of objects referred to: an RFC 1123
/// subdomain of at most 253 characters.
fn section_name(field: &str, name: &str) -> Check {
    if name.is_empty() {
        return bad(field, "Required value");
    }
    crate::names::dns_subdomain(name)
        .or_else(|why| bad(field, format!("Invalid value: {name:?}: {why}")))
}

fn object_name(field: &str, name: &str) -> Check {
    if name.is_empty() {
        return bad(field, "Required value");
    }
    if name.len() > 253 {
        return bad(field, "Too long: may not be more than 253 bytes");
    }
    Ok(())
}

fn namespace(field: &str, ns: &Option<String>) -> Check {
    match ns {
        Some(ns) => {
            dns_label(ns).or_else(|why| bad(field, format!("Invalid value: {ns:?}: {why}")))
        }
        None => Ok(()),
    }
}

/// `Group`: empty (the core group) or an RFC 1123 subdomain.
fn group(field: &str, g: &str) -> Check {
    if g.is_empty() {
        return Ok(());
    }
    crate::names::dns_subdomain(g).or_else(|why| bad(field, format!("Invalid value: {g:?}: {why}")))
}

/// `Kind`: a letter, then letters, digits or '-', at most 63.
fn kind(field: &str, k: &str) -> Check {
    let b = k.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        bad(
            field,
            format!("Invalid value: {k:?}: must start with a letter and be letters, digits or '-', at most 63"),
        )
    }
}

/// An HTTP header (or query parameter) name: an RFC 7230 token.
fn token(field: &str, name: &str) -> Check {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        bad(
            field,
            format!("Invalid value: {name:?}: must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~), 1 to 256 characters"),
        )
    }
}

fn header_value(field: &str, value: &str) -> Check {
    if value.is_empty() || value.len() > MAX_HEADER_VALUE {
        return bad(
            field,
            format!("Invalid value: must be 1 to {MAX_HEADER_VALUE} characters"),
        );
    }
    if value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return bad(field, "Invalid value: must not contain control characters");
    }
    Ok(())
}

/// A Gateway API `Duration`: one to four `<number><unit>` with units h,
/// m, s, ms (the GEP-2257 subset); returns milliseconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let mut rest = text;
    let mut total: u64 = 0;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += n * unit;
        parts += 1;
    }
    (1..=4).contains(&parts).then_some(total)
}

/// Admission of a GatewayClass.
pub(crate) fn admit_gateway_class(class: &mut GatewayClass) -> Check {
    let name = &class.spec.controller_name;
    let at = "spec.controllerName";
    match name.split_once('/') {
        _ if name.is_empty() => return bad(at, "Required value"),
        Some((domain, path))
            if name.len() <= 253
                && crate::names::dns_subdomain(domain).is_ok()
                && !path.is_empty()
                && path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:".contains(&b)) => {}
        _ => {
            return bad(
                at,
                format!("Invalid value: {name:?}: must be a domain, '/' and a path (e.g. strait.dev/gateway-controller)"),
            )
        }
    }
    if class
        .spec
        .description
        .as_ref()
        .is_some_and(|d| d.len() > 64)
    {
        return bad(
            "spec.description",
            "Too long: may not be more than 64 bytes",
        );
    }
    Ok(())
}

/// Admission of a Gateway: defaults (`allowedRoutes`, TLS mode) and the
/// schema's and CEL rules' refusals.
pub(crate) fn admit_gateway(gateway: &mut Gateway) -> Check {
    let spec = &mut gateway.spec;
    object_name("spec.gatewayClassName", &spec.gateway_class_name)?;
    if spec.listeners.is_empty() {
        return bad("spec.listeners", "Required value: at least one listener");
    }
    too_many("spec.listeners", spec.listeners.len(), MAX_LISTENERS)?;
    too_many("spec.addresses", spec.addresses.len(), MAX_ADDRESSES)?;
    for (i, address) in spec.addresses.iter_mut().enumerate() {
        let at = format!("spec.addresses[{i}]");
        let t = address.type_.get_or_insert_with(|| "IPAddress".into());
        if t == "IPAddress" && address.value.parse::<IpAddr>().is_err() {
            return bad(
                format!("{at}.value"),
                format!("Invalid value: {:?}: must be an IP address", address.value),
            );
        }
        if t == "Hostname" {
            validate_hostname(&format!("{at}.value"), &address.value, false)?;
        }
    }
    let mut names = BTreeSet::new();
    let mut combinations = BTreeSet::new();
    for (i, listener) in spec.listeners.iter_mut().enumerate() {
        let at = format!("spec.listeners[{i}]");
        section_name(&format!("{at}.name"), &listener.name)?;
        if !names.insert(listener.name.clone()) {
            return bad(
                format!("{at}.name"),
                format!(
                    "Duplicate value: {:?}: Listener name must be unique within the Gateway",
                    listener.name
                ),
            );
        }
        port(&format!("{at}.port"), listener.port)?;
        let protocol = listener.protocol.as_str();
        let protocol_ok = !protocol.is_empty()
            && protocol.len() <= 255
            && protocol
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-./".contains(&b));
        if !protocol_ok {
            return bad(
                format!("{at}.protocol"),
                format!("Invalid value: {protocol:?}: must be a protocol name (HTTP, HTTPS, TLS, TCP, UDP or domain/name)"),
            );
        }
        if let Some(host) = &listener.hostname {
            validate_hostname(&format!("{at}.hostname"), host, true)?;
            if matches!(protocol, "TCP" | "UDP") {
                return bad(
                    format!("{at}.hostname"),
                    "Forbidden: hostname must not be specified for protocols ['TCP', 'UDP']",
                );
            }
        }
        if !combinations.insert((
            listener.port,
            protocol.to_owned(),
            listener.hostname.clone(),
        )) {
            return bad(
                at.clone(),
                "Duplicate value: Combination of port, protocol and hostname must be unique for each listener",
            );
        }
        match &mut listener.tls {
            Some(_) if matches!(protocol, "HTTP" | "TCP" | "UDP") => {
                return bad(
                    format!("{at}.tls"),
                    "Forbidden: tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']",
                )
            }
            None if matches!(protocol, "HTTPS") => {
                return bad(
                    format!("{at}.tls"),
                    "Required value: tls mode must be set for protocol HTTPS",
                )
            }
            Some(tls) => {
                let mode = tls.mode.get_or_insert_with(|| "Terminate".into());
                one_of(
                    &format!("{at}.tls.mode"),
                    mode,
                    &["Terminate", "Passthrough"],
                )?;
                if mode == "Terminate" && tls.certificate_refs.is_empty() && tls.options.is_empty()
                {
                    return bad(
                        format!("{at}.tls"),
                        "Required value: certificateRefs or options must be specified when mode is Terminate",
                    );
                }
                too_many(
                    &format!("{at}.tls.certificateRefs"),
                    tls.certificate_refs.len(),
                    MAX_CERTIFICATE_REFS,
                )?;
                for (j, r) in tls.certificate_refs.iter_mut().enumerate() {
                    let at = format!("{at}.tls.certificateRefs[{j}]");
                    let g = r.group.get_or_insert_with(String::new);
                    group(&format!("{at}.group"), g)?;
                    let k = r.kind.get_or_insert_with(|| "Secret".into());
                    kind(&format!("{at}.kind"), k)?;
                    object_name(&format!("{at}.name"), &r.name)?;
                    namespace(&format!("{at}.namespace"), &r.namespace)?;
                }
            }
            None => {}
        }
        let allowed = listener.allowed_routes.get_or_insert_with(Default::default);
        let namespaces = allowed.namespaces.get_or_insert_with(Default::default);
        let from = namespaces.from.get_or_insert_with(|| "Same".into());
        one_of(
            &format!("{at}.allowedRoutes.namespaces.from"),
            from,
            &["All", "Selector", "Same"],
        )?;
        if let Some(selector) = &namespaces.selector {
            Selector::from_label_selector(selector).map_err(|e| {
                (
                    format!("{at}.allowedRoutes.namespaces.selector"),
                    e.to_string(),
                )
            })?;
        }
        if let Some(kinds) = &mut allowed.kinds {
            too_many(
                &format!("{at}.allowedRoutes.kinds"),
                kinds.len(),
                MAX_ROUTE_KINDS,
            )?;
            for (j, k) in kinds.iter_mut().enumerate() {
                let at = format!("{at}.allowedRoutes.kinds[{j}]");
                let g = k.group.get_or_insert_with(|| GROUP.into());
                group(&format!("{at}.group"), g)?;
                kind(&format!("{at}.kind"), &k.kind)?;
            }
        }
    }
    Ok(())
}

/// Admission of an HTTPRoute: defaults (rules, matches, path, header match
/// types, weights, references' group and kind, redirect status) and the
/// schema's and CEL rules' refusals.
pub(crate) fn admit_http_route(route: &mut HTTPRoute) -> Check {
    let spec = &mut route.spec;
    too_many("spec.parentRefs", spec.parent_refs.len(), MAX_PARENT_REFS)?;
    for (i, parent) in spec.parent_refs.iter_mut().enumerate() {
        let at = format!("spec.parentRefs[{i}]");
        let g = parent.group.get_or_insert_with(|| GROUP.into());
        group(&format!("{at}.group"), g)?;
        let k = parent.kind.get_or_insert_with(|| "Gateway".into());
        kind(&format!("{at}.kind"), k)?;
        object_name(&format!("{at}.name"), &parent.name)?;
        namespace(&format!("{at}.namespace"), &parent.namespace)?;
        if let Some(section) = &parent.section_name {
            section_name(&format!("{at}.sectionName"), section)?;
        }
        if let Some(p) = parent.port {
            port(&format!("{at}.port"), p)?;
        }
    }
    // CEL: two references to one parent must tell their listeners apart.
    for (i, a) in spec.parent_refs.iter().enumerate() {
        for b in &spec.parent_refs[..i] {
            let same_parent = (&a.group, &a.kind, &a.namespace, &a.name)
                == (&b.group, &b.kind, &b.namespace, &b.name);
            if !same_parent {
                continue;
            }
            let told_apart = |p: &ParentReference| p.section_name.is_some() || p.port.is_some();
            if !told_apart(a) || !told_apart(b) {
                return bad(
                    "spec.parentRefs",
                    "Invalid value: sectionName or port must be specified when parentRefs includes 2 or more references to the same parent",
                );
            }
            if (&a.section_name, a.port) == (&b.section_name, b.port) {
                return bad(
                    "spec.parentRefs",
                    "Invalid value: sectionName or port must be unique when parentRefs includes 2 or more references to the same parent",
                );
            }
        }
    }
    too_many("spec.hostnames", spec.hostnames.len(), MAX_HOSTNAMES)?;
    for (i, h) in spec.hostnames.iter().enumerate() {
        validate_hostname(&format!("spec.hostnames[{i}]"), h, true)?;
    }
    let rules = spec
        .rules
        .get_or_insert_with(|| vec![HTTPRouteRule::default()]);
    too_many("spec.rules", rules.len(), MAX_RULES)?;
    let mut rule_names = BTreeSet::new();
    for (i, rule) in rules.iter_mut().enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(name) = &rule.name {
            section_name(&format!("{at}.name"), name)?;
            if !rule_names.insert(name.clone()) {
                return bad(
                    format!("{at}.name"),
                    format!("Duplicate value: {name:?}: Rule name must be unique within the route"),
                );
            }
        }
        let matches = rule
            .matches
            .get_or_insert_with(|| vec![HTTPRouteMatch::default()]);
        too_many(&format!("{at}.matches"), matches.len(), MAX_MATCHES)?;
        for (j, m) in matches.iter_mut().enumerate() {
            route_match(&format!("{at}.matches[{j}]"), m)?;
        }
        let single_prefix = matches.len() == 1
            && matches[0].path.as_ref().and_then(|p| p.type_.as_deref()) == Some("PathPrefix");
        filters(&format!("{at}.filters"), &mut rule.filters, single_prefix)?;
        too_many(
            &format!("{at}.backendRefs"),
            rule.backend_refs.len(),
            MAX_BACKEND_REFS,
        )?;
        for (j, b) in rule.backend_refs.iter_mut().enumerate() {
            let at = format!("{at}.backendRefs[{j}]");
            let weight = *b.weight.get_or_insert(1);
            if !(0..=1_000_000).contains(&weight) {
                return bad(
                    format!("{at}.weight"),
                    format!("Invalid value: {weight}: must be between 0 and 1000000"),
                );
            }
            backend_ref(
                &at,
                &mut b.group,
                &mut b.kind,
                &b.name,
                &b.namespace,
                b.port,
            )?;
            filters(&format!("{at}.filters"), &mut b.filters, single_prefix)?;
        }
        if let Some(t) = &rule.timeouts {
            let request = duration(&format!("{at}.timeouts.request"), &t.request)?;
            let backend = duration(&format!("{at}.timeouts.backendRequest"), &t.backend_request)?;
            if let (Some(r), Some(b)) = (request, backend) {
                // "0s" turns a timeout off: no bound for the other.
                if r != 0 && (b == 0 || b > r) {
                    return bad(
                        format!("{at}.timeouts"),
                        "Invalid value: backendRequest timeout cannot be longer than request timeout",
                    );
                }
            }
        }
    }
    Ok(())
}

fn duration(field: &str, text: &Option<String>) -> Result<Option<u64>, (String, String)> {
    match text {
        None => Ok(None),
        Some(t) => match parse_duration(t) {
            Some(ms) => Ok(Some(ms)),
            None => Err((
                field.to_owned(),
                format!("Invalid value: {t:?}: must be 1 to 4 of <number><unit>, units h, m, s or ms (e.g. 1s, 500ms, 1h30m)"),
            )),
        },
    }
}

fn backend_ref(
    at: &str,
    g: &mut Option<String>,
    k: &mut Option<String>,
    name: &str,
    ns: &Option<String>,
    p: Option<i32>,
) -> Check {
    let g = g.get_or_insert_with(String::new);
    group(&format!("{at}.group"), g)?;
    let k = k.get_or_insert_with(|| "Service".into());
    kind(&format!("{at}.kind"), k)?;
    object_name(&format!("{at}.name"), name)?;
    namespace(&format!("{at}.namespace"), ns)?;
    match p {
        Some(p) => port(&format!("{at}.port"), p),
        None if g.is_empty() && k == "Service" => bad(
            format!("{at}.port"),
            "Required value: Must have port for Service reference",
        ),
        None => Ok(()),
    }
}

fn route_match(at: &str, m: &mut HTTPRouteMatch) -> Check {
    let path = m.path.get_or_insert_with(Default::default);
    let t = path
        .type_
        .get_or_insert_with(|| "PathPrefix".into())
        .clone();
    one_of(
        &format!("{at}.path.type"),
        &t,
        &["Exact", "PathPrefix", "RegularExpression"],
    )?;
    let value = path.value.get_or_insert_with(|| "/".into());
    let field = format!("{at}.path.value");
    if value.len() > MAX_PATH {
        return bad(
            field,
            format!("Too long: may not be more than {MAX_PATH} bytes"),
        );
    }
    if t != "RegularExpression" {
        if !value.starts_with('/') {
            return bad(
                field,
                "Invalid value: value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']",
            );
        }
        for seq in ["//", "/./", "/../", "%2f", "%2F", "#"] {
            if value.contains(seq) {
                return bad(
                    field,
                    format!("Invalid value: must not contain '{seq}' when type one of ['Exact', 'PathPrefix']"),
                );
            }
        }
        for suffix in ["/..", "/."] {
            if value.ends_with(suffix) {
                return bad(
                    field,
                    format!("Invalid value: must not end with '{suffix}' when type one of ['Exact', 'PathPrefix']"),
                );
            }
        }
    }
    for (list, what) in [
        (&mut m.headers, "headers"),
        (&mut m.query_params, "queryParams"),
    ] {
        too_many(&format!("{at}.{what}"), list.len(), MAX_HEADER_MATCHES)?;
        let mut seen = BTreeSet::new();
        for (k, h) in list.iter_mut().enumerate() {
            let at = format!("{at}.{what}[{k}]");
            let t = h.type_.get_or_insert_with(|| "Exact".into());
            one_of(&format!("{at}.type"), t, &["Exact", "RegularExpression"])?;
            token(&format!("{at}.name"), &h.name)?;
            header_value(&format!("{at}.value"), &h.value)?;
            // Header names are case-insensitive; query parameter names are not.
            let key = if what == "headers" {
                h.name.to_ascii_lowercase()
            } else {
                h.name.clone()
            };
            if !seen.insert(key) {
                return bad(
                    format!("{at}.name"),
                    format!("Duplicate value: {:?}", h.name),
                );
            }
        }
    }
    if let Some(method) = &m.method {
        one_of(&format!("{at}.method"), method, METHODS)?;
    }
    Ok(())
}

fn filters(at: &str, list: &mut [HTTPRouteFilter], single_prefix: bool) -> Check {
    too_many(at, list.len(), MAX_FILTERS)?;
    let mut seen = BTreeSet::new();
    for (i, f) in list.iter_mut().enumerate() {
        let at = format!("{at}[{i}]");
        one_of(
            &format!("{at}.type"),
            &f.type_,
            &[
                "RequestHeaderModifier",
                "ResponseHeaderModifier",
                "RequestMirror",
                "RequestRedirect",
                "URLRewrite",
                "ExtensionRef",
            ],
        )?;
        let set = [
            (
                "RequestHeaderModifier",
                "requestHeaderModifier",
                f.request_header_modifier.is_some(),
            ),
            (
                "ResponseHeaderModifier",
                "responseHeaderModifier",
                f.response_header_modifier.is_some(),
            ),
            ("RequestMirror", "requestMirror", f.request_mirror.is_some()),
            (
                "RequestRedirect",
                "requestRedirect",
                f.request_redirect.is_some(),
            ),
            ("URLRewrite", "urlRewrite", f.url_rewrite.is_some()),
            ("ExtensionRef", "extensionRef", f.extension_ref.is_some()),
        ];
        for (t, field, present) in set {
            if t == f.type_ && !present {
                return bad(
                    format!("{at}.{field}"),
                    format!("Required value: filter.{field} must be specified for {t} filter.type"),
                );
            }
            if t != f.type_ && present {
                return bad(
                    format!("{at}.{field}"),
                    format!("Forbidden: filter.{field} must be nil if the filter.type is not {t}"),
                );
            }
        }
        if f.type_ != "RequestMirror" && !seen.insert(f.type_.clone()) {
            return bad(
                format!("{at}.type"),
                format!("Duplicate value: {} filter cannot be repeated", f.type_),
            );
        }
        for (field, h) in [
            ("requestHeaderModifier", &f.request_header_modifier),
            ("responseHeaderModifier", &f.response_header_modifier),
        ] {
            if let Some(h) = h {
                header_filter(&format!("{at}.{field}"), h)?;
            }
        }
        if let Some(m) = &mut f.request_mirror {
            let at = format!("{at}.requestMirror");
            let b = &mut m.backend_ref;
            backend_ref(
                &format!("{at}.backendRef"),
                &mut b.group,
                &mut b.kind,
                &b.name,
                &b.namespace,
                b.port,
            )?;
            if m.percent.is_some() && m.fraction.is_some() {
                return bad(at, "Invalid value: Only one of percent or fraction may be specified in HTTPRequestMirrorFilter");
            }
            if let Some(p) = m.percent {
                if !(0..=100).contains(&p) {
                    return bad(
                        format!("{at}.percent"),
                        format!("Invalid value: {p}: must be between 0 and 100"),
                    );
                }
            }
            if let Some(fr) = &mut m.fraction {
                let d = *fr.denominator.get_or_insert(100);
                if d < 1 || fr.numerator < 0 || fr.numerator > d {
                    return bad(
                        format!("{at}.fraction"),
                        "Invalid value: numerator must be at least 0 and at most the denominator, which must be at least 1",
                    );
                }
            }
        }
        if let Some(r) = &mut f.request_redirect {
            let at = format!("{at}.requestRedirect");
            if let Some(s) = &r.scheme {
                one_of(&format!("{at}.scheme"), s, &["http", "https"])?;
            }
            if let Some(h) = &r.hostname {
                validate_hostname(&format!("{at}.hostname"), h, false)?;
            }
            if let Some(p) = r.port {
                port(&format!("{at}.port"), p)?;
            }
            let code = *r.status_code.get_or_insert(302);
            if ![301, 302, 303, 307, 308].contains(&code) {
                return bad(
                    format!("{at}.statusCode"),
                    format!("Unsupported value: {code}: supported values: 301, 302, 303, 307, 308"),
                );
            }
            if let Some(p) = &r.path {
                path_modifier(&format!("{at}.path"), p, single_prefix, "RequestRedirect")?;
            }
        }
        if let Some(r) = &f.url_rewrite {
            let at = format!("{at}.urlRewrite");
            if let Some(h) = &r.hostname {
                validate_hostname(&format!("{at}.hostname"), h, false)?;
            }
            if let Some(p) = &r.path {
                path_modifier(&format!("{at}.path"), p, single_prefix, "URLRewrite")?;
            }
        }
        if let Some(e) = &f.extension_ref {
            group(&format!("{at}.extensionRef.group"), &e.group)?;
            kind(&format!("{at}.extensionRef.kind"), &e.kind)?;
            object_name(&format!("{at}.extensionRef.name"), &e.name)?;
        }
    }
    Ok(())
}

fn header_filter(at: &str, h: &HTTPHeaderFilter) -> Check {
    for (list, what) in [(&h.set, "set"), (&h.add, "add")] {
        too_many(&format!("{at}.{what}"), list.len(), MAX_HEADER_CHANGES)?;
        let mut seen = BTreeSet::new();
        for (i, header) in list.iter().enumerate() {
            token(&format!("{at}.{what}[{i}].name"), &header.name)?;
            if header.value.len() > MAX_HEADER_VALUE
                || header
                    .value
                    .bytes()
                    .any(|b| b < 0x20 && b != b'\t' || b == 0x7f)
            {
                return bad(
                    format!("{at}.{what}[{i}].value"),
                    format!("Invalid value: at most {MAX_HEADER_VALUE} characters, no control characters"),
                );
            }
            if !seen.insert(header.name.to_ascii_lowercase()) {
                return bad(
                    format!("{at}.{what}[{i}].name"),
                    format!("Duplicate value: {:?}", header.name),
                );
            }
        }
    }
    too_many(&format!("{at}.remove"), h.remove.len(), MAX_HEADER_CHANGES)?;
    let mut seen = BTreeSet::new();
    for (i, name) in h.remove.iter().enumerate() {
        token(&format!("{at}.remove[{i}]"), name)?;
        if !seen.insert(name.to_ascii_lowercase()) {
            return bad(
                format!("{at}.remove[{i}]"),
                format!("Duplicate value: {name:?}"),
            );
        }
    }
    Ok(())
}

fn path_modifier(at: &str, p: &HTTPPathModifier, single_prefix: bool, filter: &str) -> Check {
    match p.type_.as_str() {
        "ReplaceFullPath" => {
            if p.replace_full_path.is_none() {
                return bad(at, "Required value: replaceFullPath must be specified when type is set to 'ReplaceFullPath'");
            }
            if p.replace_prefix_match.is_some() {
                return bad(at, "Invalid value: type must be 'ReplacePrefixMatch' when replacePrefixMatch is set");
            }
        }
        "ReplacePrefixMatch" => {
            if p.replace_prefix_match.is_none() {
                return bad(at, "Required value: replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'");
            }
            if p.replace_full_path.is_some() {
                return bad(
                    at,
                    "Invalid value: type must be 'ReplaceFullPath' when replaceFullPath is set",
                );
            }
            if !single_prefix {
                return bad(
                    at,
                    format!("Invalid value: When using {filter} filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified"),
                );
            }
        }
        other => one_of(
            &format!("{at}.type"),
            other,
            &["ReplaceFullPath", "ReplacePrefixMatch"],
        )?,
    }
    for value in [&p.replace_full_path, &p.replace_prefix_match]
        .into_iter()
        .flatten()
    {
        if value.len() > MAX_PATH || !value.starts_with('/') && !value.is_empty() {
            return bad(at, format!("Invalid value: {value:?}: must be an absolute path of at most {MAX_PATH} bytes"));
        }
        if value.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return bad(
                at,
                format!("Invalid value: {value:?}: must not contain spaces or control characters"),
            );
        }
    }
    Ok(())
}

/// Admission of a ReferenceGrant.
pub(crate) fn admit_reference_grant(grant: &ReferenceGrant) -> Check {
    let spec = &grant.spec;
    for (list_len, what) in [(spec.from.len(), "spec.from"), (spec.to.len(), "spec.to")] {
        if list_len == 0 {
            return bad(what, "Required value: at least one entry");
        }
        too_many(what, list_len, MAX_GRANT_ENTRIES)?;
    }
    for (i, f) in spec.from.iter().enumerate() {
        let at = format!("spec.from[{i}]");
        group(&format!("{at}.group"), &f.group)?;
        kind(&format!("{at}.kind"), &f.kind)?;
        dns_label(&f.namespace).or_else(|why| {
            bad(
                format!("{at}.namespace"),
                format!("Invalid value: {:?}: {why}", f.namespace),
            )
        })?;
    }
    for (i, t) in spec.to.iter().enumerate() {
        let at = format!("spec.to[{i}]");
        group(&format!("{at}.group"), &t.group)?;
        kind(&format!("{at}.kind"), &t.kind)?;
        if let Some(name) = &t.name {
            object_name(&format!("{at}.name"), name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
