//! What the DNS server counts: queries by type and response code, latency,
//! cache hits and misses, upstream errors.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    qtype: String,
    rcode: String,
}

pub struct DnsMetrics {
    registry: Registry,
    queries: Family<QueryLabels, Counter>,
    latency: Histogram,
    cache_hits: Counter,
    cache_misses: Counter,
    upstream_errors: Counter,
}

impl Default for DnsMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("strait_dns");
        let queries = Family::<QueryLabels, Counter>::default();
        registry.register(
            "queries",
            "Queries answered, by type and response code",
            queries.clone(),
        );
        let latency = Histogram::new(exponential_buckets(0.000_01, 2.0, 20));
        registry.register(
            "request_duration_seconds",
            "Time from a query's arrival to its answer",
            latency.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "cache_hits",
            "Forwarded names answered from the cache",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "cache_misses",
            "Forwarded names that had to go upstream",
            cache_misses.clone(),
        );
        let upstream_errors = Counter::default();
        registry.register(
            "upstream_errors",
            "Upstream exchanges that failed or were refused",
            upstream_errors.clone(),
        );
        DnsMetrics {
            registry,
            queries,
            latency,
            cache_hits,
            cache_misses,
            upstream_errors,
        }
    }
}

impl DnsMetrics {
    pub fn answered(&self, qtype: &str, rcode: &str, seconds: f64) {
        self.queries
            .get_or_create(&QueryLabels {
                qtype: qtype.to_owned(),
                rcode: rcode.to_owned(),
            })
            .inc();
        self.latency.observe(seconds);
    }

    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    pub fn upstream_error(&self) {
        self.upstream_errors.inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
