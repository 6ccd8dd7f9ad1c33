//! `strait dns`: the cluster DNS server, fed from manifests or (with
//! `--kubernetes`) from the Kubernetes API.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strait_dns::{resolv_conf_upstreams, DnsMetrics, DnsServer, Forwarder, SharedZone, Zone};
use strait_linux::{HttpServer, Response};
use strait_model::controllers::ClusterConfig;

use crate::cli::DnsArgs;
use crate::error::Error;
use crate::state::{cluster_config, follower_reader};
use strait_agent::{FileSource, Source};
use strait_kube::{ClientConfig, KubeSource, Options as KubeOptions, DNS_KINDS};

fn serial() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
}

fn parse_upstream(text: &str) -> Result<SocketAddr, Error> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| Error::Flag {
            flag: "--upstream",
            message: format!("{text:?} is not IP or IP:PORT"),
        })
}

pub fn run(args: &DnsArgs) -> Result<(), Error> {
    let config = cluster_config(&args.cluster)?;
    let listen: SocketAddr = args.listen.parse().map_err(|_| Error::Flag {
        flag: "--listen",
        message: format!("{:?} is not IP:PORT", args.listen),
    })?;
    let metrics_address: SocketAddr = args.metrics_address.parse().map_err(|_| Error::Flag {
        flag: "--metrics-address",
        message: format!("{:?} is not IP:PORT", args.metrics_address),
    })?;
    let upstreams = if args.upstreams.is_empty() {
        resolv_conf_upstreams(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    } else {
        args.upstreams
            .iter()
            .map(|u| parse_upstream(u))
            .collect::<Result<Vec<_>, _>>()?
    };
    let domain = args.cluster_domain.trim_end_matches('.').to_owned();
    if strait_model::validate_dns_subdomain(&domain).is_err() {
        return Err(Error::Flag {
            flag: "--cluster-domain",
            message: format!("{domain:?} is not a domain name"),
        });
    }

    let metrics = Arc::new(DnsMetrics::default());
    // Not ready until the first snapshot is served.
    let ready = Arc::new(AtomicBool::new(false));
    let start_http = || {
        let (metrics, ready) = (metrics.clone(), ready.clone());
        let http = HttpServer::start(metrics_address, move |path| match path {
            "/metrics" => Response {
                status: 200,
                content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body: metrics.encode(),
                headers: Vec::new(),
            },
            "/healthz" => Response {
                status: 200,
                content_type: "text/plain",
                body: "OK\n".into(),
                headers: Vec::new(),
            },
            "/ready" if ready.load(Ordering::Relaxed) => Response {
                status: 200,
                content_type: "text/plain",
                body: "OK\n".into(),
                headers: Vec::new(),
            },
            "/ready" => Response {
                status: 503,
                content_type: "text/plain",
                body: "loading\n".into(),
                headers: Vec::new(),
            },
            _ => Response {
                status: 404,
                content_type: "text/plain",
                body: "try /metrics, /healthz or /ready\n".into(),
                headers: Vec::new(),
            },
        })
        .map_err(|e| tracing::error!("cannot serve /metrics on {metrics_address}: {e}"))
        .ok();
        if let Some(http) = &http {
            tracing::info!(address = %http.address, "serving /metrics, /healthz and /ready");
        }
        http
    };
    let forwarder = Forwarder::new(
        upstreams.clone(),
        Duration::from_millis(args.upstream_timeout_ms),
    );
    let start = |zone: &SharedZone| {
        DnsServer::start(listen, zone.clone(), forwarder, metrics.clone()).map_err(|e| {
            Error::Flag {
                flag: "--listen",
                message: format!("cannot listen on {listen}: {e}"),
            }
        })
    };

    if args.kubernetes {
        // Cluster mode: the API's Services, EndpointSlices and Pods. The
        // port is not served before the first full list: a client's query
        // is refused at once (and retried elsewhere) rather than answered
        // NXDOMAIN for a name that exists; /ready says 503 meanwhile.
        // /ready answers (503) while the lists are read.
        let _http = start_http();
        let client = match &args.kubeconfig {
            Some(path) => ClientConfig::Kubeconfig(path.into()),
            None => ClientConfig::Infer,
        };
        let mut source = KubeSource::start(
            client,
            KubeOptions {
                kinds: DNS_KINDS.to_vec(),
                optional: Vec::new(),
                ..KubeOptions::default()
            },
        )?;
        tracing::info!("waiting for the first full list of Services, EndpointSlices and Pods");
        let Some(first) = source.next()? else {
            return Ok(());
        };
        let zone = SharedZone::new(build_zone(&first.state, &config, &domain, args.ttl)?);
        let server = start(&zone)?;
        ready.store(true, Ordering::Relaxed);
        release_freed_memory();
        let names = zone.get().names.len();
        tracing::info!(udp = %server.udp_address, tcp = %server.tcp_address, domain, names, upstreams = ?upstreams, "serving");
        while let Some(update) = source.next()? {
            match build_zone(&update.state, &config, &domain, args.ttl) {
                Ok(fresh) => {
                    tracing::info!(names = fresh.names.len(), "zone reloaded");
                    zone.swap(fresh);
                }
                Err(e) => tracing::error!("{e}; keeping the current zone"),
            }
            source.health().updated();
            metrics.refused_objects(source.refused());
        }
        return Ok(());
    }

    // The manifests are read once, then followed with inotify: a change
    // re-reads only the files it names.
    let (files, recursive) = (&args.manifests.files, args.manifests.recursive);
    let mut source = open_source(files, recursive, &config, metrics.clone())?;
    let zone = SharedZone::new(build_zone(source.state(), &config, &domain, args.ttl)?);
    let server = start(&zone)?;
    let _http = start_http();
    ready.store(true, Ordering::Relaxed);
    release_freed_memory();
    let names = zone.get().names.len();
    tracing::info!(udp = %server.udp_address, tcp = %server.tcp_address, domain, names, upstreams = ?upstreams, "serving");

    // The first snapshot is the zone already served.
    let _ = source.next()?;
    loop {
        if let Some(update) = source.wait_batch(None)? {
            match build_zone(&update.state, &config, &domain, args.ttl) {
                Ok(fresh) => {
                    tracing::info!(names = fresh.names.len(), "zone reloaded");
                    zone.swap(fresh);
                }
                Err(e) => tracing::error!("{e}; keeping the current zone"),
            }
        }
        // Whatever the batch gave, what reading it freed goes back.
        release_freed_memory();
    }
}

/// Open the file source on a thread of its own: the garbage of the first
/// read (hundreds of megabytes for a big cluster) stays in that thread's
/// allocator arena and is handed back.
fn open_source(
    files: &[String],
    recursive: bool,
    config: &ClusterConfig,
    metrics: Arc<DnsMetrics>,
) -> Result<FileSource, Error> {
    let (files, config) = (files.to_vec(), config.clone());
    let source = std::thread::spawn(move || -> Result<FileSource, Error> {
        Ok(FileSource::open(
            &files,
            recursive,
            config,
            // One refused object hurts only itself.
            follower_reader(move |refused| metrics.refused_objects(refused)),
        )?)
    })
    .join()
    .map_err(|_| Error::Output("reading the manifests panicked".into()))??;
    release_freed_memory();
    Ok(source)
}

/// Build the zone of a snapshot on a thread of its own (its garbage stays
/// in that thread's arena); the zone is copied out compactly into ours.
fn build_zone(
    state: &Arc<strait_model::ClusterState>,
    config: &ClusterConfig,
    domain: &str,
    ttl: u32,
) -> Result<Zone, Error> {
    let (state, config, domain) = (state.clone(), config.clone(), domain.to_owned());
    let built = std::thread::spawn(move || {
        // `ns.dns.<domain>`: the DNS Service's address in each family.
        let nameservers: Vec<std::net::IpAddr> =
            config.service_cidrs.iter().map(|c| c.dns_ip()).collect();
        Zone::build(&state, &domain, ttl, serial(), &nameservers)
    })
    .join()
    .map_err(|_| Error::Output("the zone builder panicked".into()))?;
    let compact = built.compact();
    drop(built);
    release_freed_memory();
    Ok(compact)
}

/// Reading manifests makes garbage by the hundred megabytes at scale; hand
/// what was freed back to the kernel so the server's footprint is its zone.
// malloc_trim is glibc-only and has no safe wrapper.
#[allow(unsafe_code)]
pub(crate) fn release_freed_memory() {
    // SAFETY: malloc_trim only walks glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
