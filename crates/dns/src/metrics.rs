//! What the DNS server counts: queries by type and response code, latency,
//! cache hits and misses, upstream errors.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    qtype: String,
    rcode: String,
}

/// Counters of the common (type, rcode) pairs, looked up without building
/// label strings: the fast path counts every query.
const FAST_TYPES: [(u16, &str); 8] = [
    (1, "A"),
    (28, "AAAA"),
    (33, "SRV"),
    (12, "PTR"),
    (16, "TXT"),
    (5, "CNAME"),
    (6, "SOA"),
    (255, "ANY"),
];
const FAST_RCODES: [&str; 6] = [
    "No Error",
    "Form Error",
    "Server Failure",
    "Non-Existent Domain",
    "Not Implemented",
    "Query Refused",
];

pub struct DnsMetrics {
    registry: Registry,
    queries: Family<QueryLabels, Counter>,
    latency: Histogram,
    cache_hits: Counter,
    cache_misses: Counter,
    upstream_errors: Counter,
    refused_objects: Gauge,
    fast: Vec<Counter>,
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
        let refused_objects = Gauge::default();
        registry.register(
            "refused_objects",
            "Objects (or unreadable documents and files) of the manifests that admission refused at the last reload; each keeps its previously admitted version or is absent; the log says why",
            refused_objects.clone(),
        );
        let mut fast = Vec::new();
        for (_, t) in FAST_TYPES {
            for r in FAST_RCODES {
                fast.push(
                    queries
                        .get_or_create(&QueryLabels {
                            qtype: t.to_owned(),
                            rcode: r.to_owned(),
                        })
                        .clone(),
                );
            }
        }
        DnsMetrics {
            registry,
            queries,
            latency,
            cache_hits,
            cache_misses,
            upstream_errors,
            refused_objects,
            fast,
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

    /// Count an answer given on the fast path.
    pub fn answered_fast(&self, qtype: u16, rcode: u8, seconds: f64) {
        let t = FAST_TYPES.iter().position(|(n, _)| *n == qtype);
        match t.filter(|_| usize::from(rcode) < FAST_RCODES.len()) {
            Some(t) => {
                self.fast[t * FAST_RCODES.len() + usize::from(rcode)].inc();
                self.latency.observe(seconds);
            }
            None => {
                let qtype = hickory_proto::rr::RecordType::from(qtype).to_string();
                let rcode = hickory_proto::op::ResponseCode::from(0, rcode).to_string();
                self.answered(&qtype, &rcode, seconds);
            }
        }
    }

    /// How many objects admission refused at the last load of the zone.
    pub fn refused_objects(&self, refused: usize) {
        self.refused_objects.set(refused as i64);
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
