//! Where a lab keeps things, and what it writes down.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::io;
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
}

/// The paths of one lab.
#[derive(Clone, Debug)]
pub struct Layout {
    pub name: String,
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(name: &str) -> Layout {
        Layout {
            name: name.to_owned(),
            dir: PathBuf::from("/run/strait").join(name),
        }
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
        let mut h: u32 = 0x811c_9dc5;
        for b in namespace.bytes().chain([b'/']).chain(pod.bytes()) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        format!("strait-{}-pod-{h:08x}", self.name)
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

    /// Replace a file atomically (write aside, rename).
    pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(io(format!("rename {}", path.display())))
    }

    /// The controller's PID, if it is alive.
    pub fn controller_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pid())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            .ok()
            .map(|()| pid)
    }
}
