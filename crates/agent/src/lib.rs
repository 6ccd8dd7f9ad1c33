//! The node agent: one runtime per node that keeps every part of the node's
//! network (today the Service proxy; later policy, overlay, ingress, load
//! balancer announcer) in step with the cluster, fed by one source.
//!
//! A [`Source`] yields immutable snapshots of the cluster
//! ([`ClusterState`](strait_model::ClusterState) behind an `Arc`) each with
//! the change set that produced it: the file source ([`FileSource`],
//! manifests watched with inotify) and the channel source the lab's
//! controller feeds ([`ChannelSource`]). The Kubernetes API fits the same
//! interface: a watch event is one object's change.
//!
//! An [`Agent`] runs [`Part`]s in order on each snapshot, on the thread
//! that calls it: one OS thread per node network namespace (`setns` is per
//! thread), as the README's design section says.

mod agent;
mod error;
mod file;
pub mod overlay;
mod policy_part;
mod proxy_part;
mod scope;
mod source;
mod watch;

pub use agent::{Agent, Part};
pub use error::{Error, Result};
pub use file::{FileSource, FileSourceStats, Reader};
pub use overlay::OverlayPart;
pub use policy_part::PolicyPart;
pub use proxy_part::{ProxyPart, ProxyReporting};
pub use scope::{cluster_wide_flip, scoped_changes, Scope};
pub use source::{merge_changes, Changes, ChannelSource, Source, Update};
pub use watch::{DirWatch, Events};
