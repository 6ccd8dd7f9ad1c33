//! `strait agent`: the node agent of a real cluster, fed by the Kubernetes
//! API (cluster mode). The Service proxy part of the node agent runs in
//! this process's network namespace (the node's, as a hostNetwork pod).
//!
//! On start the first sync replaces strait's tables with what the cluster
//! wants in one transaction (the tables an earlier agent left are adopted:
//! an unchanged Service keeps its rules, and conntrack is not flushed, so
//! established connections go on). On SIGTERM or SIGINT the process ends
//! and the rules stay, as kube-proxy's do; `--cleanup` removes them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use strait_agent::{Agent, Part, PolicyPart, ProxyPart, ProxyReporting, Source};
use strait_kube::{ClientConfig, Health, KubeMetrics, KubeSource, Options};
use strait_linux::{HttpServer, Response};
use strait_model::{ClusterState, Kind};
use strait_proxy::{plan, NodeContext, ProxyMetrics, ServiceProxy};

use crate::cli::AgentArgs;
use crate::error::Error;
use crate::proxy::node_addresses;
use crate::state::cluster_config;

/// The taint the cluster autoscaler puts on a node it is about to remove:
/// load balancers should stop sending to it (kube-proxy's nodeEligible).
const TO_BE_DELETED: &str = "ToBeDeletedByClusterAutoscaler";

