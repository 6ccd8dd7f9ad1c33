//! EndpointSlices for Services with a selector, the way the EndpointSlice
//! controller makes them: one set of slices per address family and per
//! distinct port mapping (a named targetPort may resolve differently per pod),
//! at most 100 endpoints each.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    family_of, owner, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, MANAGED_BY_CONTROLLER,
    MANAGED_BY_MIRRORING,
};
use crate::hash::{fnv1a, generated_name};
use crate::object::{Kind, Object, ObjectKey};
use crate::pod::CompactPod;
use crate::ports::resolve_target_port;
use crate::selector::Selector;
use crate::state::ClusterState;
use crate::Result;

/// The controller's limit per slice (`--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// Recompute the slices the controllers own. A controller with nothing to
/// compute from keeps what the input says instead of replacing it with
/// empty slices: with no Pods in the input (`kubectl get
/// svc,endpointslices`), the EndpointSlice controller's slices of the input
/// stay as they are, and Services without one get the usual empty slice;
/// with no Endpoints, the mirroring controller's slices stay. Either is
/// reported, once.
pub fn derive(
    state: &mut ClusterState,
    input_has_pods: bool,
    input_has_endpoints: bool,
) -> Result<()> {
    let mut recomputed = Vec::new();
    let mut kept: Vec<ObjectKey> = Vec::new();
    // Services whose slices the input gives and that are kept.
    let mut kept_services: HashSet<(String, String)> = HashSet::new();
    for slice in state.endpoint_slices.iter() {
        let labels = slice.metadata.labels.as_ref();
        let managed_by = labels.and_then(|l| l.get(LABEL_MANAGED_BY));
        let key = ObjectKey::new(
            Kind::EndpointSlice,
            slice.metadata.namespace.clone().unwrap_or_default(),
            slice.metadata.name.clone().unwrap_or_default(),
        );
        match managed_by.map(String::as_str) {
            Some(MANAGED_BY_CONTROLLER) if !input_has_pods => {
                if let Some(service) = labels.and_then(|l| l.get(LABEL_SERVICE_NAME)) {
                    kept_services.insert((key.namespace.clone(), service.clone()));
                }
                kept.push(key);
            }
            Some(MANAGED_BY_MIRRORING) if !input_has_endpoints => kept.push(key),
            // Slices the controllers own are recomputed, never taken from
            // input (a cluster dump carries the real controller's slices).
            Some(MANAGED_BY_CONTROLLER | MANAGED_BY_MIRRORING) => recomputed.push(key),
            _ => {}
        }
    }
    for key in recomputed {
        state.remove(&key);
    }
    if !kept.is_empty() {
        tracing::warn!(
            "keeping {} controller-managed EndpointSlice(s) of the input as they are: the input holds no {} to compute them from",
            kept.len(),
            match (input_has_pods, input_has_endpoints) {
                (false, false) => "Pods or Endpoints",
                (false, true) => "Pods",
                _ => "Endpoints",
            }
        );
    }

    // Each Service's slices depend only on the snapshot: computed on every
    // core for clusters with many Services.
    let services: Vec<_> = state
        .services
        .iter()
        .filter(|s| {
            if kept_services.is_empty() {
                return true;
            }
            let key = (
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default(),
            );
            !kept_services.contains(&key)
        })
        .cloned()
        .collect();
    let slices = crate::parallel::map(services, 256, |service| slices_for(state, &service));
    for slice in slices.into_iter().flatten() {
        state.add(Object::EndpointSlice(slice.into()), None)?;
    }
    Ok(())
}

/// Whether the pod can be an endpoint at all: it has an address and has not
/// finished. Terminating pods stay (with `terminating: true`).
fn is_endpoint_candidate(pod: &CompactPod) -> bool {
    if !pod.has_status() {
        return false;
    }
    let has_ip = pod.pod_ip().is_some_and(|ip| !ip.is_empty()) || pod.pod_ips().next().is_some();
    let finished = matches!(pod.phase(), Some("Succeeded" | "Failed"));
    has_ip && !finished
}

/// The pod's address of `family`, from `status.podIPs` (or `status.podIP`).
fn pod_address(pod: &CompactPod, family: &str) -> Option<String> {
    pod.pod_ips()
        .chain(pod.pod_ip())
        .find(|ip| {
            ip.parse::<IpAddr>()
                .is_ok_and(|ip| family_of(&ip) == family)
        })
        .map(str::to_owned)
}

