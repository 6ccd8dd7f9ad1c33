//! `strait proxy`: plan, render and apply the Service rules for one node.

use std::net::IpAddr;

use ipnet::IpNet;
use strait_model::ClusterState;
use strait_proxy::{
    colliding_ports, family_in_use, plan, render, render_full, serve_metrics, Family,
    HealthCheckServers, NodeContext, ProxyMetrics, ServiceProxy, Sync,
};

use crate::cli::ProxyArgs;
use crate::error::Error;
use crate::state::{cluster_config, follow, load, load_following, Admitted, Reload, Seen};

pub fn run(args: &ProxyArgs) -> Result<(), Error> {
    if args.cleanup {
        ServiceProxy::cleanup()?;
        println!("removed table ip strait");
        return Ok(());
    }
    let config = cluster_config(&args.cluster)?;
    let files = &args.manifests.files;
    let cluster_cidrs = args
        .cluster_cidrs
        .iter()
        .map(|c| {
            c.parse::<IpNet>().map_err(|_| Error::Flag {
                flag: "--cluster-cidr",
                message: format!("{c:?} is not a CIDR"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let node_ips = args
        .node_ips
        .iter()
        .map(|ip| {
            ip.parse::<IpAddr>().map_err(|_| Error::Flag {
                flag: "--node-ip",
                message: format!("{ip:?} is not an IP address"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let nodeport_addresses = if args.nodeport_addresses.trim() == "primary" {
        Vec::new()
    } else {
        args.nodeport_addresses
            .split(',')
            .map(|c| {
                c.trim().parse::<IpNet>().map_err(|_| Error::Flag {
                    flag: "--nodeport-addresses",
                    message: format!(
                        "{c:?} is not a CIDR (give CIDRs, comma-separated, or primary)"
                    ),
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let service_cidrs: Vec<IpNet> = config.service_cidrs.iter().map(|c| c.net()).collect();
    let node = args.node.clone().unwrap_or_default();

    let recursive = args.manifests.recursive;
    let seen = Seen::now(files, recursive);
    // A dry run shows what the input asks for, so a refused object is its
    // error; the proxy itself programs what was admitted.
    let Reload {
        state,
        mut admitted,
        refused,
    } = if args.dry_run {
        Reload {
            state: load(files, recursive, &config, None)?,
            admitted: Admitted::default(),
            refused: 0,
        }
    } else {
        load_following(files, recursive, &config, None, &Admitted::default())?
    };
    let mut ctx = context(&state, &node, &node_ips, &cluster_cidrs);
    ctx.service_cidrs = service_cidrs;
    ctx.nodeport_addresses = nodeport_addresses;
    if ctx.nodeport_networks().is_empty() {
        tracing::warn!(
            "no IP known for node {node:?} (no --node-ip, no Node object with addresses): NodePorts answer nowhere; give --node-ip or --nodeport-addresses"
        );
    }
    let table = plan(&state, &ctx);
    if args.dry_run {
        let ips: Vec<String> = ctx.node_ips.iter().map(ToString::to_string).collect();
        let cidrs: Vec<String> = ctx.cluster_cidrs.iter().map(ToString::to_string).collect();
        println!(
            "# strait proxy --dry-run for node {node:?}: {} service ports",
            table.ports.len()
        );
        println!(
            "# node IPs: {}; cluster CIDR: {}",
            or_none(&ips),
            or_none(&cidrs)
        );
        for problem in &table.problems {
            tracing::warn!("{problem}");
        }
        for id in colliding_ports(&table) {
            tracing::error!("service ports share the chain id {id}: left out of the ruleset");
        }
        // The IPv6 table only when something needs it, as the applier does.
        for family in Family::ALL {
            if family == Family::V4 || family_in_use(&table, family) {
                print!("{}", render_full(&render(&table, family)));
            }
        }
        return Ok(());
    }

    check_bridge_netfilter(family_in_use(&table, Family::V6));
    let metrics_address: std::net::SocketAddr =
        args.metrics_address.parse().map_err(|_| Error::Flag {
            flag: "--metrics-address",
            message: format!("{:?} is not IP:PORT", args.metrics_address),
        })?;
    let metrics = std::sync::Arc::new(ProxyMetrics::default());
    metrics.refused_objects(refused);
    // Without metrics the rules still matter: say so and go on, as kube-proxy does.
    let _metrics_server = serve_metrics(metrics_address, metrics.clone())
        .map_err(|e| {
            tracing::error!("cannot serve /metrics and /healthz on {metrics_address}: {e}")
        })
        .ok();
    let mut health = HealthCheckServers::default();
    let mut reported = Reported::default();
    let mut proxy = ServiceProxy::new(ctx);
    let first = proxy.full_sync(&state);
    record(
        &metrics,
        &proxy,
        &mut health,
        &mut reported,
        first.as_ref().ok().copied(),
    );
    first?;
    // Follow the files until stopped; the rules stay when we exit.
    let mut previous = state;
    follow(files, recursive, args.poll_ms, seen, || {
        let state = match load_following(files, recursive, &config, Some(&previous), &admitted) {
            Ok(reload) => {
                metrics.refused_objects(reload.refused);
                admitted = reload.admitted;
                reload.state
            }
            Err(e) => {
                // Bad input changes nothing: keep the rules of the last good state.
                tracing::error!("{e}; keeping the current rules");
                return;
            }
        };
        match proxy.update(&previous, &state) {
            Ok(sync) => record(&metrics, &proxy, &mut health, &mut reported, Some(sync)),
            Err(e) => {
                tracing::error!("{e}");
                record(&metrics, &proxy, &mut health, &mut reported, None);
            }
        }
        previous = state;
    })
}

/// What was last said about Services with errors and conntrack failures,
/// so that each is said once.
#[derive(Default)]
struct Reported {
    errors: std::collections::BTreeMap<(String, String), Vec<String>>,
    conntrack_failures: u64,
}

/// Log a sync, count it, and serve the health checks it implies.
fn record(
    metrics: &ProxyMetrics,
    proxy: &ServiceProxy,
    health: &mut HealthCheckServers,
    reported: &mut Reported,
    sync: Option<Sync>,
) {
    // Health checks first: once a sync is logged, everything it implies holds.
    health.sync(&proxy.health_checks());
    let errors = proxy.service_errors();
    for ((ns, name), list) in &errors {
        if reported.errors.get(&(ns.clone(), name.clone())) != Some(list) {
            for why in list {
                tracing::error!("Service {ns:?}/{name:?}: {why}");
            }
        }
    }
    metrics.service_errors(errors.len());
    reported.errors = errors;
    let failures = proxy.conntrack_failures();
    metrics.conntrack_failed(failures.saturating_sub(reported.conntrack_failures));
    reported.conntrack_failures = failures;
    let (ports, chains, elements) = proxy.stats();
    match sync {
        Some(Sync::Full(d)) => {
            tracing::info!(service_ports = ports, chains, elements, elapsed = ?d, "full sync");
            metrics.synced("full", d, ports, chains, elements);
        }
        Some(Sync::Partial(d)) => {
            tracing::info!(service_ports = ports, chains, elements, elapsed = ?d, via = proxy.last_path(), "partial sync");
            metrics.synced("partial", d, ports, chains, elements);
        }
        // Said at info: that a reload (one with refused objects, say) left the
        // rules as they were is worth knowing.
        Some(Sync::Unchanged) => tracing::info!("no change to the rules"),
        None => metrics.failed(),
    }
}

fn or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The node's context; its IPs from the Node object unless given.
fn context(
    state: &ClusterState,
    node: &str,
    node_ips: &[IpAddr],
    cluster_cidrs: &[IpNet],
) -> NodeContext {
    let mut ips = node_ips.to_vec();
    if ips.is_empty() {
        if let Some(n) = state.nodes.get("", node) {
            for a in n
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
            {
                if matches!(a.type_.as_str(), "InternalIP" | "ExternalIP") {
                    if let Ok(ip) = a.address.parse() {
                        ips.push(ip);
                    }
                }
            }
        }
    }
    NodeContext {
        node_name: node.to_owned(),
        node_ips: ips,
        cluster_cidrs: cluster_cidrs.to_vec(),
        ..NodeContext::default()
    }
}

/// Pod-to-Service traffic between pods on one bridge only meets nftables
/// when bridged packets are passed to it (kubeadm requires this of nodes).
fn check_bridge_netfilter(ipv6: bool) {
    let mut keys = vec!["net.bridge.bridge-nf-call-iptables"];
    if ipv6 {
        keys.push("net.bridge.bridge-nf-call-ip6tables");
    }
    for key in keys {
        match strait_linux::read_sysctl(key) {
            Ok(v) if v == "1" => {}
            _ => tracing::warn!(
                "{key} is not 1 here: replies between pods on one bridge bypass nftables and Service traffic between them breaks; run `modprobe br_netfilter; sysctl -w {key}=1`"
            ),
        }
    }
}