pub fn run(args: &AgentArgs) -> Result<(), Error> {
    if args.cleanup {
        ServiceProxy::cleanup()?;
        println!("removed table ip strait");
        crate::overlay::cleanup(args)?;
        PolicyPart::cleanup()?;
        println!("removed tables ip strait-policy, ip6 strait-policy");
        return Ok(());
    }
    let node = match &args.node_name {
        Some(n) if !n.is_empty() => n.clone(),
        _ => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .ok_or_else(|| Error::Flag {
                flag: "--node-name",
                message: "not given, no NODE_NAME, and the hostname cannot be read".into(),
            })?,
    };
    strait_model::validate_dns_subdomain(&node).map_err(|why| Error::Flag {
        flag: "--node-name",
        message: format!("{node:?} {why}"),
    })?;
    let config = cluster_config(&args.cluster)?;
    let node_ips = parse_all(&args.node_ips, "--node-ip", "an IP address")?;
    let cluster_cidrs: Vec<IpNet> = parse_all(&args.cluster_cidrs, "--cluster-cidr", "a CIDR")?;
    let healthz: SocketAddr = args.healthz_bind_address.parse().map_err(|_| Error::Flag {
        flag: "--healthz-bind-address",
        message: format!("{:?} is not IP:PORT", args.healthz_bind_address),
    })?;
    let client = match &args.kubeconfig {
        Some(path) => ClientConfig::Kubeconfig(path.into()),
        None => ClientConfig::Infer,
    };

    // Only the kinds the parts that run read: a node without NetworkPolicy
    // does not list every Pod of the cluster (as kube-proxy does not).
    let options = Options::agent(args.network_policy);
    let watched: Vec<Kind> = options
        .kinds
        .iter()
        .chain(&options.optional)
        .copied()
        .collect();
    let mut source = KubeSource::start(client, options)?;
    let health = source.health();
    let proxy_metrics = Arc::new(ProxyMetrics::default());
    let node_state = Arc::new(Mutex::new(NodeState::default()));
    // Health first: a probe during the first list is answered (503), not refused.
    let server = if args.dry_run {
        None
    } else {
        let server = serve(
            healthz,
            HealthConfig {
                health: health.clone(),
                timeout: Duration::from_secs(args.healthz_timeout),
                proxy: proxy_metrics.clone(),
                kube: source.metrics(),
                node: node_state.clone(),
                watched,
            },
        )
        .map_err(|e| Error::Flag {
            flag: "--healthz-bind-address",
            message: format!("cannot listen on {healthz}: {e}"),
        })?;
        // On stdout: what a test or a script reads to find a port chosen by the kernel.
        println!(
            "serving /healthz, /livez and /metrics on {}",
            server.address
        );
        tracing::info!(address = %server.address, node, "serving /healthz, /livez and /metrics");
        Some(server)
    };

    tracing::info!("waiting for the first full list of every kind");
    let Some(first) = source.next()? else {
        return Ok(());
    };
    log_memory("every kind listed");
    let state = first.state.clone();
    let mut ctx = NodeContext {
        node_name: node.clone(),
        node_ips: if node_ips.is_empty() {
            node_addresses(&state, &node)
        } else {
            node_ips
        },
        cluster_cidrs: if cluster_cidrs.is_empty() {
            pod_cidrs(&state)
        } else {
            cluster_cidrs
        },
        ..NodeContext::default()
    };
    ctx.service_cidrs = config.service_cidrs.iter().map(|c| c.net()).collect();
    if state.nodes.get("", &node).is_none() {
        tracing::warn!("no Node {node:?} in the cluster: no local endpoints, and /healthz says nodeEligible false until it appears");
    }
    if ctx.nodeport_networks().is_empty() {
        tracing::warn!("no IP known for node {node:?} (no --node-ip, no Node addresses): NodePorts answer nowhere");
    }

    if args.dry_run {
        print_ruleset(&state, &ctx);
        log_memory("ruleset printed");
        return Ok(());
    }
    let mut cni = match (&args.cni_bin_dir, &args.cni_conf_dir) {
        (Some(bin), Some(conf)) => Some(CniInstall {
            bin_dir: bin.into(),
            conf_dir: conf.into(),
            mtu: args.cni_mtu,
            written: None,
        }),
        _ => None,
    };
    if let Some(cni) = &mut cni {
        cni.install_binary()?;
        cni.follow(&state, &node);
    }

    let proxy = ProxyPart::new(
        ctx,
        ProxyReporting {
            metrics: Some(proxy_metrics.clone()),
            health_checks: true,
        },
    );
    let (overlay, mut publisher) = crate::overlay::part(args, &node)?.unzip();
    // The overlay first (other nodes' pods must be reachable), then the
    // Service proxy, then policy.
    let mut parts: Vec<Box<dyn Part>> = overlay
        .map(|o| Box::new(o) as Box<dyn Part>)
        .into_iter()
        .chain([Box::new(proxy) as Box<dyn Part>])
        .collect();
    if args.network_policy {
        // Pods of one node talk over its bridge: only with br_netfilter on
        // does that traffic meet the forward hook where policy is judged.
        if strait_linux::read_sysctl("net.bridge.bridge-nf-call-iptables")
            .ok()
            .as_deref()
            != Some("1")
        {
            tracing::warn!("net.bridge.bridge-nf-call-iptables is not 1: NetworkPolicy is not enforced between pods of this node's bridge");
        }
        parts.push(Box::new(PolicyPart::new(&node)));
    }
    let mut agent = Agent::new(parts);
    // A part that fails does not stop the node: the others are applied,
    // the failed one is synced fully again on the next change or, when
    // nothing changes, on a timer (kube-proxy retries a failed sync too);
    // until it works /healthz counts the update as not applied.
    let errors = agent.apply(&first);
    for e in &errors {
        tracing::error!("first sync: {e}");
    }
    after_update(
        &health,
        &node_state,
        &state,
        &node,
        &proxy_metrics,
        &source,
        errors.is_empty(),
    );
    if let Some(p) = &mut publisher {
        p.publish(&source, &state, &node);
    }
    drop(state);
    drop(first);
    log_memory("first sync applied");
    // The lists' garbage goes back to the kernel: the agent's footprint is its state.
    crate::dns::release_freed_memory();
    log_memory("first sync done; following the API");
    let mut retry_in = RETRY_FIRST;
    loop {
        let failing = agent.failing();
        let timeout = (!failing.is_empty()).then_some(retry_in);
        let update = match source.next_timeout(timeout)? {
            Some(update) => update,
            None if timeout.is_some() => {
                let errors = agent.retry();
                for e in &errors {
                    tracing::error!("retried after {retry_in:?}: {e}");
                }
                if errors.is_empty() {
                    tracing::info!(parts = ?failing, "retry worked");
                    health.updated();
                    retry_in = RETRY_FIRST;
                } else {
                    retry_in = (retry_in * 2).min(RETRY_MAX);
                }
                continue;
            }
            None => break,
        };
        let errors = agent.apply(&update);
        for e in &errors {
            tracing::error!("{e}");
        }
        if errors.is_empty() {
            retry_in = RETRY_FIRST;
        }
        if let Some(cni) = &mut cni {
            cni.follow(&update.state, &node);
        }
        if let Some(p) = &mut publisher {
            p.publish(&source, &update.state, &node);
        }
        after_update(
            &health,
            &node_state,
            &update.state,
            &node,
            &proxy_metrics,
            &source,
            errors.is_empty(),
        );
    }
    drop(server);
    Ok(())
}

