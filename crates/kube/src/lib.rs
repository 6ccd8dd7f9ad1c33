//! Cluster mode's source of cluster state: kube-rs watchers of the
//! Kubernetes API, feeding the node agent snapshots and change sets.
//!
//! [`KubeSource`] watches the kinds a node reads (Services,
//! EndpointSlices and Nodes; with NetworkPolicy also Namespaces, Pods and
//! the policies), admits every object with the model's admission (a
//! refused object is logged, keeps its previous version and is counted),
//! and hands out no snapshot before every kind completed its first full
//! list, as kube-proxy waits for its informers. The snapshot logic is
//! [`Cache`], pure and tested with synthetic watcher events.

mod admit;
mod cache;
mod error;
mod metrics;
mod node;
mod source;
mod status;

pub use admit::admit;
pub use cache::{Admitted, Cache, Notice};
pub use error::{Error, Result};
pub use metrics::KubeMetrics;
pub use source::{
    api_resource, ClientConfig, Health, HealthReport, KubeSource, Options, AGENT_KINDS,
    AGENT_OPTIONAL_KINDS, DNS_KINDS, INGRESS_KINDS, INGRESS_OPTIONAL_KINDS, POLICY_KINDS,
    PROXY_KINDS,
};

/// Re-exported for tests and callers that build clients themselves.
pub use kube;
