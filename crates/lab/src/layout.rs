//! Where a lab keeps things, and what it writes down.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::io;
use crate::procs::ProcessId;
use crate::Result;

/// How pod ranges of different nodes reach each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// flannel-style VXLAN: VNI 1, port 8472, static FDB and neighbours.
    Vxlan,
    /// Plain routes via the other nodes' underlay addresses.
    HostGw,
}

/// The MTU of the nodes' underlay links (veth pairs: Ethernet's 1500).
pub const UNDERLAY_MTU: u32 = 1500;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
pub const VXLAN_OVERHEAD: u32 = 50;

/// The settings a lab was made with (`lab.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabConfig {
    pub name: String,
    pub nodes: usize,
    pub backend: Backend,
    pub pod_cidr: Ipv4Net,
    pub service_cidr: String,
}

impl LabConfig {
    pub fn node_name(&self, i: usize) -> String {
        format!("node-{}", i + 1)
    }

    /// The node's address on the underlay (kind-like 172.18.0.0/16).
    pub fn node_ip(&self, i: usize) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(172, 18, 0, (i + 2) as u8)
    }

    /// The MTU of the pods' interfaces, as flannel hands it to the CNI
    /// plugin: the underlay's, less the VXLAN encapsulation (50 bytes over
    /// IPv4) when pod traffic crosses nodes inside VXLAN.
    pub fn pod_mtu(&self) -> u32 {
        match self.backend {
            Backend::Vxlan => UNDERLAY_MTU - VXLAN_OVERHEAD,
            Backend::HostGw => UNDERLAY_MTU,
        }
    }

    /// The node's /24 of the pod CIDR.
    pub fn node_pod_cidr(&self, i: usize) -> Ipv4Net {
        let base = u32::from(self.pod_cidr.network()) + ((i as u32) << 8);
        Ipv4Net::new(base.into(), 24).expect("a /24")
    }
}

/// One pod as the lab runs it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub netns: String,
    pub ip: String,
    pub pid: Option<i32>,
    pub ready: bool,
    pub restarts: u32,
    pub phase: String,
    pub workdir: String,
    /// Every container process running now (restarts replace theirs), with
    /// its start time, so that `lab down` signals only processes that are
    /// still the ones the lab started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessId>,
    /// Why it does not run, when it cannot (a command that is not there, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What the controller has running (`state.json`), for the other commands.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LabState {
    pub pods: BTreeMap<String, PodRecord>,
    pub ready: bool,
    pub error: Option<String>,
    /// Pods that could not be started, and why.
    #[serde(default)]
    pub problems: BTreeMap<String, String>,
    /// Nodes whose Service proxy does not run or fails to sync, and why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_problems: BTreeMap<String, NodeProblem>,
}

/// Why a node's Services do not work.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeProblem {
    pub message: String,
    /// No Service proxy runs on the node at all (it could not enter the
    /// node's namespace), as opposed to a sync that failed and is retried.
    #[serde(default)]
    pub no_proxy: bool,
}

/// The longest lab name: namespace names (`strait-NAME-pod-…`) and
/// interface names derived from it stay short.
pub const MAX_LAB_NAME: usize = 20;

/// A lab's name is a short DNS label: it becomes a directory under
/// `/run/strait` and part of network namespace names, so nothing that could
/// leave that directory (`..`, `/`) or look like another lab's prefix (`.`)
/// is accepted.
pub fn validate_lab_name(name: &str) -> Result<()> {
    if name.len() <= MAX_LAB_NAME && strait_model::validate_dns_label(name).is_ok() {
        Ok(())
    } else {
        Err(crate::Error::Lab {
            lab: format!("{name:?}"),
            message: format!(
                "--name: a lab's name is a DNS label of at most {MAX_LAB_NAME} characters \
                 (lower case letters, digits and '-', starting and ending with a letter or digit)"
            ),
        })
    }
}