/// The first wait before a failed part is synced again, and the longest.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[allow(clippy::too_many_arguments)]
fn after_update(
    health: &Health,
    node_state: &Mutex<NodeState>,
    state: &Arc<ClusterState>,
    node: &str,
    metrics: &ProxyMetrics,
    source: &KubeSource,
    applied: bool,
) {
    if applied {
        health.updated();
    }
    metrics.refused_objects(source.refused());
    let eligible = node_eligible(state, node);
    if let Ok(mut n) = node_state.lock() {
        n.known = true;
        n.eligible = eligible;
        n.applied = Some(state.clone());
    }
}

fn parse_all<T: std::str::FromStr>(
    texts: &[String],
    flag: &'static str,
    what: &str,
) -> Result<Vec<T>, Error> {
    texts
        .iter()
        .map(|t| {
            t.parse().map_err(|_| Error::Flag {
                flag,
                message: format!("{t:?} is not {what}"),
            })
        })
        .collect()
}

/// Every Node's pod ranges: the pod network, as far as the API says.
fn pod_cidrs(state: &ClusterState) -> Vec<IpNet> {
    let mut cidrs: Vec<IpNet> = state
        .nodes
        .iter()
        .filter_map(|n| n.spec.as_ref())
        .flat_map(|s| {
            s.pod_cidrs
                .iter()
                .flatten()
                .chain(s.pod_cidr.as_ref())
                .filter_map(|c| c.parse::<IpNet>().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    cidrs.sort();
    cidrs.dedup();
    cidrs
}

/// The node is not being deleted nor about to be (kube-proxy's nodeEligible).
fn node_eligible(state: &ClusterState, node: &str) -> bool {
    let Some(n) = state.nodes.get("", node) else {
        return false;
    };
    n.metadata.deletion_timestamp.is_none()
        && !n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .any(|t| t.key == TO_BE_DELETED)
}

/// This process's resident memory now and at its peak, as the kernel
/// counts it (`VmRSS`, `VmHWM` of /proc/self/status, kB; 0 when unread):
/// logged at the first sync, where a node's operator looks for it.
fn log_memory(what: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    // RssAnon is the heap's share; the rest is mostly the binary's own pages.
    tracing::info!(
        rss_kb = field("VmRSS:"),
        peak_rss_kb = field("VmHWM:"),
        anon_rss_kb = field("RssAnon:"),
        "{what}"
    );
}

/// The ruleset as `strait proxy --dry-run` prints it.
fn print_ruleset(state: &ClusterState, ctx: &NodeContext) {
    let table = plan(state, ctx);
    println!(
        "# strait agent --dry-run for node {:?}: {} service ports",
        ctx.node_name,
        table.ports.len()
    );
    crate::proxy::print_tables(&table);
}

/// strait as the node's CNI plugin, as flannel's install-cni and its
/// daemon do it: the binary copied in, the configuration written from the
/// node's pod ranges (and again when they change), each by rename so that
/// a container runtime never reads half a file.
struct CniInstall {
    bin_dir: std::path::PathBuf,
    conf_dir: std::path::PathBuf,
    mtu: u32,
    /// The configuration last written.
    written: Option<String>,
}

impl CniInstall {
    fn install_binary(&self) -> Result<(), Error> {
        let exe = std::fs::read("/proc/self/exe")
            .map_err(|e| Error::Output(format!("cannot read this binary to install it: {e}")))?;
        write_atomic(&self.bin_dir.join("strait"), &exe, 0o755)?;
        tracing::info!(dir = %self.bin_dir.display(), "CNI plugin installed");
        Ok(())
    }

    /// Write the configuration for the node's pod ranges, if they are
    /// known and differ from what was written.
    fn follow(&mut self, state: &ClusterState, node: &str) {
        let ranges = node_pod_cidrs(state, node);
        if ranges.is_empty() {
            if self.written.is_none() {
                tracing::warn!(
                    "Node {node:?} has no spec.podCIDRs yet: no CNI configuration written"
                );
            }
            return;
        }
        let conf = conflist(&ranges, self.mtu);
        if self.written.as_deref() == Some(conf.as_str()) {
            return;
        }
        match write_atomic(
            &self.conf_dir.join("10-strait.conflist"),
            conf.as_bytes(),
            0o644,
        ) {
            Ok(()) => {
                tracing::info!(dir = %self.conf_dir.display(), ranges = ?ranges, "CNI configuration written");
                self.written = Some(conf);
            }
            Err(e) => tracing::error!("{e}"),
        }
    }
}

/// This node's pod ranges, parsed (anything else in the field is left out).
fn node_pod_cidrs(state: &ClusterState, node: &str) -> Vec<IpNet> {
    let Some(spec) = state.nodes.get("", node).and_then(|n| n.spec.as_ref()) else {
        return Vec::new();
    };
    let mut ranges: Vec<IpNet> = spec
        .pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.as_ref())
        .filter_map(|c| c.parse::<IpNet>().ok())
        .collect();
    ranges.sort();
    ranges.dedup();
    ranges
}

/// The conflist: strait's plugin (bridge, host-local addresses from the
/// node's ranges, port mappings) as the lab's nodes use it.
fn conflist(ranges: &[IpNet], mtu: u32) -> String {
    let ranges: Vec<serde_json::Value> = ranges
        .iter()
        .map(|r| serde_json::json!([{"subnet": r.to_string()}]))
        .collect();
    let conf = serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "strait",
        "plugins": [{
            "type": "strait",
            "bridge": "cni0",
            "isGateway": true,
            "isDefaultGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "mtu": mtu,
            "capabilities": {"portMappings": true},
            "ipam": {"type": "host-local", "ranges": ranges},
        }],
    });
    serde_json::to_string_pretty(&conf).unwrap_or_default() + "\n"
}

