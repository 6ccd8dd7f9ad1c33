//! The Service proxy: what kube-proxy does, on nftables.
//!
//! [`plan`] turns a [`strait_model::ClusterState`] and the node's context into
//! a [`ServiceTable`] — all the Kubernetes semantics (which endpoints are
//! usable, traffic policies, masquerading, affinity), pure and deterministic.
//! [`render`] builds the table as typed nftables ([`strait_nft`] values, no
//! rule text); [`ServiceProxy`] puts it in the kernel, whole at first and
//! then as the smallest atomic change ([`strait_nft::Transaction`]), and
//! re-plans only the Services a change touches.
//!
//! The ruleset is shaped for scale (see the project's notes on nftables):
//! no anonymous set per Service; one chain per Service port holding plain
//! rules (a random cascade picks the endpoint evenly); dispatch through a few
//! large named maps whose elements change as Services come and go.

mod error;
mod health;
mod plan;
mod render;
mod sync;

pub use error::{Error, Result};
pub use health::{serve_metrics, HealthCheck, HealthCheckServers, ProxyMetrics};
pub use plan::{
    plan, plan_service, service_problems, Endpoint, Family, NodeContext, Protocol, ServicePort,
    ServiceTable, MASQUERADE_MARK,
};
pub use render::{
    colliding_ports, family_in_use, into_table, is_shared_chain, label, nft_family, port_id,
    render, render_full, render_port, table, to_table, Elements, Ruleset, TABLE, TABLE_NAME,
};
pub use sync::{ServiceProxy, Sync};
