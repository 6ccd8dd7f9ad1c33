//! What the data plane tells about its requests: Prometheus metrics
//! (requests by route and status, latency by route) on an address of their
//! own, and the access log (one line per request on standard output).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::h1::RequestLog;
use crate::{Error, Result};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The backend (`namespace/service:port`); empty when no route matched.
    route: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

type Histograms = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The data plane's counters, shared by its workers.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("strait_ingress");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route (backend) and status code",
            requests.clone(),
        );
        let latency: Histograms = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from a request's head to the end of its response, by route",
            latency.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
        }
    }

    pub(crate) fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                code: status.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        // Writing to a String does not fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The metrics endpoint's thread; dropping it stops it.
pub(crate) struct MetricsServer {
    pub(crate) address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serve `GET /metrics` on `address`, on a thread of its own (scrapes never
/// wait behind proxied requests).
pub(crate) fn serve(address: SocketAddr, metrics: Arc<Metrics>) -> Result<MetricsServer> {
    let fail = |source| Error::Listen { address, source };
    let listener = std::net::TcpListener::bind(address).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    let bound = listener.local_addr().map_err(fail)?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("ingress-metrics".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("metrics: cannot start a runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("metrics: cannot use the listener: {e}");
                        return;
                    }
                };
                let accepting = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let metrics = metrics.clone();
                        tokio::spawn(async move {
                            let service = service_fn(move |req: hyper::Request<_>| {
                                let metrics = metrics.clone();
                                async move {
                                    let mut response = if req.uri().path() == "/metrics" {
                                        Response::new(Full::new(Bytes::from(metrics.text())))
                                    } else {
                                        let mut r = Response::new(Full::new(Bytes::from_static(
                                            b"see /metrics\n",
                                        )));
                                        *r.status_mut() = StatusCode::NOT_FOUND;
                                        r
                                    };
                                    response.headers_mut().insert(
                                        hyper::header::CONTENT_TYPE,
                                        hyper::header::HeaderValue::from_static(
                                            "text/plain; version=0.0.4; charset=utf-8",
                                        ),
                                    );
                                    Ok::<_, std::convert::Infallible>(response)
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = accepting => {}
                    _ = stopped => {}
                }
            });
        })
        .map_err(Error::Worker)?;
    Ok(MetricsServer {
        address: bound,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// One access log line: time (UTC), client, host, method, path, status,
/// response body bytes, endpoint, duration. Host and path are quoted with
/// escapes: what a client sends never breaks a line.
pub(crate) fn access_log(
    request: &RequestLog,
    status: u16,
    bytes: u64,
    upstream: Option<SocketAddr>,
    elapsed: Duration,
) {
    let upstream = upstream.map_or_else(|| "-".to_owned(), |u| u.to_string());
    let line = format!(
        "{} {} \"{}\" {} \"{}\" {} {} {} {:.3}ms\n",
        utc_now(),
        request.client,
        request.host.escape_default(),
        request.method.escape_default(),
        request.path.escape_default(),
        status,
        bytes,
        upstream,
        elapsed.as_secs_f64() * 1000.0,
    );
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// Now as RFC 3339 UTC with milliseconds.
fn utc_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's method).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_now_looks_like_rfc3339() {
        let t = super::utc_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
