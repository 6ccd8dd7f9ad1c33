//! The Service proxy as a part of the node agent: `strait_proxy`'s planner
//! and applier, with what `strait proxy` reports after each sync (log
//! lines, /metrics, the health check servers of `externalTrafficPolicy:
//! Local` Services).

use std::collections::BTreeMap;
use std::sync::Arc;

use strait_model::{ChangeSet, ClusterState};
use strait_proxy::{HealthCheckServers, NodeContext, ProxyMetrics, ServiceProxy, Sync};

use crate::agent::Part;
use crate::Result;

/// What is reported after each sync; `None` parts are not served.
#[derive(Default)]
pub struct ProxyReporting {
    pub metrics: Option<Arc<ProxyMetrics>>,
    /// Serve the Services' health check ports (`strait proxy` does; the
    /// lab's nodes do not).
    pub health_checks: bool,
}

/// The Service proxy of one node.
pub struct ProxyPart {
    proxy: ServiceProxy,
    reporting: ProxyReporting,
    health: HealthCheckServers,
    reported: Reported,
    last: Option<Sync>,
}

/// What was last said about Services with errors and conntrack failures,
/// so that each is said once.
#[derive(Default)]
struct Reported {
    errors: BTreeMap<(String, String), Vec<String>>,
    conntrack_failures: u64,
}

impl ProxyPart {
    pub fn new(ctx: NodeContext, reporting: ProxyReporting) -> ProxyPart {
        ProxyPart {
            proxy: ServiceProxy::new(ctx),
            reporting,
            health: HealthCheckServers::default(),
            reported: Reported::default(),
            last: None,
        }
    }

    pub fn proxy(&self) -> &ServiceProxy {
        &self.proxy
    }

    /// What the last sync did (`None` before the first or when it failed).
    pub fn last_sync(&self) -> Option<Sync> {
        self.last
    }

    /// Log a sync, count it, and serve the health checks it implies.
    fn record(&mut self, sync: Option<Sync>) {
        self.last = sync;
        let proxy = &self.proxy;
        // Health checks first: once a sync is logged, everything it implies holds.
        if self.reporting.health_checks {
            self.health.sync(&proxy.health_checks());
        }
        let errors = proxy.service_errors();
        for ((ns, name), list) in &errors {
            if self.reported.errors.get(&(ns.clone(), name.clone())) != Some(list) {
                for why in list {
                    tracing::error!("Service {ns:?}/{name:?}: {why}");
                }
            }
        }
        let failures = proxy.conntrack_failures();
        let new_failures = failures.saturating_sub(self.reported.conntrack_failures);
        self.reported.conntrack_failures = failures;
        let (ports, chains, elements) = proxy.stats();
        let metrics = self.reporting.metrics.as_deref();
        if let Some(m) = metrics {
            m.service_errors(errors.len());
            m.conntrack_failed(new_failures);
        }
        self.reported.errors = errors;
        match sync {
            Some(Sync::Full(d)) => {
                tracing::info!(service_ports = ports, chains, elements, elapsed = ?d, "full sync");
                if let Some(m) = metrics {
                    m.synced("full", d, ports, chains, elements);
                }
            }
            Some(Sync::Partial(d)) => {
                tracing::info!(service_ports = ports, chains, elements, elapsed = ?d, via = proxy.last_path(), "partial sync");
                if let Some(m) = metrics {
                    m.synced("partial", d, ports, chains, elements);
                }
            }
            Some(Sync::Unchanged) => tracing::debug!("no change"),
            None => {
                if let Some(m) = metrics {
                    m.failed();
                }
            }
        }
    }

    fn finish(&mut self, result: strait_proxy::Result<Sync>) -> Result<()> {
        match result {
            Ok(sync) => {
                self.record(Some(sync));
                Ok(())
            }
            Err(e) => {
                self.record(None);
                Err(e.into())
            }
        }
    }
}

impl Part for ProxyPart {
    fn name(&self) -> &'static str {
        "service proxy"
    }

    fn sync_all(&mut self, state: &ClusterState) -> Result<()> {
        let result = self.proxy.full_sync(state);
        self.finish(result)
    }

    fn sync_changes(
        &mut self,
        old: &ClusterState,
        new: &ClusterState,
        changes: &ChangeSet,
    ) -> Result<()> {
        let result = self.proxy.apply_changes(changes, old, new);
        self.finish(result)
    }
}
