//! EndpointSlices mirrored from Endpoints, as the EndpointSliceMirroring
//! controller does for Services without a selector whose Endpoints a user
//! wrote by hand (seed 002's `mysql-svc`).

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::endpoint_slices::{by_family, MAX_ENDPOINTS_PER_SLICE};
use super::{owner, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, MANAGED_BY_MIRRORING};
use crate::hash::{fnv1a, generated_name};
use crate::object::Object;
use crate::state::ClusterState;
use crate::Result;

/// The mirroring controller copies at most this many addresses per Endpoints.
const MAX_MIRRORED_ADDRESSES: usize = 1000;

pub fn mirror(state: &mut ClusterState) -> Result<()> {
    let mut slices = Vec::new();
    for endpoints in state.endpoints.iter() {
        let namespace = endpoints.metadata.namespace.as_deref().unwrap_or_default();
        let name = endpoints.metadata.name.as_deref().unwrap_or_default();
        let Some(service) = state.services.get(namespace, name) else {
            continue;
        };
        let has_selector = service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|s| !s.is_empty());
        let skip = endpoints
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("endpointslice.kubernetes.io/skip-mirror"))
            .is_some_and(|v| v == "true");
        if has_selector || skip {
            continue;
        }
        slices.extend(mirror_one(endpoints, &service.metadata));
    }
    for slice in slices {
        state.add(Object::EndpointSlice(slice.into()), None)?;
    }
    Ok(())
}

fn endpoint(address: &EndpointAddress, ready: bool) -> (String, Endpoint) {
    let e = Endpoint {
        addresses: vec![address.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(ready),
            terminating: Some(false),
        }),
        hostname: address.hostname.clone(),
        node_name: address.node_name.clone(),
        target_ref: address.target_ref.clone(),
        ..Default::default()
    };
    (address.ip.clone(), e)
}

fn mirror_one(endpoints: &Endpoints, service: &ObjectMeta) -> Vec<EndpointSlice> {
    let namespace = endpoints.metadata.namespace.clone().unwrap_or_default();
    let name = endpoints.metadata.name.clone().unwrap_or_default();
    let mut budget = MAX_MIRRORED_ADDRESSES;
    let mut out = Vec::new();
    for (s, subset) in endpoints.subsets.iter().flatten().enumerate() {
        let ready = subset.addresses.iter().flatten().map(|a| endpoint(a, true));
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| endpoint(a, false));
        let all: Vec<_> = ready.chain(not_ready).take(budget).collect();
        budget -= all.len();
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        for (family, endpoints_of_family) in by_family(all.into_iter()) {
            for (index, chunk) in endpoints_of_family
                .chunks(MAX_ENDPOINTS_PER_SLICE)
                .enumerate()
            {
                let hash = fnv1a(&[
                    namespace.as_bytes(),
                    name.as_bytes(),
                    family.as_bytes(),
                    &s.to_le_bytes(),
                    &index.to_le_bytes(),
                ]);
                let slice_name = generated_name(&format!("{name}-"), hash);
                let mut labels = endpoints.metadata.labels.clone().unwrap_or_default();
                labels.insert(LABEL_SERVICE_NAME.into(), name.clone());
                labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY_MIRRORING.into());
                out.push(EndpointSlice {
                    metadata: ObjectMeta {
                        uid: Some(crate::hash::uid("EndpointSlice", &namespace, &slice_name)),
                        name: Some(slice_name.clone()),
                        namespace: Some(namespace.clone()),
                        labels: Some(labels),
                        owner_references: Some(vec![owner("v1", "Service", service)]),
                        ..Default::default()
                    },
                    address_type: family.into(),
                    endpoints: chunk.to_vec(),
                    ports: (!ports.is_empty()).then(|| ports.clone()),
                });
            }
        }
    }
    out
}