/// A short, fixed-length key for a pod (FNV-1a, 64 bits, of `namespace/name`):
/// what its network namespace and directory are named from, so that no name
/// from a manifest ever becomes a path component or a namespace name.
pub fn pod_key(namespace: &str, pod: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain([b'/']).chain(pod.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The paths of one lab.
#[derive(Clone, Debug)]
pub struct Layout {
    pub name: String,
    pub dir: PathBuf,
}

impl Layout {
    /// The paths of lab `name`; a name that is not a valid lab name is refused.
    pub fn new(name: &str) -> Result<Layout> {
        validate_lab_name(name)?;
        Ok(Layout {
            name: name.to_owned(),
            dir: PathBuf::from("/run/strait").join(name),
        })
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("lab.json")
    }
    /// The desired objects, a `kind: List`; `lab apply` and `lab delete` edit it.
    pub fn desired(&self) -> PathBuf {
        self.dir.join("desired.json")
    }
    /// The cluster as it is now (a `kind: List` with pod status), for `lab get` and DNS.
    pub fn cluster(&self) -> PathBuf {
        self.dir.join("cluster.json")
    }
    /// The admin kubeconfig of the lab's API server (mode 0600).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    /// The kubeconfig of the nodes' agents (service account
    /// kube-system/strait, the control plane's underlay address).
    pub fn agent_kubeconfig(&self) -> PathBuf {
        self.dir.join("agent.kubeconfig")
    }
    /// The log of node `i`'s `strait agent`.
    pub fn agent_log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("agent-node{}.log", i + 1))
    }
    /// The kubeconfig of the lab's DNS pod (kube-system/strait-dns).
    pub fn dns_kubeconfig(&self) -> PathBuf {
        self.dir.join("dns.kubeconfig")
    }
    /// The kubeconfig of the nodes' Ingress controllers
    /// (kube-system/strait-ingress).
    pub fn ingress_kubeconfig(&self) -> PathBuf {
        self.dir.join("ingress.kubeconfig")
    }
    /// The log of node `i`'s `strait ingress`.
    pub fn ingress_log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("ingress-node{}.log", i + 1))
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join("controller.pid")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("controller.log")
    }
    pub fn pods_dir(&self) -> PathBuf {
        self.dir.join("pods")
    }
    /// The pod's directory (logs, resolv.conf): named by its key, never by
    /// its namespace and name.
    pub fn pod_dir(&self, namespace: &str, pod: &str) -> PathBuf {
        self.pods_dir().join(pod_key(namespace, pod))
    }
    pub fn ipam(&self) -> PathBuf {
        self.dir.join("ipam")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }

    pub fn underlay_ns(&self) -> String {
        format!("strait-{}-underlay", self.name)
    }
    pub fn node_ns(&self, i: usize) -> String {
        format!("strait-{}-node{}", self.name, i + 1)
    }
    pub fn pod_ns(&self, namespace: &str, pod: &str) -> String {
        format!("strait-{}-pod-{}", self.name, pod_key(namespace, pod))
    }

    /// Whether a network namespace name is one this lab makes: exactly
    /// `strait-NAME-underlay`, `strait-NAME-nodeN` or `strait-NAME-pod-KEY`.
    /// Lab `a` does not claim lab `a-b`'s `strait-a-b-node1`: no suffix of
    /// ours contains a `-` before its fixed part.
    pub fn owns_netns(&self, ns: &str) -> bool {
        let Some(rest) = ns
            .strip_prefix("strait-")
            .and_then(|r| r.strip_prefix(self.name.as_str()))
            .and_then(|r| r.strip_prefix('-'))
        else {
            return false;
        };
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|c| c.is_ascii_digit());
        rest == "underlay"
            || rest.strip_prefix("node").is_some_and(digits)
            || rest.strip_prefix("pod-").is_some_and(|k| {
                k.len() == 16
                    && k.bytes()
                        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            })
    }
    pub fn read_config(&self) -> Result<LabConfig> {
        let text = std::fs::read(self.config())
            .map_err(io(format!("read {}", self.config().display())))?;
        serde_json::from_slice(&text).map_err(|e| crate::Error::Lab {
            lab: self.name.clone(),
            message: format!("lab.json: {e}"),
        })
    }

    pub fn read_state(&self) -> LabState {
        std::fs::read(self.state())
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok())
            .unwrap_or_default()
    }

    /// Replace a file atomically (write aside, rename): readers see the old
    /// or the new content, never a partial one. The temporary name carries
    /// the writer's PID so two writers never share it.
    pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::write(&tmp, bytes)
            .map_err(io(format!("write {}", tmp.display())))
            .and_then(|()| {
                std::fs::rename(&tmp, path).map_err(io(format!("rename {}", path.display())))
            });
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Like [`Layout::write_atomic`], readable by the owner only (a
    /// kubeconfig holds the admin's token).
    pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(io(format!("write {}", tmp.display())))
            .and_then(|()| {
                std::fs::rename(&tmp, path).map_err(io(format!("rename {}", path.display())))
            });
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Serialise `value` and replace `path` with it; a value that cannot be
    /// serialised is an error and the file keeps what it had.
    pub fn write_json<T: Serialize>(path: &std::path::Path, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| crate::Error::Step(format!("cannot serialise {}: {e}", path.display())))?;
        Self::write_atomic(path, &bytes)
    }

    /// Record the controller process (PID and start time).
    pub fn write_controller(&self, id: ProcessId) -> Result<()> {
        Self::write_atomic(&self.pid(), format!("{} {}\n", id.pid, id.start).as_bytes())
    }

    /// The controller, if it still runs: the recorded PID with the recorded
    /// start time (a PID reused by another process is not ours).
    pub fn controller(&self) -> Option<ProcessId> {
        let text = std::fs::read_to_string(self.pid()).ok()?;
        let mut words = text.split_whitespace();
        let id = ProcessId {
            pid: words.next()?.parse().ok()?,
            start: words.next()?.parse().ok()?,
        };
        id.is_running().then_some(id)
    }

    /// The controller's PID, if it is alive.
    pub fn controller_pid(&self) -> Option<i32> {
        self.controller().map(|c| c.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_are_short_dns_labels() {
        for good in ["strait", "a", "lab-1", "t12p34567", "abcdefghij0123456789"] {
            assert!(validate_lab_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            "a.b",
            "-a",
            "a-",
            "A",
            "a b",
            "x\n",
            "abcdefghij0123456789x",
        ] {
            let e = validate_lab_name(bad).expect_err(bad).to_string();
            assert!(e.contains("--name"), "{bad}: {e}");
            assert!(Layout::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_lab_owns_exactly_the_namespaces_it_names() {
        let a = Layout::new("a").unwrap();
        let ab = Layout::new("a-b").unwrap();
        let key = pod_key("default", "web");
        for ns in [
            "strait-a-underlay".to_owned(),
            "strait-a-node1".to_owned(),
            "strait-a-node12".to_owned(),
            a.pod_ns("default", "web"),
            a.node_ns(0),
            a.underlay_ns(),
        ] {
            assert!(a.owns_netns(&ns), "{ns}");
            assert!(!ab.owns_netns(&ns), "a-b does not own {ns}");
        }
        for ns in [
            ab.underlay_ns(),
            ab.node_ns(0),
            ab.pod_ns("default", "web"),
            format!("strait-a-pod-{}", &key[..8]),
            "strait-a-node".into(),
            "strait-a-nodex".into(),
            "strait-a-underlay2".into(),
            "strait-ab-node1".into(),
            "other".into(),
        ] {
            assert!(!a.owns_netns(&ns), "a does not own {ns}");
        }
        assert!(ab.owns_netns(&ab.node_ns(1)));
    }

    #[test]
    fn pod_directories_cannot_leave_the_pods_directory() {
        let lab = Layout::new("a").unwrap();
        for (ns, name) in [("..", ".."), ("../../etc", "x"), ("a/b", "/c"), ("", "")] {
            let dir = lab.pod_dir(ns, name);
            assert_eq!(dir.parent(), Some(lab.pods_dir().as_path()), "{dir:?}");
            let leaf = dir.file_name().unwrap().to_str().unwrap();
            assert!(leaf.len() == 16 && leaf.bytes().all(|c| c.is_ascii_hexdigit()));
        }
        assert_ne!(pod_key("a", "b-c"), pod_key("a-b", "c"));
    }

    /// A value whose serialisation fails.
    struct Unserialisable;
    impl Serialize for Unserialisable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }

    #[test]
    fn a_state_that_cannot_be_serialised_leaves_the_file_as_it_was() {
        let dir = std::env::temp_dir().join(format!("strait-lab-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("state.json");
        Layout::write_json(&file, &serde_json::json!({"ready": true})).unwrap();
        let before = std::fs::read(&file).unwrap();
        let e = Layout::write_json(&file, &Unserialisable).unwrap_err();
        assert!(e.to_string().contains("cannot serialise"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), before, "never written empty");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
