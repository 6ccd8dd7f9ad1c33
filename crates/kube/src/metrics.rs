//! What the source did, for `/metrics` (Prometheus text, as the proxy's).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use strait_model::Kind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The source's counters.
pub struct KubeMetrics {
    registry: Registry,
    events: Family<KindLabels, Counter>,
    watch_errors: Family<KindLabels, Counter>,
    lists: Family<KindLabels, Counter>,
    updates: Counter,
    refused: Gauge,
}

impl Default for KubeMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("strait_kube");
        let events = Family::<KindLabels, Counter>::default();
        registry.register(
            "watch_events",
            "Watch events received, by kind",
            events.clone(),
        );
        let watch_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "watch_errors",
            "Failed lists and watches (each retried with backoff; 410 Gone relists), by kind",
            watch_errors.clone(),
        );
        let lists = Family::<KindLabels, Counter>::default();
        registry.register(
            "full_lists",
            "Complete lists (the first, and relists after a watch expired), by kind",
            lists.clone(),
        );
        let updates = Counter::default();
        registry.register(
            "updates",
            "Snapshots handed to the node's parts",
            updates.clone(),
        );
        let refused = Gauge::default();
        registry.register(
            "refused_objects",
            "Objects admission refuses now; each keeps its previous version or is absent; the log says why",
            refused.clone(),
        );
        KubeMetrics {
            registry,
            events,
            watch_errors,
            lists,
            updates,
            refused,
        }
    }
}

impl KubeMetrics {
    pub(crate) fn event(&self, kind: Kind) {
        self.events
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    pub(crate) fn watch_error(&self, kind: Kind) {
        self.watch_errors
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    pub(crate) fn relisted(&self, kind: Kind) {
        self.lists
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    pub(crate) fn full_lists(&self, kind: Kind) -> u64 {
        self.lists
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .get()
    }

    pub(crate) fn update(&self) {
        self.updates.inc();
    }

    pub(crate) fn refused(&self, n: usize) {
        self.refused.set(n as i64);
    }

    /// OpenMetrics text, without the final `# EOF`: it is served after the
    /// proxy's metrics, whose text ends the exposition.
    pub fn encode_body(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        match out.strip_suffix("# EOF\n") {
            Some(body) => body.to_owned(),
            None => out,
        }
    }
}
