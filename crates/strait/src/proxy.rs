//! `strait proxy`: plan, render and apply the Service rules for one node.

use std::net::IpAddr;

use ipnet::IpNet;
use strait_agent::{Agent, FileSource, ProxyPart, ProxyReporting, Source};
use strait_model::ClusterState;
use strait_proxy::{
    colliding_ports, family_in_use, into_table, plan, render, serve_metrics, Family, NodeContext,
    ProxyMetrics, ServiceProxy,
};

use crate::cli::ProxyArgs;
use crate::error::Error;
use crate::state::{cluster_config, follower_reader, load};

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
    if args.dry_run {
        let state = load(files, recursive, &config, None)?;
        let mut ctx = context(&state, &node, &node_ips, &cluster_cidrs);
        ctx.service_cidrs = service_cidrs;
        ctx.nodeport_addresses = nodeport_addresses;
        warn_without_node_ips(&ctx, &node);
        let table = plan(&state, &ctx);
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
        print_tables(&table);
        return Ok(());
    }

    // The node agent with the Service proxy as its only part, fed by the
    // manifests (followed with inotify), on this thread.
    // One refused object hurts only itself (see state::follower_reader).
    let metrics = std::sync::Arc::new(ProxyMetrics::default());
    let counted = metrics.clone();
    let mut source = FileSource::open(
        files,
        recursive,
        config,
        follower_reader(move |refused| counted.refused_objects(refused)),
    )?;
    let state = source.state().clone();
    let mut ctx = context(&state, &node, &node_ips, &cluster_cidrs);
    ctx.service_cidrs = service_cidrs;
    ctx.nodeport_addresses = nodeport_addresses;
    warn_without_node_ips(&ctx, &node);
    check_bridge_netfilter(family_in_use(&plan(&state, &ctx), Family::V6));
    let metrics_address: std::net::SocketAddr =
        args.metrics_address.parse().map_err(|_| Error::Flag {
            flag: "--metrics-address",
            message: format!("{:?} is not IP:PORT", args.metrics_address),
        })?;
    // Without metrics the rules still matter: say so and go on, as kube-proxy does.
    let _metrics_server = serve_metrics(metrics_address, metrics.clone())
        .map_err(|e| {
            tracing::error!("cannot serve /metrics and /healthz on {metrics_address}: {e}")
        })
        .ok();
    let proxy = ProxyPart::new(
        ctx,
        ProxyReporting {
            metrics: Some(metrics),
            health_checks: true,
        },
    );
    let mut agent = Agent::new(vec![Box::new(proxy)]);
    // The first sync must work; after it, errors are logged and counted
    // and the rules of the last good state stay.
    if let Some(first) = source.next()? {
        if let Some(e) = agent.apply(&first).into_iter().next() {
            return Err(e.into());
        }
    }
    // Follow the files until stopped; the rules stay when we exit.
    agent.run(&mut source, |_, errors| {
        for e in errors {
            tracing::error!("{e}");
        }
    })?;
    Ok(())
}

fn warn_without_node_ips(ctx: &NodeContext, node: &str) {
    if ctx.nodeport_networks().is_empty() {
        tracing::warn!(
            "no IP known for node {node:?} (no --node-ip, no Node object with addresses): NodePorts answer nowhere; give --node-ip or --nodeport-addresses"
        );
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
/// A Node's primary addresses: its InternalIP and ExternalIP ones.
pub fn node_addresses(state: &ClusterState, node: &str) -> Vec<IpAddr> {
    let Some(n) = state.nodes.get("", node) else {
        return Vec::new();
    };
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| matches!(a.type_.as_str(), "InternalIP" | "ExternalIP"))
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

fn context(
    state: &ClusterState,
    node: &str,
    node_ips: &[IpAddr],
    cluster_cidrs: &[IpNet],
) -> NodeContext {
    let mut ips = node_ips.to_vec();
    if ips.is_empty() {
        ips = node_addresses(state, node);
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

/// A plan's problems (logged) and its tables (printed), as `--dry-run`
/// shows them: `strait proxy` and `strait agent` alike.
pub(crate) fn print_tables(table: &strait_proxy::ServiceTable) {
    for problem in &table.problems {
        tracing::warn!("{problem}");
    }
    for id in colliding_ports(table) {
        tracing::error!("service ports share the chain id {id}: left out of the ruleset");
    }
    // The IPv6 table only when something needs it, as the applier does.
    for family in Family::ALL {
        if family == Family::V4 || family_in_use(table, family) {
            // The rendered rules moved into the table, not copied: at 10k
            // Services a copy is tens of MB at the peak.
            let whole = into_table(family, [render(table, family)]);
            print!("{}", strait_nft::text::table_script(&whole));
        }
    }
}