fn slices_for(state: &ClusterState, service: &Service) -> Vec<EndpointSlice> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let Ok(selector) = Selector::from_map(selector) else {
        return Vec::new();
    };
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let name = service.metadata.name.clone().unwrap_or_default();
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let families = spec
        .ip_families
        .clone()
        .unwrap_or_else(|| vec!["IPv4".into()]);
    let service_ports = spec.ports.clone().unwrap_or_default();

    let pods = state.pods.select(&namespace, &selector);
    let mut out = Vec::new();
    for family in &families {
        // Group endpoints by the ports they resolve to, in order of first pod.
        let mut groups: Vec<(Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
        for pod in pods.iter().filter(|p| is_endpoint_candidate(p)) {
            let Some(address) = pod_address(pod, family) else {
                continue;
            };
            let ports: Vec<EndpointPort> = service_ports
                .iter()
                .filter_map(|sp| {
                    Some(EndpointPort {
                        name: Some(sp.name.clone().unwrap_or_default()),
                        port: Some(resolve_target_port(pod, sp)?),
                        protocol: sp.protocol.clone(),
                        app_protocol: sp.app_protocol.clone(),
                    })
                })
                .collect();
            let endpoint = endpoint_for(state, service, pod, address, publish_not_ready);
            match groups.iter_mut().find(|(p, _)| *p == ports) {
                Some((_, endpoints)) => endpoints.push(endpoint),
                None => groups.push((ports, vec![endpoint])),
            }
        }
        if groups.is_empty() {
            // The controller keeps one empty slice so that consumers can tell
            // "no endpoints" from "not synced yet".
            groups.push((Vec::new(), Vec::new()));
        }
        for (ports, endpoints) in groups {
            let port_key = serde_json::to_vec(&ports).unwrap_or_default();
            // Moved, not copied, into slices of at most the limit.
            let mut chunks: Vec<Vec<Endpoint>> = Vec::new();
            let mut rest = endpoints.into_iter().peekable();
            while rest.peek().is_some() || chunks.is_empty() {
                chunks.push(rest.by_ref().take(MAX_ENDPOINTS_PER_SLICE).collect());
            }
            for (index, chunk) in chunks.into_iter().enumerate() {
                let hash = fnv1a(&[
                    namespace.as_bytes(),
                    name.as_bytes(),
                    family.as_bytes(),
                    &port_key,
                    &index.to_le_bytes(),
                ]);
                let slice_name = generated_name(&format!("{name}-"), hash);
                let mut labels = service.metadata.labels.clone().unwrap_or_default();
                labels.insert(LABEL_SERVICE_NAME.into(), name.clone());
                labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY_CONTROLLER.into());
                if headless {
                    labels.insert("service.kubernetes.io/headless".into(), String::new());
                }
                out.push(EndpointSlice {
                    metadata: ObjectMeta {
                        uid: Some(crate::hash::uid("EndpointSlice", &namespace, &slice_name)),
                        name: Some(slice_name.clone()),
                        namespace: Some(namespace.clone()),
                        labels: Some(labels),
                        owner_references: Some(vec![owner("v1", "Service", &service.metadata)]),
                        ..Default::default()
                    },
                    address_type: family.clone(),
                    endpoints: chunk,
                    ports: (!ports.is_empty()).then(|| ports.clone()),
                });
            }
        }
    }
    out
}

fn endpoint_for(
    state: &ClusterState,
    service: &Service,
    pod: &CompactPod,
    address: String,
    publish_not_ready: bool,
) -> Endpoint {
    let serving = pod.is_ready();
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let node_name = pod.node_name().map(str::to_owned);
    // `hostname.subdomain.namespace.svc` names exist only when the pod's
    // subdomain is this Service.
    let hostname = pod
        .subdomain()
        .filter(|s| Some(*s) == service.metadata.name.as_deref())
        .and_then(|_| pod.hostname())
        .map(str::to_owned);
    let zone = node_name
        .as_deref()
        .and_then(|n| state.nodes.get("", n))
        .and_then(|n| {
            n.metadata
                .labels
                .as_ref()?
                .get("topology.kubernetes.io/zone")
                .cloned()
        });
    Endpoint {
        addresses: vec![address],
        conditions: Some(EndpointConditions {
            // Never ready while terminating, unless the Service publishes
            // not-ready addresses (for DNS of StatefulSet-like peers).
            ready: Some(publish_not_ready || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname,
        node_name,
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        zone,
        ..Default::default()
    }
}

/// Group key helper shared with mirroring: sorted, deterministic.
pub(super) fn by_family(
    addresses: impl Iterator<Item = (String, Endpoint)>,
) -> BTreeMap<&'static str, Vec<Endpoint>> {
    let mut out: BTreeMap<&'static str, Vec<Endpoint>> = BTreeMap::new();
    for (address, endpoint) in addresses {
        if let Ok(ip) = address.parse::<IpAddr>() {
            out.entry(family_of(&ip)).or_default().push(endpoint);
        }
    }
    out
}
