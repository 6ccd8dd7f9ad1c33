//! The Ingress controller: Ingress v1 and Gateway API (GatewayClass,
//! Gateway, HTTPRoute, ReferenceGrant) served over HTTP and HTTPS.
//!
//! [`plan`] turns a [`strait_model::ClusterState`] into a [`RouteTable`] —
//! every Kubernetes rule (IngressClass, hosts, path types and their
//! precedence, backends resolved to ready endpoints, certificates from
//! `kubernetes.io/tls` Secrets) in one pure function. [`IngressServer`] is
//! the data plane that serves a table and takes the next one without
//! dropping a connection; requests go straight to endpoints, never through
//! a Service's virtual IP. [`gateway`] plans the Gateway API objects into
//! the same table, with their status, and holds the one lookup the data
//! plane makes per request ([`RouteTable::decide`]: request head →
//! decision) and the filters it applies to the heads.

mod error;
pub mod gateway;
pub mod gateway_status;
mod h1;
mod metrics;
mod plan;
mod server;
mod tls;

pub use error::{Error, Result};
pub use gateway::{
    plan_all, plan_all_on, plan_gateways, plan_gateways_on, GatewayPlan, GatewayStatuses,
    GatewayTable, ListenerPorts, GATEWAY_CONTROLLER,
};
pub use plan::{
    plan, Backend, HostRoutes, PathType, Problem, Route, RouteTable, TlsCertificate,
    ANNOTATION_DEFAULT_CLASS, ANNOTATION_INGRESS_CLASS, CONTROLLER,
};
pub use server::{Balance, Body, Config, IngressServer};
pub use tls::Certificates;