/// Write `path` by way of a temporary file in its directory and a rename.
fn write_atomic(path: &std::path::Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let fail =
        |what: &str, e: std::io::Error| Error::Output(format!("{what} {}: {e}", path.display()));
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.strait-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| fail("cannot write", e))?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail("cannot write", e));
    }
    Ok(())
}

#[derive(Default)]
struct NodeState {
    /// A first sync happened: `eligible` says something.
    known: bool,
    eligible: bool,
    /// The cluster state the node's rules were last brought up to.
    applied: Option<Arc<ClusterState>>,
}

/// Per kind the agent watches (`watched`), how many objects the applied state holds
/// and the newest resourceVersion among them (`""`: none, or none is a
/// number). A client that lists the same kinds from the API server knows
/// the node caught up with what it listed when both agree: a change the
/// node lacks is either newer than every object it has, or a deletion
/// that leaves the API server with fewer objects. `strait lab policy
/// matrix` waits for this before it probes.
fn applied_objects(state: Option<&ClusterState>, watched: &[Kind]) -> String {
    let mut kinds: std::collections::BTreeMap<&str, (usize, Option<u64>)> =
        watched.iter().map(|k| (k.as_str(), (0, None))).collect();
    for object in state.into_iter().flat_map(ClusterState::objects) {
        if let Some((count, newest)) = kinds.get_mut(object.kind().as_str()) {
            *count += 1;
            let version = object
                .metadata()
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok());
            *newest = (*newest).max(version);
        }
    }
    let fields: Vec<String> = kinds
        .iter()
        .map(|(kind, (count, newest))| {
            format!(
                "{}:{{\"count\":{count},\"newestResourceVersion\":\"{}\"}}",
                json(kind),
                newest.map(|v| v.to_string()).unwrap_or_default()
            )
        })
        .collect();
    format!("{{{}}}", fields.join(","))
}

struct HealthConfig {
    health: Arc<Health>,
    timeout: Duration,
    proxy: Arc<ProxyMetrics>,
    kube: Arc<KubeMetrics>,
    node: Arc<Mutex<NodeState>>,
    /// The kinds the source watches: what `appliedObjects` counts.
    watched: Vec<Kind>,
}

