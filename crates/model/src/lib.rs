//! strait's cluster model.
//!
//! Everything here is pure: manifests are parsed into the ecosystem's own
//! Kubernetes types (`k8s-openapi`), kept in immutable [`ClusterState`]
//! snapshots, and run through the standalone controllers — the parts of the
//! API server and kube-controller-manager that a cluster without them (the
//! lab, `strait render`) still needs: Deployment → Pods, Service address
//! allocation and EndpointSlices. No I/O apart from reading manifest files,
//! no clock, no randomness: the same input gives the same output.

pub mod cnp;
mod error;
pub mod gateway;
mod hash;
mod json;
mod kind;
mod manifest;
mod names;
mod object;
mod parallel;
mod pod;
mod ports;
mod selector;
mod state;
mod validate;

pub mod controllers;

pub use cnp::ClusterNetworkPolicy;
pub use error::{Error, Result};
pub use gateway::{Gateway, GatewayClass, HTTPRoute, ReferenceGrant};
pub use kind::{Kind, ObjectKey};
pub use manifest::{
    load_paths, load_paths_with, parse_str, parse_str_with, Admission, Format, Loaded, Origin,
    ReadOptions, Refused, SkipReason, Skipped, Source, MAX_INPUT_BYTES,
};
pub use names::dns_label as validate_dns_label;
pub use names::dns_subdomain as validate_dns_subdomain;
pub use object::Object;
pub use pod::CompactPod;
pub use ports::resolve_target_port;
pub use selector::{Requirement, Selector, SelectorError};
pub use state::{Change, ChangeSet, ClusterState, Store};

/// Re-exported so that users of the model name the same Kubernetes types.
pub use k8s_openapi;
