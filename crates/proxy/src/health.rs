//! Health checks as kube-proxy serves them: for each LoadBalancer Service
//! with `externalTrafficPolicy: Local`, an HTTP server on its
//! `healthCheckNodePort` telling the load balancer whether this node has a
//! local endpoint (200) or not (503); and `/healthz` plus `/metrics` for the
//! proxy itself.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use strait_linux::{HttpServer, Response};

/// One Service's health check: where, and how many local endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub namespace: String,
    pub name: String,
    pub port: u16,
    pub local_endpoints: usize,
}

fn body(check: &HealthCheck) -> String {
    format!(
        r#"{{"service":{{"namespace":{},"name":{}}},"localEndpoints":{},"serviceProxyHealthy":true}}"#,
        json_string(&check.namespace),
        json_string(&check.name),
        check.local_endpoints
    )
}

/// `text` as a JSON string: names are input, and must not end the string.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The running health-check servers, one per port.
#[derive(Default)]
pub struct HealthCheckServers {
    servers: BTreeMap<u16, (Arc<RwLock<HealthCheck>>, HttpServer)>,
}

impl HealthCheckServers {
    /// Start, update and stop servers so that exactly `wanted` run.
    pub fn sync(&mut self, wanted: &[HealthCheck]) {
        let ports: BTreeMap<u16, &HealthCheck> = wanted.iter().map(|c| (c.port, c)).collect();
        self.servers.retain(|port, _| ports.contains_key(port));
        for (port, check) in ports {
            if let Some((shared, _)) = self.servers.get(&port) {
                *shared.write().expect("not poisoned") = check.clone();
                continue;
            }
            let shared = Arc::new(RwLock::new(check.clone()));
            let state = shared.clone();
            let address = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            let server = HttpServer::start(address, move |_path| {
                let check = state.read().expect("not poisoned").clone();
                Response {
                    status: if check.local_endpoints > 0 { 200 } else { 503 },
                    content_type: "application/json",
                    body: body(&check),
                    headers: vec![
                        ("X-Content-Type-Options".into(), "nosniff".into()),
                        (
                            "X-Load-Balancing-Endpoint-Weight".into(),
                            check.local_endpoints.to_string(),
                        ),
                    ],
                }
            });
            match server {
                Ok(server) => {
                    self.servers.insert(port, (shared, server));
                }
                Err(e) => tracing::warn!(
                    "health check for Service {}/{} on port {port}: {e}",
                    check.namespace,
                    check.name
                ),
            }
        }
    }

    pub fn ports(&self) -> Vec<u16> {
        self.servers.keys().copied().collect()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    kind: &'static str,
}

/// The proxy's own metrics.
pub struct ProxyMetrics {
    registry: Registry,
    sync_duration: Family<SyncLabels, Histogram>,
    sync_failures: Counter,
    last_sync: Gauge<f64, AtomicU64>,
    service_ports: Gauge,
    chains: Gauge,
    elements: Gauge,
    service_errors: Gauge,
    conntrack_failures: Counter,
    refused_objects: Gauge,
    last_success: Mutex<Option<SystemTime>>,
    failing: Mutex<bool>,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("strait_proxy");
        let sync_duration = Family::<SyncLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register(
            "sync_duration_seconds",
            "Time to bring the kernel's rules up to date, by kind (full, partial)",
            sync_duration.clone(),
        );
        let sync_failures = Counter::default();
        registry.register(
            "sync_failures",
            "Syncs that failed (each is followed by a full resync)",
            sync_failures.clone(),
        );
        let last_sync = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_successful_sync_timestamp_seconds",
            "When the rules last matched the cluster state (Unix time)",
            last_sync.clone(),
        );
        let service_ports = Gauge::default();
        registry.register(
            "service_ports",
            "Service ports programmed",
            service_ports.clone(),
        );
        let chains = Gauge::default();
        registry.register(
            "chains",
            "Per-service chains in table ip strait",
            chains.clone(),
        );
        let elements = Gauge::default();
        registry.register(
            "map_elements",
            "Elements in the dispatch maps and sets",
            elements.clone(),
        );
        let service_errors = Gauge::default();
        registry.register(
            "service_errors",
            "Services not programmed (the kernel refused them) or whose load balancer is kept closed (unreadable ranges or ingress); the log says why",
            service_errors.clone(),
        );
        let conntrack_failures = Counter::default();
        registry.register(
            "conntrack_failures",
            "conntrack deletions of stale UDP flows that failed (each is retried at the next sync)",
            conntrack_failures.clone(),
        );
        let refused_objects = Gauge::default();
        registry.register(
            "refused_objects",
            "Objects (or unreadable documents and files) of the manifests that admission refused at the last reload; each keeps its previously admitted version or is absent; the log says why",
            refused_objects.clone(),
        );
        ProxyMetrics {
            registry,
            refused_objects,
            service_errors,
            conntrack_failures,
            sync_duration,
            sync_failures,
            last_sync,
            service_ports,
            chains,
            elements,
            last_success: Mutex::new(None),
            failing: Mutex::new(false),
        }
    }
}