fn serve(address: SocketAddr, config: HealthConfig) -> std::io::Result<HttpServer> {
    HttpServer::start(address, move |path| {
        // A query string (`/healthz?verbose`) does not change the answer.
        let path = path.split('?').next().unwrap_or_default();
        match path {
            "/healthz" => health_response(&config, true),
            "/livez" => health_response(&config, false),
            "/metrics" => Response {
                status: 200,
                content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
                // The source's counters, then the proxy's (whose text ends the exposition).
                body: format!("{}{}", config.kube.encode_body(), config.proxy.encode()),
                headers: Vec::new(),
            },
            _ => Response {
                status: 404,
                content_type: "text/plain",
                body: "try /healthz, /livez or /metrics\n".into(),
                headers: Vec::new(),
            },
        }
    })
}

/// kube-proxy's answer: 200 when the node's rules are up to date (no
/// change has waited longer than the timeout, the first sync done, the
/// last sync of the rules worked), else 503; `/healthz` also says 503 when
/// the node is being deleted. An unreachable API server queues nothing, so
/// it does not make the node unhealthy, as with kube-proxy: load balancers
/// health-check this port, and a control-plane outage must not drain every
/// node at once while their rules are right. The body names the failing
/// watches, since when and why, and how long the oldest change not yet
/// applied has waited; `lastUpdated` stays at the last update.
fn health_response(config: &HealthConfig, with_node: bool) -> Response {
    let report = config.health.report();
    let now = SystemTime::now();
    let synced = report.last_updated.is_some();
    let fresh = report.oldest_queued.is_none_or(|w| w <= config.timeout);
    let (known, eligible, applied_state) = config
        .node
        .lock()
        .map(|n| (n.known, n.eligible, n.applied.clone()))
        .unwrap_or((false, false, None));
    // The last sync of the rules worked (the proxy's own verdict).
    let applied = config.proxy.healthz().status == 200;
    let healthy = synced && fresh && applied && (!with_node || !known || eligible);
    let failing: Vec<String> = report
        .failing
        .iter()
        .map(|(kind, since, why)| {
            format!(
                "{{\"kind\":{},\"since\":{},\"error\":{}}}",
                json(kind.as_str()),
                json(&rfc3339(*since)),
                json(why)
            )
        })
        .collect();
    let body = format!(
        "{{\"lastUpdated\":{},\"currentTime\":{},\"nodeEligible\":{},\"synced\":{synced},\"oldestQueuedSeconds\":{},\"failingWatches\":[{}],\"appliedObjects\":{}}}",
        json(&report.last_updated.map(rfc3339).unwrap_or_default()),
        json(&rfc3339(now)),
        known && eligible,
        // What the timeout is compared with; null: nothing waits to be applied.
        report
            .oldest_queued
            .map_or("null".to_owned(), |d| format!("{:.3}", d.as_secs_f64())),
        failing.join(","),
        applied_objects(applied_state.as_deref(), &config.watched)
    );
    Response {
        status: if healthy { 200 } else { 503 },
        content_type: "application/json",
        body,
        headers: vec![("X-Content-Type-Options".into(), "nosniff".into())],
    }
}

