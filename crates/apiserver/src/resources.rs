//! What the server serves: one row per resource. Discovery, OpenAPI,
//! routing, tables, patches and RBAC all read this table, so they cannot
//! disagree about a resource.

/// A subresource the server implements for a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// `…/status`: writes change only `.status`; the main resource's writes
    /// leave `.status` as it was.
    Status,
    /// `…/scale`: an `autoscaling/v1` `Scale` over `.spec.replicas`.
    Scale,
    /// `pods/log`: a container's output (GET only).
    Log,
}

impl Subresource {
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Log => "log",
        }
    }
}

/// One served resource, in the API's own words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    /// `""` for the core group (`/api/v1`).
    pub group: &'static str,
    pub version: &'static str,
    /// The URL segment: `pods`, `endpointslices`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// `all` for what `kubectl get all` shows.
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
}

/// The verbs every resource supports.
pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl Resource {
    /// `v1`, `apps/v1`: the `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `/api/v1`, `/apis/apps/v1`: where its group version is served.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// The resource that serves `kind` of `api_version` (`apps/v1`, `v1`).
    pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
        RESOURCES
            .iter()
            .find(|r| r.kind == kind && r.api_version() == api_version)
    }

    /// The resource at `plural` of `group`/`version`.
    pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// The model kind strait's admission and controllers know it as, if any.
    pub fn model_kind(&self) -> Option<strait_model::Kind> {
        strait_model::Kind::from_name(self.kind).filter(|k| k.api_version() == self.api_version())
    }
}

const STATUS: &[Subresource] = &[Subresource::Status];
const NONE: &[Subresource] = &[];
const ALL: &[&str] = &["all"];

macro_rules! resource {
    ($group:literal $version:literal $plural:literal $singular:literal $kind:literal,
     namespaced: $ns:literal, short: [$($short:literal),*], categories: $cat:expr, sub: $sub:expr) => {
        Resource {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: &[$($short),*],
            categories: $cat,
            subresources: $sub,
        }
    };
}

/// Everything the server serves, grouped by API group in discovery order
/// (the core group first, as kube-apiserver lists it).
pub const RESOURCES: &[Resource] = &[
    resource!("" "v1" "configmaps" "configmap" "ConfigMap", namespaced: true, short: ["cm"], categories: &[], sub: NONE),
    resource!("" "v1" "endpoints" "endpoints" "Endpoints", namespaced: true, short: ["ep"], categories: &[], sub: NONE),
    resource!("" "v1" "events" "event" "Event", namespaced: true, short: ["ev"], categories: &[], sub: NONE),
    resource!("" "v1" "namespaces" "namespace" "Namespace", namespaced: false, short: ["ns"], categories: &[], sub: STATUS),
    resource!("" "v1" "nodes" "node" "Node", namespaced: false, short: ["no"], categories: &[], sub: STATUS),
    resource!("" "v1" "pods" "pod" "Pod", namespaced: true, short: ["po"], categories: ALL, sub: &[Subresource::Status, Subresource::Log]),
    resource!("" "v1" "secrets" "secret" "Secret", namespaced: true, short: [], categories: &[], sub: NONE),
    resource!("" "v1" "serviceaccounts" "serviceaccount" "ServiceAccount", namespaced: true, short: ["sa"], categories: &[], sub: NONE),
    resource!("" "v1" "services" "service" "Service", namespaced: true, short: ["svc"], categories: ALL, sub: STATUS),
    resource!("apps" "v1" "daemonsets" "daemonset" "DaemonSet", namespaced: true, short: ["ds"], categories: ALL, sub: STATUS),
    resource!("apps" "v1" "deployments" "deployment" "Deployment", namespaced: true, short: ["deploy"], categories: ALL, sub: &[Subresource::Status, Subresource::Scale]),
    resource!("coordination.k8s.io" "v1" "leases" "lease" "Lease", namespaced: true, short: [], categories: &[], sub: NONE),
    resource!("discovery.k8s.io" "v1" "endpointslices" "endpointslice" "EndpointSlice", namespaced: true, short: [], categories: &[], sub: NONE),
    resource!("gateway.networking.k8s.io" "v1" "gatewayclasses" "gatewayclass" "GatewayClass", namespaced: false, short: ["gc"], categories: &[], sub: STATUS),
    resource!("gateway.networking.k8s.io" "v1" "gateways" "gateway" "Gateway", namespaced: true, short: ["gtw"], categories: &[], sub: STATUS),
    resource!("gateway.networking.k8s.io" "v1" "httproutes" "httproute" "HTTPRoute", namespaced: true, short: [], categories: &[], sub: STATUS),
    resource!("gateway.networking.k8s.io" "v1beta1" "referencegrants" "referencegrant" "ReferenceGrant", namespaced: true, short: ["refgrant"], categories: &[], sub: NONE),
    resource!("networking.k8s.io" "v1" "ingressclasses" "ingressclass" "IngressClass", namespaced: false, short: [], categories: &[], sub: NONE),
    resource!("networking.k8s.io" "v1" "ingresses" "ingress" "Ingress", namespaced: true, short: ["ing"], categories: &[], sub: STATUS),
    resource!("networking.k8s.io" "v1" "networkpolicies" "networkpolicy" "NetworkPolicy", namespaced: true, short: ["netpol"], categories: &[], sub: NONE),
    resource!("policy" "v1" "poddisruptionbudgets" "poddisruptionbudget" "PodDisruptionBudget", namespaced: true, short: ["pdb"], categories: &[], sub: STATUS),
    resource!("policy.networking.k8s.io" "v1alpha2" "clusternetworkpolicies" "clusternetworkpolicy" "ClusterNetworkPolicy", namespaced: false, short: ["cnp"], categories: &[], sub: STATUS),
    resource!("rbac.authorization.k8s.io" "v1" "clusterrolebindings" "clusterrolebinding" "ClusterRoleBinding", namespaced: false, short: [], categories: &[], sub: NONE),
    resource!("rbac.authorization.k8s.io" "v1" "clusterroles" "clusterrole" "ClusterRole", namespaced: false, short: [], categories: &[], sub: NONE),
    resource!("rbac.authorization.k8s.io" "v1" "rolebindings" "rolebinding" "RoleBinding", namespaced: true, short: [], categories: &[], sub: NONE),
    resource!("rbac.authorization.k8s.io" "v1" "roles" "role" "Role", namespaced: true, short: [], categories: &[], sub: NONE),
];

/// The API groups in discovery order, each with its one version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !groups.contains(&(r.group, r.version)) {
            groups.push((r.group, r.version));
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_kind_is_served() {
        for kind in strait_model::Kind::ALL {
            let served = RESOURCES.iter().find(|r| r.model_kind() == Some(*kind));
            assert!(served.is_some(), "{kind} is not served");
        }
    }

    #[test]
    fn plurals_and_short_names_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for r in RESOURCES {
            assert!(seen.insert((r.group, r.plural)), "{} twice", r.plural);
            for s in r.short_names {
                assert!(seen.insert(("short", s)), "short name {s} twice");
            }
        }
    }
}