impl ProxyMetrics {
    pub fn synced(
        &self,
        kind: &'static str,
        took: Duration,
        service_ports: usize,
        chains: usize,
        elements: usize,
    ) {
        self.sync_duration
            .get_or_create(&SyncLabels { kind })
            .observe(took.as_secs_f64());
        let now = SystemTime::now();
        self.last_sync.set(
            now.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        self.service_ports.set(service_ports as i64);
        self.chains.set(chains as i64);
        self.elements.set(elements as i64);
        *self.last_success.lock().expect("not poisoned") = Some(now);
        *self.failing.lock().expect("not poisoned") = false;
    }

    pub fn service_errors(&self, services: usize) {
        self.service_errors.set(services as i64);
    }

    pub fn refused_objects(&self, refused: usize) {
        self.refused_objects.set(refused as i64);
    }

    pub fn conntrack_failed(&self, new_failures: u64) {
        self.conntrack_failures.inc_by(new_failures);
    }

    pub fn failed(&self) {
        self.sync_failures.inc();
        *self.failing.lock().expect("not poisoned") = true;
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// kube-proxy's `/healthz`: healthy once a sync succeeded and none failed since.
    pub fn healthz(&self) -> Response {
        let last = *self.last_success.lock().expect("not poisoned");
        let failing = *self.failing.lock().expect("not poisoned");
        let stamp = |t: SystemTime| {
            format!(
                "{:.3}",
                t.duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64()
            )
        };
        let healthy = last.is_some() && !failing;
        Response {
            status: if healthy { 200 } else { 503 },
            content_type: "application/json",
            body: format!(
                r#"{{"lastUpdated":"{}","currentTime":"{}","healthy":{healthy}}}"#,
                last.map(stamp).unwrap_or_default(),
                stamp(SystemTime::now())
            ),
            headers: vec![("X-Content-Type-Options".into(), "nosniff".into())],
        }
    }
}

/// `/metrics` and `/healthz` on `address`.
pub fn serve_metrics(
    address: SocketAddr,
    metrics: Arc<ProxyMetrics>,
) -> std::io::Result<HttpServer> {
    HttpServer::start(address, move |path| match path {
        "/metrics" => Response {
            status: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: metrics.encode(),
            headers: Vec::new(),
        },
        "/healthz" | "/livez" => metrics.healthz(),
        _ => Response {
            status: 404,
            content_type: "text/plain",
            body: "try /metrics or /healthz\n".into(),
            headers: Vec::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_check_bodies_escape_names() {
        let check = HealthCheck {
            namespace: "a\"},\"x\":{\"".into(),
            name: "new\nline\\<".into(),
            port: 1,
            local_endpoints: 0,
        };
        let text = body(&check);
        assert_eq!(
            text,
            r#"{"service":{"namespace":"a\"},\"x\":{\"","name":"new\u000aline\\\u003c"},"localEndpoints":0,"serviceProxyHealthy":true}"#
        );
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["service"]["namespace"], check.namespace.as_str());
        assert_eq!(json["service"]["name"], check.name.as_str());
    }
}
