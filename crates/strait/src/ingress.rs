//! `strait ingress`: the Ingress controller and its data plane, fed from
//! manifests (followed with inotify: a change is served without dropping a
//! connection).

use std::net::SocketAddr;
use std::sync::Arc;

use strait_agent::{FileSource, Source};
use strait_ingress::gateway::GatewayStatuses;
use strait_ingress::{plan_all, Config, IngressServer, RouteTable};
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
    let table = planned(source.state(), args);
    let (server, problems) = IngressServer::start(
        Config {
            http: Some(http),
            https,
            workers,
            ..Config::default()
        },
        table,
    )?;
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
    // The first snapshot is the table already served.
    let _ = source.next()?;
    loop {
        if let Some(update) = source.wait_batch(None)? {
            let table = planned(&update.state, args);
            let (ingresses, paths) = (table.ingresses.len(), table.len());
            for problem in server.swap(table) {
                tracing::warn!("{problem}");
            }
            tracing::info!(ingresses, paths, "routes reloaded");
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

/// The table of a snapshot (Ingresses and Gateway API), its problems and
/// the Gateway API conditions that are not True logged (each names the
/// object).
fn planned(state: &Arc<ClusterState>, args: &IngressArgs) -> RouteTable {
    let only = gateways_served(args).ok().flatten();
    let (table, statuses) = plan_all(
        state,
        &args.controller,
        &args.gateway_controller,
        only.as_deref(),
    );
    for problem in &table.problems {
        tracing::warn!("{problem}");
    }
    log_statuses(&statuses);
    table
}

/// Writing Gateway API status back is not done yet: what is wrong is said
/// in the log instead, with the spec's reason.
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
