//! Cluster mode's source of cluster state: kube-rs watchers of the
//! Kubernetes API, feeding the node agent snapshots and change sets.
