//! The Ingress controller: Ingress v1 objects served over HTTP and HTTPS.
//!
//! [`plan`] turns a [`strait_model::ClusterState`] into a [`RouteTable`] —
//! every Kubernetes rule (IngressClass, hosts, path types and their
//! precedence, backends resolved to ready endpoints, certificates from
//! `kubernetes.io/tls` Secrets) in one pure function. [`IngressServer`] is
//! the data plane that serves a table and takes the next one without
//! dropping a connection; requests go straight to endpoints, never through
//! a Service's virtual IP.

mod error;
pub mod gateway;
mod plan;
mod server;
mod tls;

pub use error::{Error, Result};
pub use gateway::{
    plan_all, plan_gateways, GatewayPlan, GatewayStatuses, GatewayTable, GATEWAY_CONTROLLER,
};
pub use plan::{
    plan, Backend, HostRoutes, PathType, Problem, Route, RouteTable, TlsCertificate,
    ANNOTATION_DEFAULT_CLASS, ANNOTATION_INGRESS_CLASS, CONTROLLER,
};
pub use server::{Body, Config, IngressServer};
pub use tls::Certificates;
