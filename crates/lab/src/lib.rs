//! The lab: a whole cluster network on one Linux machine. Nodes and pods
//! are network namespaces, containers are host processes inside them, and
//! the cluster's state comes from manifests. Everything strait does in a
//! real cluster happens here for real: pods get their interfaces from the
//! CNI plugin, Services are nftables rules in each node, names come from
//! strait's DNS running as pods behind `kube-system/kube-dns`.
//!
//! `strait lab up` writes the lab's files under `/run/strait/<name>/` and
//! starts a controller process that builds the network and keeps the pods,
//! rules and names in step with the desired state. The controller serves
//! the Kubernetes API (kubectl works against `/run/strait/<name>/kubeconfig`);
//! its store holds the desired state.

mod agents;
mod alloc;
mod api;
mod controller;
mod error;
mod layout;
mod net;
mod procs;

pub use controller::run_controller;
pub use error::{Error, Result};
pub use layout::{
    pod_key, validate_lab_name, Backend, LabConfig, LabState, Layout, NodeProblem, PodRecord,
    MAX_LAB_NAME,
};
pub use net::masquerade_table;
pub use procs::{kill_in_netns, netns_inode, ProcessId};
