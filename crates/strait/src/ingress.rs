//! `strait ingress`: the Ingress controller and its data plane, fed from
//! manifests (followed with inotify) or from the Kubernetes API
//! (`--kubernetes`); a change is served without dropping a connection.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use strait_agent::{FileSource, Source};
use strait_ingress::gateway::GatewayStatuses;
use strait_ingress::gateway_status::{status_patches, StatusScope};
use strait_ingress::{plan_all_on, Balance, Config, IngressServer, ListenerPorts, RouteTable};
use strait_kube::{
    ClientConfig, KubeSource, Options as KubeOptions, INGRESS_KINDS, INGRESS_OPTIONAL_KINDS,
};
use strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use strait_model::k8s_openapi::jiff::Timestamp;
use strait_model::{ClusterState, Kind, ObjectKey};

use crate::cli::IngressArgs;
use crate::error::Error;
use crate::state::{cluster_config, follower_reader};

fn address(flag: &'static str, text: &str) -> Result<SocketAddr, Error> {
    text.parse().map_err(|_| Error::Flag {
        flag,
        message: format!("{text:?} is not IP:PORT"),
    })
}

pub fn run(args: &IngressArgs) -> Result<(), Error> {
    let config = cluster_config(&args.cluster)?;
    gateways_served(args)?;
    let http = address("--listen", &args.listen)?;
    let https = args
        .tls_listen
        .as_deref()
        .map(|t| address("--tls-listen", t))
        .transpose()?;
    let workers = match args.workers {
        Some(0) => {
            return Err(Error::Flag {
                flag: "--workers",
                message: "at least one worker".into(),
            })
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let balance = match args.balance.as_str() {
        "round-robin" => Balance::RoundRobin,
        "least-request" => Balance::LeastRequest,
        other => {
            return Err(Error::Flag {
                flag: "--balance",
                message: format!("{other:?} is not round-robin or least-request"),
            })
        }
    };
    if args.request_timeout == 0 {
        return Err(Error::Flag {
            flag: "--request-timeout",
            message: "at least one second".into(),
        });
    }
    let metrics = args
        .metrics_listen
        .as_deref()
        .map(|m| address("--metrics-listen", m))
        .transpose()?;
    let serving = Config {
        http: Some(http),
        https,
        workers,
        balance,
        request_timeout: std::time::Duration::from_secs(args.request_timeout),
        access_log: args.access_log,
        metrics,
        ..Config::default()
    };
    if args.kubernetes {
        return run_kubernetes(args, serving);
    }
    let mut source = FileSource::open(
        &args.manifests.files,
        args.manifests.recursive,
        config,
        // One refused object hurts only itself.
        follower_reader(|refused| {
            if refused > 0 {
                tracing::warn!(
                    refused,
                    "objects refused (see above); the others are served"
                )
            }
        }),
    )?;
    let (table, statuses) = planned(source.state(), args, None);
    log_statuses(&statuses);
    let server = start(serving, table, workers)?;
    // The first snapshot is the table already served.
    let _ = source.next()?;
    loop {
        if let Some(update) = source.wait_batch(None)? {
            log_statuses(&reload(&server, &update.state, args, None));
        }
    }
}

/// Cluster mode: nothing is listened on before every kind's first full
/// list (a client is refused and tries another node rather than getting a
/// 404 for a route that exists); then each update is planned and swapped
/// in, and the Ingresses served get this controller's addresses in their
/// status. Gateway API is watched where the API server serves it; its
/// objects' status is written whether or not addresses are published, and
/// a listener is served only on the port it names (see [`ListenerPorts`]).
fn run_kubernetes(args: &IngressArgs, config: Config) -> Result<(), Error> {
    let workers = config.workers;
    let ports = Some(ListenerPorts {
        http: config.http.map(|a| a.port()),
        https: config.https.map(|a| a.port()),
    });
    let client = match &args.kubeconfig {
        Some(path) => ClientConfig::Kubeconfig(path.into()),
        None => ClientConfig::Infer,
    };
    let mut source = KubeSource::start(
        client,
        KubeOptions {
            kinds: INGRESS_KINDS.to_vec(),
            optional: INGRESS_OPTIONAL_KINDS.to_vec(),
            ..KubeOptions::default()
        },
    )?;
    tracing::info!("waiting for the first full list of IngressClasses, Ingresses, Services, EndpointSlices, Secrets, Namespaces and (where served) the Gateway API's kinds");
    let Some(first) = source.next()? else {
        return Ok(());
    };
    let (table, statuses) = planned(&first.state, args, ports);
    log_statuses(&statuses);
    let server = start(config, table, workers)?;
    let mut status = StatusWriter::new(&args.publish_status_address);
    let only = gateways_served(args)?;
    let published = status.addresses.clone();
    let gateway_status = GatewayStatusWriter {
        controller: &args.gateway_controller,
        addresses: &published,
        only: only.as_deref(),
    };
    status.write(&source, &first.state, &server.table());
    gateway_status.write(&source, &first.state, &statuses);
    let mut logged = statuses;
    while let Some(update) = source.next()? {
        let statuses = reload(&server, &update.state, args, ports);
        source.health().updated();
        status.write(&source, &update.state, &server.table());
        gateway_status.write(&source, &update.state, &statuses);
        // Said once per change (every update is planned again, the status
        // writes' own included), not at every update.
        if statuses != logged {
            log_statuses(&statuses);
            logged = statuses;
        }
    }
    Ok(())
}

fn start(config: Config, table: RouteTable, workers: usize) -> Result<IngressServer, Error> {
    let (server, problems) = IngressServer::start(config, table)?;
    for problem in problems {
        tracing::warn!("{problem}");
    }
    let served = server.table();
    tracing::info!(
        http = ?server.http_address,
        https = ?server.https_address,
        workers,
        ingresses = served.ingresses.len(),
        paths = served.len(),
        certificates = served.certificates.len(),
        "serving"
    );
    eprintln!(
        "strait ingress: serving {} Ingress(es), {} path(s), {} Gateway API route match(es) on http://{}{}",
        served.ingresses.len(),
        served.len(),
        served.gateway.len(),
        server
            .http_address
            .map(|a| a.to_string())
            .unwrap_or_default(),
        server
            .https_address
            .map(|a| format!(" and https://{a}"))
            .unwrap_or_default()
    );
    drop(served);
    Ok(server)
}

fn reload(
    server: &IngressServer,
    state: &Arc<ClusterState>,
    args: &IngressArgs,
    ports: Option<ListenerPorts>,
) -> GatewayStatuses {
    let (table, statuses) = planned(state, args, ports);
    let (ingresses, paths, gateway) = (table.ingresses.len(), table.len(), table.gateway.len());
    for problem in server.swap(table) {
        tracing::warn!("{problem}");
    }
    tracing::info!(ingresses, paths, gateway, "routes reloaded");
    statuses
}

/// The status of the Gateway API objects of strait's classes, as the
/// planner decided it (with the published addresses as the Gateways'
/// `status.addresses`), written through the `status` subresource where
/// the API holds something else. A write that fails is tried again with
/// the next update (a 409 brings one: the object changed).
struct GatewayStatusWriter<'a> {
    controller: &'a str,
    addresses: &'a [IpAddr],
    only: Option<&'a [ObjectKey]>,
}

impl GatewayStatusWriter<'_> {
    fn write(&self, source: &KubeSource, state: &ClusterState, statuses: &GatewayStatuses) {
        let scope = StatusScope {
            controller: self.controller,
            addresses: self.addresses,
            only: self.only,
        };
        let now = Time(Timestamp::now());
        for p in status_patches(state, statuses, &scope, &now) {
            match source.patch_status(p.kind, &p.namespace, &p.name, &p.patch) {
                Ok(()) => tracing::info!(object = %p.key(), "status written"),
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
}

/// `status.loadBalancer.ingress`, as Ingress controllers keep it: the
/// published addresses on every Ingress served, none on one this
/// controller stopped serving. Written only where it differs from what the
/// API holds, so several replicas publishing the same addresses settle at
/// once.
struct StatusWriter {
    addresses: Vec<IpAddr>,
}

impl StatusWriter {
    fn new(addresses: &[IpAddr]) -> StatusWriter {
        let mut addresses = addresses.to_vec();
        addresses.sort();
        addresses.dedup();
        StatusWriter { addresses }
    }

    fn write(&mut self, source: &KubeSource, state: &ClusterState, table: &RouteTable) {
        if self.addresses.is_empty() {
            return;
        }
        let served: BTreeSet<&ObjectKey> = table.ingresses.iter().collect();
        for ingress in state.ingresses.iter() {
            let meta = &ingress.metadata;
            let (namespace, name) = (
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default(),
            );
            let mut current: Vec<IpAddr> = ingress
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect();
            current.sort();
            let key = ObjectKey::new(Kind::Ingress, namespace, name);
            let wanted: &[IpAddr] = if served.contains(&key) {
                &self.addresses
            } else if current == self.addresses {
                // Ours from before (its class changed, or it lost a
                // conflict): another controller's addresses are left alone.
                &[]
            } else {
                continue;
            };
            if current == wanted {
                continue;
            }
            match source.patch_ingress_status(namespace, name, wanted) {
                Ok(()) => tracing::info!(ingress = %key, addresses = ?wanted, "status written"),
                // Tried again with the next update.
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
}

/// `--gateway NS/NAME` as keys (checked once at start).
fn gateways_served(args: &IngressArgs) -> Result<Option<Vec<ObjectKey>>, Error> {
    if args.gateway.is_empty() {
        return Ok(None);
    }
    args.gateway
        .iter()
        .map(|g| match g.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
                Ok(ObjectKey::new(Kind::Gateway, ns, name))
            }
            _ => Err(Error::Flag {
                flag: "--gateway",
                message: format!("{g:?} is not NAMESPACE/NAME"),
            }),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The table of a snapshot (Ingresses and Gateway API) and the Gateway API
/// objects' status; its problems and the conditions that are not as they
/// should be logged (each names the object).
fn planned(
    state: &Arc<ClusterState>,
    args: &IngressArgs,
    ports: Option<ListenerPorts>,
) -> (RouteTable, GatewayStatuses) {
    let only = gateways_served(args).ok().flatten();
    let (table, statuses) = plan_all_on(
        state,
        &args.controller,
        &args.gateway_controller,
        only.as_deref(),
        ports,
    );
    for problem in &table.problems {
        tracing::warn!("{problem}");
    }
    (table, statuses)
}

/// What is wrong is said in the log too, with the spec's reason (in
/// manifest mode the log is the only place it is said).
fn log_statuses(statuses: &GatewayStatuses) {
    for (key, report) in &statuses.gateways {
        let listeners = report
            .listeners
            .iter()
            .flat_map(|l| l.conditions.iter().map(move |c| (Some(&l.name), c)));
        for (listener, c) in report.conditions.iter().map(|c| (None, c)).chain(listeners) {
            let bad = if c.type_ == "Conflicted" {
                c.status
            } else {
                !c.status
            };
            if bad {
                tracing::warn!(gateway = %key, listener = ?listener, condition = c.type_, reason = c.reason, "{}", c.message);
            }
        }
    }
    for (key, parents) in &statuses.routes {
        for parent in parents {
            for c in &parent.conditions {
                let bad = if c.type_ == "PartiallyInvalid" {
                    c.status
                } else {
                    !c.status
                };
                if bad {
                    tracing::warn!(route = %key, parent = %parent.parent_ref.name, condition = c.type_, reason = c.reason, "{}", c.message);
                }
            }
        }
    }
}
