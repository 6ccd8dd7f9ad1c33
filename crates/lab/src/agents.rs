//! Each lab node runs `strait agent` — the cluster-mode binary, against the
//! lab's API server at the control-plane address, with the service account
//! and RBAC `deploy/` gives it — as a process inside the node's network
//! namespace. The controller starts them, restarts one that exits, and
//! reads their health the way a kubelet would (`/healthz` on port 10256).
//!
//! Beside it, each node runs `strait ingress --kubernetes` (deploy/'s
//! `strait-ingress` DaemonSet: hostNetwork, ports 80 and 443 of the node's
//! underlay address), the lab's way in from "the internet" (the underlay
//! namespace) at L7.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use strait_linux::NetNs;

use crate::layout::{Backend, LabConfig, Layout, NodeProblem};
use crate::procs::ProcessId;
use crate::{Error, Result};

/// Where each agent serves its health, inside its node's namespace.
const HEALTH_PORT: u16 = 10256;
/// How often a healthy agent is asked again.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a failed agent waits before it is started again.
const RESTART_AFTER: Duration = Duration::from_secs(1);

struct NodeAgent {
    child: Option<(Child, ProcessId)>,
    /// The node's Ingress controller, and when to start it again after it
    /// exited.
    ingress: Option<(Child, ProcessId)>,
    ingress_restart_at: Option<Instant>,
    /// Its rules are synced (`/healthz` answered 200 at the last probe).
    healthy: bool,
    /// Ever synced: `lab up` waits for the first sync of every node.
    synced_once: bool,
    last_probe: Option<Instant>,
    restart_at: Option<Instant>,
    problem: Option<String>,
}

/// The agents of every node.
pub struct NodeAgents {
    agents: Vec<NodeAgent>,
}

impl NodeAgents {
    pub fn start(layout: &Layout, config: &LabConfig, strait: &Path) -> NodeAgents {
        let mut agents = NodeAgents {
            agents: (0..config.nodes)
                .map(|_| NodeAgent {
                    child: None,
                    ingress: None,
                    ingress_restart_at: None,
                    healthy: false,
                    synced_once: false,
                    last_probe: None,
                    restart_at: None,
                    problem: None,
                })
                .collect(),
        };
        for i in 0..config.nodes {
            agents.spawn(layout, config, strait, i);
            agents.spawn_ingress(layout, config, strait, i);
        }
        agents
    }

    fn spawn_ingress(&mut self, layout: &Layout, config: &LabConfig, strait: &Path, i: usize) {
        let agent = &mut self.agents[i];
        match spawn_ingress(layout, config, strait, i) {
            Ok(child) => {
                tracing::info!(node = %config.node_name(i), pid = child.1.pid, "strait ingress started");
                agent.ingress = Some(child);
                agent.ingress_restart_at = None;
            }
            Err(e) => {
                tracing::error!(node = %config.node_name(i), "{e}");
                agent.ingress_restart_at = Some(Instant::now() + RESTART_AFTER);
            }
        }
    }

    /// Restart an Ingress controller that exited (it serves nothing the
    /// node's readiness depends on, so it is no node problem).
    fn supervise_ingress(&mut self, layout: &Layout, config: &LabConfig, strait: &Path, i: usize) {
        let agent = &mut self.agents[i];
        if let Some((child, _)) = agent.ingress.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                tracing::error!(
                    node = %config.node_name(i),
                    "strait ingress exited ({status}); see {}",
                    layout.ingress_log(i).display()
                );
                agent.ingress = None;
                agent.ingress_restart_at = Some(Instant::now() + RESTART_AFTER);
            }
        }
        if agent.ingress.is_none()
            && agent
                .ingress_restart_at
                .is_some_and(|t| Instant::now() >= t)
        {
            self.spawn_ingress(layout, config, strait, i);
        }
    }

    fn spawn(&mut self, layout: &Layout, config: &LabConfig, strait: &Path, i: usize) {
        let agent = &mut self.agents[i];
        match spawn_agent(layout, config, strait, i) {
            Ok(child) => {
                tracing::info!(node = %config.node_name(i), pid = child.1.pid, "strait agent started");
                agent.child = Some(child);
                agent.restart_at = None;
            }
            Err(e) => {
                tracing::error!(node = %config.node_name(i), "{e}");
                agent.problem = Some(format!("no Service proxy: {e}"));
                agent.restart_at = Some(Instant::now() + RESTART_AFTER);
            }
        }
    }

    /// Restart what exited, probe what runs; the nodes' problems.
    pub fn supervise(
        &mut self,
        layout: &Layout,
        config: &LabConfig,
        strait: &Path,
        nodes: &[NetNs],
    ) -> Vec<(String, NodeProblem)> {
        for i in 0..self.agents.len() {
            self.supervise_ingress(layout, config, strait, i);
            let agent = &mut self.agents[i];
            if let Some((child, _)) = agent.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let message = format!(
                        "strait agent exited ({status}); see {}",
                        layout.agent_log(i).display()
                    );
                    tracing::error!(node = %config.node_name(i), "{message}");
                    agent.child = None;
                    agent.healthy = false;
                    agent.problem = Some(message);
                    agent.restart_at = Some(Instant::now() + RESTART_AFTER);
                }
            }
            if agent.child.is_none() {
                if agent.restart_at.is_some_and(|t| Instant::now() >= t) {
                    self.spawn(layout, config, strait, i);
                }
                continue;
            }
            let due = !agent.healthy || agent.last_probe.is_none_or(|t| t.elapsed() >= PROBE_EVERY);
            if due {
                if let Some(ns) = nodes.get(i) {
                    let answer = healthz(ns);
                    agent.last_probe = Some(Instant::now());
                    agent.healthy = answer.as_ref().is_ok_and(|code| *code == 200);
                    // The first sync counts once the node also reaches every
                    // other node's pods: its overlay needs the others'
                    // published annotations, a round through the API.
                    if agent.healthy && !agent.synced_once {
                        agent.synced_once = overlay_complete(ns, config, i);
                    }
                    agent.problem = match answer {
                        Ok(200) => None,
                        Ok(code) if agent.synced_once => {
                            Some(format!("strait agent: /healthz answers {code}"))
                        }
                        // Still listing the API before its first sync.
                        Ok(_) | Err(_) if !agent.synced_once => None,
                        Ok(code) => Some(format!("strait agent: /healthz answers {code}")),
                        Err(e) => Some(format!("strait agent: /healthz: {e}")),
                    };
                }
            }
        }
        self.agents
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let message = a.problem.clone()?;
                Some((
                    config.node_name(i),
                    NodeProblem {
                        no_proxy: a.child.is_none() && a.restart_at.is_none(),
                        message,
                    },
                ))
            })
            .collect()
    }

    /// Every node's agent has synced its rules at least once.
    pub fn all_synced(&self) -> bool {
        self.agents.iter().all(|a| a.synced_once)
    }
}

