//! The standalone controllers: what the API server and kube-controller-manager
//! do in a real cluster, for a cluster that has neither (the lab) and for
//! `strait render`. Each is a pure function of the desired objects, the
//! previous snapshot (so allocations stay put) and the cluster settings.

mod deployments;
mod endpoint_slices;
mod mirroring;
mod services;

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub use services::{allocate_service, Held, NodePortRange, ServiceCidr};

use crate::object::{Object, ObjectKey};
use crate::state::ClusterState;
use crate::{Error, Result};

/// The label every EndpointSlice carries with its Service's name.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Who manages an EndpointSlice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY_CONTROLLER: &str = "endpointslice-controller.k8s.io";
pub const MANAGED_BY_MIRRORING: &str = "endpointslicemirroring-controller.k8s.io";
/// Set on a Pod created for a Deployment: which template it was made from.
pub const LABEL_POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Cluster-wide settings, as given to the API server and controller manager.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// One per address family; the first is the primary family.
    pub service_cidrs: Vec<ServiceCidr>,
    pub node_port_range: NodePortRange,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            service_cidrs: vec![
                ServiceCidr::new("10.96.0.0/12".parse().expect("valid")).expect("valid default")
            ],
            node_port_range: NodePortRange::default(),
        }
    }
}

impl ClusterConfig {
    /// Parse `--service-cidr` values (one or two: IPv4 and/or IPv6).
    pub fn with_service_cidrs(mut self, cidrs: &[String]) -> Result<Self> {
        if cidrs.is_empty() {
            return Ok(self);
        }
        let mut parsed = Vec::new();
        for c in cidrs {
            let net: IpNet = c.parse().map_err(|_| Error::Config {
                setting: "service CIDR".into(),
                message: format!("{c:?} is not a CIDR such as 10.96.0.0/12"),
            })?;
            parsed.push(ServiceCidr::new(net)?);
        }
        if parsed.len() > 2 || (parsed.len() == 2 && parsed[0].is_ipv4() == parsed[1].is_ipv4()) {
            return Err(Error::Config {
                setting: "service CIDR".into(),
                message: "give one CIDR, or one IPv4 and one IPv6 CIDR".into(),
            });
        }
        self.service_cidrs = parsed;
        Ok(self)
    }
}

/// Run every controller over `desired` and return the resulting snapshot:
/// `desired` plus Pods for Deployments, Service addresses, the `kubernetes`
/// Service and EndpointSlices. `previous` (the last result) keeps
/// allocations and pod status stable across changes.
pub fn reconcile(
    desired: ClusterState,
    previous: Option<&ClusterState>,
    config: &ClusterConfig,
) -> Result<ClusterState> {
    let mut state = desired;
    // Pods made for Deployments have no address: what the input gives is
    // all the EndpointSlice controller could compute from.
    let input_has_pods = !state.pods.is_empty();
    let input_has_endpoints = !state.endpoints.is_empty();
    add_kubernetes_service(&mut state)?;
    deployments::expand(&mut state, previous)?;
    services::allocate(&mut state, previous, config)?;
    endpoint_slices::derive(&mut state, input_has_pods, input_has_endpoints)?;
    mirroring::mirror(&mut state)?;
    Ok(state)
}

/// `default/kubernetes`, which every cluster has: the API server at the first
/// service address, port 443 (https) to 6443.
fn add_kubernetes_service(state: &mut ClusterState) -> Result<()> {
    if state.services.get("default", "kubernetes").is_some() {
        return Ok(());
    }
    let service = Service {
        metadata: ObjectMeta {
            uid: Some(crate::hash::uid("Service", "default", "kubernetes")),
            name: Some("kubernetes".into()),
            namespace: Some("default".into()),
            labels: Some(
                [("component", "apiserver"), ("provider", "kubernetes")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            session_affinity: Some("None".into()),
            internal_traffic_policy: Some("Cluster".into()),
            ports: Some(vec![ServicePort {
                name: Some("https".into()),
                port: 443,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(6443)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    state.add(Object::Service(service.into()), None)
}

/// An error about one object's field, naming where the object came from.
pub(crate) fn object_error(
    state: &ClusterState,
    key: &ObjectKey,
    field: impl Into<String>,
    message: impl Into<String>,
) -> Error {
    Error::Object {
        object: key.to_string(),
        origin: state
            .origin(key)
            .map(|o| format!(" ({o})"))
            .unwrap_or_default(),
        field: field.into(),
        message: message.into(),
    }
}

/// `ownerReferences` entry pointing at the controlling object.
pub(crate) fn owner(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    let name = meta.name.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_else(|| {
        crate::hash::uid(kind, meta.namespace.as_deref().unwrap_or_default(), &name)
    });
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name,
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// "IPv4" or "IPv6", as Kubernetes spells address families.
pub(crate) fn family_of(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

#[cfg(test)]
mod tests;