/// A JSON string: error texts may hold anything.
fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `2026-11-30T21:36:09.123Z`, as Go's time marshals in kube-proxy's answer.
fn rfc3339(t: SystemTime) -> String {
    use strait_model::k8s_openapi::jiff::Timestamp;
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let millis = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millisecond(millis)
        .unwrap_or(Timestamp::MAX)
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_074_569_123);
        assert_eq!(rfc3339(t), "2026-11-30T21:36:09.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    fn state_with_node(yaml: &str) -> ClusterState {
        let loaded = strait_model::parse_str("n.yaml", yaml, strait_model::Format::Yaml).unwrap();
        ClusterState::from_objects(
            loaded
                .objects
                .into_iter()
                .map(|(o, origin)| (o, Some(origin))),
        )
        .unwrap()
    }

    #[test]
    fn a_node_being_removed_is_not_eligible() {
        let ok = state_with_node(
            "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDRs: [10.244.1.0/24]}\n",
        );
        assert!(node_eligible(&ok, "n1"));
        assert!(!node_eligible(&ok, "n2"));
        assert_eq!(
            pod_cidrs(&ok),
            vec!["10.244.1.0/24".parse::<IpNet>().unwrap()]
        );
        let tainted = state_with_node("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {taints: [{key: ToBeDeletedByClusterAutoscaler, effect: NoSchedule}]}\n");
        assert!(!node_eligible(&tainted, "n1"));
    }

    #[test]
    fn the_cni_configuration_comes_from_the_nodes_ranges_and_is_written_whole() {
        let state = state_with_node("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24, \"fd00:244:1::/64\"]}\n");
        let ranges = node_pod_cidrs(&state, "n1");
        assert_eq!(ranges.len(), 2);
        let conf: serde_json::Value = serde_json::from_str(&conflist(&ranges, 1450)).unwrap();
        let plugin = &conf["plugins"][0];
        assert_eq!(plugin["type"], "strait");
        assert_eq!(plugin["mtu"], 1450);
        assert_eq!(plugin["ipam"]["ranges"][0][0]["subnet"], "10.244.1.0/24");
        assert_eq!(plugin["ipam"]["ranges"][1][0]["subnet"], "fd00:244:1::/64");

        let dir = std::env::temp_dir().join(format!("strait-cni-install-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut install = CniInstall {
            bin_dir: dir.clone(),
            conf_dir: dir.clone(),
            mtu: 1450,
            written: None,
        };
        install.follow(&state, "n1");
        let written = std::fs::read_to_string(dir.join("10-strait.conflist")).unwrap();
        assert_eq!(written, conflist(&ranges, 1450));
        install.install_binary().unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("strait"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        // Nothing but the two files: no temporary one left behind.
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["10-strait.conflist", "strait"]);
        std::fs::remove_dir_all(&dir).unwrap();
        // A node without ranges: nothing written.
        let none = state_with_node("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n");
        assert!(node_pod_cidrs(&none, "n1").is_empty());
    }

    #[test]
    fn health_is_503_before_the_first_sync_and_200_after() {
        let config = HealthConfig {
            health: Arc::new(Health::default()),
            timeout: Duration::from_secs(60),
            proxy: Arc::new(ProxyMetrics::default()),
            kube: Arc::new(KubeMetrics::default()),
            node: Arc::new(Mutex::new(NodeState::default())),
            watched: strait_kube::AGENT_KINDS.to_vec(),
        };
        let r = health_response(&config, true);
        assert_eq!(r.status, 503);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["synced"], false);
        assert!(v["oldestQueuedSeconds"].is_null(), "nothing queued");
        config.health.updated();
        assert_eq!(
            health_response(&config, true).status,
            503,
            "no sync of the rules yet"
        );
        config
            .proxy
            .synced("full", Duration::from_millis(1), 0, 0, 0);
        *config.node.lock().unwrap() = NodeState {
            known: true,
            eligible: true,
            applied: None,
        };
        assert_eq!(health_response(&config, true).status, 200);
        let v: serde_json::Value =
            serde_json::from_str(&health_response(&config, true).body).unwrap();
        assert_eq!(
            v["appliedObjects"]["NetworkPolicy"],
            serde_json::json!({"count": 0, "newestResourceVersion": ""})
        );
        // What the node applied: counted per watched kind, newest version.
        let state = state_with_node("apiVersion: v1\nkind: Node\nmetadata: {name: n1, resourceVersion: \"12\"}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns-a, resourceVersion: \"9\"}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns-b, resourceVersion: \"31\"}\n");
        config.node.lock().unwrap().applied = Some(Arc::new(state));
        let v: serde_json::Value =
            serde_json::from_str(&health_response(&config, true).body).unwrap();
        assert_eq!(
            v["appliedObjects"]["Namespace"],
            serde_json::json!({"count": 2, "newestResourceVersion": "31"})
        );
        assert_eq!(v["appliedObjects"]["Node"]["newestResourceVersion"], "12");
        assert_eq!(v["appliedObjects"]["Pod"]["count"], 0);
        // Being deleted: /healthz says so, /livez does not.
        config.node.lock().unwrap().eligible = false;
        assert_eq!(health_response(&config, true).status, 503);
        assert_eq!(health_response(&config, false).status, 200);
        let v: serde_json::Value =
            serde_json::from_str(&health_response(&config, false).body).unwrap();
        assert_eq!(v["nodeEligible"], false);
        assert!(v["lastUpdated"].as_str().unwrap().ends_with('Z'));
        // A failed sync of the rules: unhealthy until one works again.
        config.node.lock().unwrap().eligible = true;
        config.proxy.failed();
        assert_eq!(health_response(&config, true).status, 503);
    }
}