fn spawn_agent(
    layout: &Layout,
    config: &LabConfig,
    strait: &Path,
    i: usize,
) -> Result<(Child, ProcessId)> {
    let mut args: Vec<String> = vec!["agent".into(), "--kubeconfig".into()];
    args.push(layout.agent_kubeconfig().display().to_string());
    args.extend(
        [
            "--node-name",
            &config.node_name(i),
            "--node-ip",
            &config.node_ip(i).to_string(),
            "--cluster-cidr",
            &config.pod_cidr.to_string(),
            "--service-cidr",
            &config.service_cidr,
            "--network-policy",
            "--overlay",
            match config.backend {
                Backend::Vxlan => "vxlan",
                Backend::HostGw => "host-gw",
            },
            "--healthz-bind-address",
            &SocketAddr::from((Ipv4Addr::LOCALHOST, HEALTH_PORT)).to_string(),
        ]
        .map(str::to_owned),
    );
    spawn_in_node(
        layout,
        config,
        strait,
        i,
        "strait agent",
        &layout.agent_log(i),
        &args,
    )
}

/// `strait ingress --kubernetes` in node `i`'s namespace, on its underlay
/// address, publishing every node's address in the Ingresses' status.
fn spawn_ingress(
    layout: &Layout,
    config: &LabConfig,
    strait: &Path,
    i: usize,
) -> Result<(Child, ProcessId)> {
    let ip = config.node_ip(i);
    let published: Vec<String> = (0..config.nodes)
        .map(|j| config.node_ip(j).to_string())
        .collect();
    let mut args: Vec<String> = vec![
        "ingress".into(),
        "--kubernetes".into(),
        "--kubeconfig".into(),
    ];
    args.push(layout.ingress_kubeconfig().display().to_string());
    args.extend(
        [
            "--listen",
            &SocketAddr::from((ip, 80)).to_string(),
            "--tls-listen",
            &SocketAddr::from((ip, 443)).to_string(),
            "--publish-status-address",
            &published.join(","),
            // A lab node is a namespace on a shared machine: one event loop.
            "--workers",
            "1",
        ]
        .map(str::to_owned),
    );
    spawn_in_node(
        layout,
        config,
        strait,
        i,
        "strait ingress",
        &layout.ingress_log(i),
        &args,
    )
}

/// `strait ARGS` inside node `i`'s network namespace, in a process group
/// of its own, its output appended to `log`, with a clean environment.
fn spawn_in_node(
    layout: &Layout,
    config: &LabConfig,
    strait: &Path,
    i: usize,
    what: &str,
    log: &Path,
    args: &[String],
) -> Result<(Child, ProcessId)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(crate::error::io(format!("open the log of {what}")))?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", layout.node_ns(i)))
        .arg("--")
        .arg(strait)
        .args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(crate::error::io("log"))?)
        .stderr(log)
        .process_group(0);
    let mut child = cmd.spawn().map_err(crate::error::io(format!(
        "start {what} on {}",
        config.node_name(i)
    )))?;
    match ProcessId::of(child.id() as i32) {
        Some(id) => Ok((child, id)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::Step(format!("{what} vanished at start")))
        }
    }
}

/// Whether node `i` has a route to every other node's pod range (its
/// overlay part has read every other node's annotations).
fn overlay_complete(ns: &NetNs, config: &LabConfig, i: usize) -> bool {
    let wanted: Vec<ipnet::IpNet> = (0..config.nodes)
        .filter(|&j| j != i)
        .map(|j| config.node_pod_cidr(j).into())
        .collect();
    let routes = ns.run(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let nl = strait_linux::Netlink::connect().ok()?;
            nl.routes(false).await.ok()
        })
    });
    let Ok(Some(routes)) = routes else {
        return false;
    };
    wanted
        .iter()
        .all(|w| routes.iter().any(|r| r.destination == *w))
}

/// The status code of `GET /healthz` on the agent, asked from inside its node.
fn healthz(ns: &NetNs) -> std::result::Result<u16, String> {
    let asked = ns.run(|| -> std::result::Result<u16, String> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, HEALTH_PORT));
        let mut s = TcpStream::connect_timeout(&address, Duration::from_millis(200))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).map_err(|e| e.to_string())?;
        std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| "not an HTTP answer".to_owned())
    });
    asked.map_err(|e| e.to_string())?
}
