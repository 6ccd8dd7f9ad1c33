//! `strait ingress`: the Ingress controller and its data plane, fed from
//! manifests (followed with inotify: a change is served without dropping a
//! connection).

use std::net::SocketAddr;
use std::sync::Arc;

use strait_agent::{FileSource, Source};
use strait_ingress::{plan, Balance, Config, IngressServer, RouteTable};
use strait_model::ClusterState;

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
    let table = planned(source.state(), &args.controller);
    let (server, problems) = IngressServer::start(
        Config {
            http: Some(http),
            https,
            workers,
            balance,
            request_timeout: std::time::Duration::from_secs(args.request_timeout),
            access_log: args.access_log,
            metrics,
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
        "strait ingress: serving {} Ingress(es), {} path(s) on http://{}{}",
        served.ingresses.len(),
        served.len(),
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
            let table = planned(&update.state, &args.controller);
            let (ingresses, paths) = (table.ingresses.len(), table.len());
            for problem in server.swap(table) {
                tracing::warn!("{problem}");
            }
            tracing::info!(ingresses, paths, "routes reloaded");
        }
    }
}

/// The table of a snapshot, its problems logged (each names the object).
fn planned(state: &Arc<ClusterState>, controller: &str) -> RouteTable {
    let table = plan(state, controller);
    for problem in &table.problems {
        tracing::warn!("{problem}");
    }
    table
}
