//! NetworkPolicy, and ClusterNetworkPolicy's Admin and Baseline tiers
//! around it, enforced in the kernel.
//!
//! Three readings of the same objects, kept apart on purpose:
//!
//! - [`semantics`]: the reference reading — a direct, slow transcription of
//!   the NetworkPolicy and ClusterNetworkPolicy API references ("is this
//!   connection allowed?"), with no kernel in it. It is the oracle the
//!   tests hold the planner to.
//! - [`plan`]: the planner — cluster state and the node's own pods to a
//!   typed nftables table whose cost per packet does not grow with the
//!   number of policies (verdict maps keyed on pod address and port), and
//!   the part that applies it on a node.
//! - [`matrix`]: the cyclonus-style reachability table, computed either
//!   by the reference reading or by tracing packets through the planned
//!   tables (`strait policy matrix`).

pub mod apply;
#[doc(hidden)]
pub mod e2e;
mod error;
#[doc(hidden)]
pub mod fixture;
pub mod matrix;
pub mod plan;
pub mod semantics;

pub use apply::{PolicyApplier, Sync};
pub use error::{Error, Result};
pub use matrix::{Cell, Matrix, PodRef, Protocol};
pub use plan::Incremental;
