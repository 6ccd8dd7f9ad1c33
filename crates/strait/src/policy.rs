//! `strait policy matrix`: the reachability matrix of the manifests'
//! NetworkPolicies and ClusterNetworkPolicies (Admin tier, NetworkPolicy,
//! Baseline tier), computed by the packet tracer over the planned rules
//! (`--reading traced`, what the kernel would decide) or by the reference
//! reading of the API (`--reading reference`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use strait_model::k8s_openapi::api::core::v1::{Node, NodeSpec, PodIP, PodStatus};
use strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use strait_model::{ClusterState, CompactPod, Object};
use strait_policy::{plan, semantics};

use crate::cli::{MatrixOutput, PolicyMatrixArgs, PolicyReading};
use crate::error::Error;
use crate::state::{cluster_config, load};

pub fn matrix(args: &PolicyMatrixArgs) -> Result<(), Error> {
    let mut state = load(
        &args.manifests.files,
        args.manifests.recursive,
        &cluster_config(&args.cluster)?,
        None,
    )?;
    // Pods of Deployments (and pods written without status) have no
    // address yet: give them one as the lab would, and say so — ipBlock
    // answers depend on it.
    let placed = place(&mut state);
    if !placed.is_empty() {
        tracing::warn!(
            "{} pod(s) had no address and were placed as the lab would place them (ipBlock answers depend on these addresses): {}",
            placed.len(),
            some_of(&placed)
        );
    }
    let in_table = semantics::matrix_pods(&state);
    let left_out = state.pods.len() - in_table.len();
    if left_out > 0 {
        tracing::warn!("{left_out} hostNetwork pod(s) left out of the matrix: they are their node");
    }
    if in_table.is_empty() {
        tracing::warn!("no pod: the matrix is empty");
    }
    let matrix = match args.reading {
        PolicyReading::Traced => plan::traced_matrix(&state, &args.ports, &args.protocols)?,
        PolicyReading::Reference => semantics::matrix(&state, &args.ports, &args.protocols),
    };
    let text = match args.output {
        MatrixOutput::Text => matrix.to_text(),
        MatrixOutput::Json => matrix.to_json(),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Output(e.to_string()))
}

/// The first few of a long list, for a message.
fn some_of(items: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = items[..items.len().min(SHOWN)].join(", ");
    if items.len() > SHOWN {
        text.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    text
}

/// The node strait adds when the manifests have none with a pod range.
const PLACEHOLDER_NODE: &str = "node-1";
const PLACEHOLDER_RANGE: &str = "10.244.0.0/16";

/// Give every pod without an address (and not hostNetwork) a node and an
/// address, as the lab does: the node it names, else the one with the
/// fewest pods; the first free address of the node's pod range after the
/// bridge's (`.1`), as host-local IPAM hands them out. Without a Node with a
/// pod range, one (`node-1`, 10.244.0.0/16) is added. Returns
/// `ns/pod -> node ip` for each pod placed.
fn place(state: &mut ClusterState) -> Vec<String> {
    let waiting: Vec<_> = state
        .pods
        .iter()
        .filter(|p| p.pod_ip().is_none_or(str::is_empty) && p.pod_ips().next().is_none())
        .filter_map(|p| p.to_pod().ok())
        .filter(|p| {
            !p.spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false)
        })
        .collect();
    if waiting.is_empty() {
        return Vec::new();
    }
    // Nodes with the first pod range they give (IPv4 first: what a
    // single-stack cluster has).
    let mut ranges: BTreeMap<String, IpNet> = BTreeMap::new();
    for node in state.nodes.iter() {
        let spec = node.spec.as_ref();
        let cidrs = spec
            .and_then(|s| s.pod_cidrs.clone())
            .unwrap_or_default()
            .into_iter()
            .chain(spec.and_then(|s| s.pod_cidr.clone()));
        if let Some(net) = cidrs
            .filter_map(|c| c.parse::<IpNet>().ok())
            .min_by_key(|n| matches!(n, IpNet::V6(_)))
        {
            ranges.insert(node.metadata.name.clone().unwrap_or_default(), net.trunc());
        }
    }
    if ranges.is_empty() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(PLACEHOLDER_NODE.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(PLACEHOLDER_RANGE.into()),
                pod_cidrs: Some(vec![PLACEHOLDER_RANGE.into()]),
                ..Default::default()
            }),
            status: None,
        };
        state.insert(Object::Node(Arc::new(node)));
        if let Ok(net) = PLACEHOLDER_RANGE.parse() {
            ranges.insert(PLACEHOLDER_NODE.into(), net);
        }
    }
    let mut used: BTreeSet<IpAddr> = state
        .pods
        .iter()
        .flat_map(|p| {
            p.pod_ips()
                .chain(p.pod_ip())
                .filter_map(|ip| ip.parse().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut count: BTreeMap<String, usize> = ranges.keys().map(|n| (n.clone(), 0)).collect();
    for p in state.pods.iter() {
        if let Some(c) = p.node_name().and_then(|n| count.get_mut(n)) {
            *c += 1;
        }
    }
    let mut placed = Vec::new();
    for mut pod in waiting {
        let named = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| ranges.contains_key(n));
        let Some(node) = named.or_else(|| {
            count
                .iter()
                .min_by_key(|(_, c)| **c)
                .map(|(n, _)| n.clone())
        }) else {
            continue;
        };
        let Some(range) = ranges.get(&node) else {
            continue;
        };
        // Skip the network address and the bridge's (.1).
        let Some(ip) = range.hosts().skip(1).find(|ip| !used.contains(ip)) else {
            tracing::warn!("node {node}: pod range {range} is full");
            continue;
        };
        used.insert(ip);
        *count.entry(node.clone()).or_default() += 1;
        let key = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        pod.spec.get_or_insert_with(Default::default).node_name = Some(node.clone());
        let status = pod.status.get_or_insert_with(PodStatus::default);
        status.phase = Some("Running".into());
        status.pod_ip = Some(ip.to_string());
        status.pod_ips = Some(vec![PodIP { ip: ip.to_string() }]);
        state.insert(Object::Pod(Arc::new(CompactPod::new(pod))));
        placed.push(format!("{key} -> {node} {ip}"));
    }
    placed
}
