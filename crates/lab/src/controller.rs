//! The lab's controller: one process per lab, running until `lab down`.
//! Each round it reads the desired objects, runs the standalone controllers,
//! starts and stops pods (namespace, CNI ADD/DEL, container processes),
//! probes readiness, writes the cluster as it is, and hands it with its
//! change set to every node's agent. A round starts every 200 ms (probes,
//! supervision) or at once when the API server's store changes (kubectl,
//! `strait lab apply/delete`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use strait_linux::NetNs;
use strait_model::controllers::{self, ClusterConfig};
use strait_model::k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStatus, Pod, PodCondition, PodIP,
    PodStatus,
};
use strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use strait_model::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use strait_model::{parse_str, parse_str_with, Admission, ClusterState, Format, Object, Origin};

use crate::agents::NodeAgents;
use crate::api::LabApi;
use crate::layout::{LabConfig, LabState, Layout, PodRecord};
use crate::procs::{self, ProcessId};
use crate::{net, Error, Result};

const ROUND: Duration = Duration::from_millis(200);

/// A pod the lab runs.
struct Running {
    record: PodRecord,
    node: usize,
    /// Each container's process, with its PID and start time.
    containers: Vec<Option<(Child, ProcessId)>>,
    spec: Pod,
    probe_ok: bool,
    last_probe: Option<Instant>,
    /// Consecutive probe results, for successThreshold / failureThreshold.
    probe_streak: (u32, u32),
    started_at: Instant,
    restart_after: Option<Instant>,
    /// Set once the pod left the desired state: SIGTERM was sent, and by
    /// this time it is killed.
    terminating_until: Option<Instant>,
    /// When it was deleted (Unix seconds), as deletionTimestamp says.
    deleted_at: i64,
}

/// Run the controller of lab `name` until killed.
pub fn run_controller(name: &str, strait: &Path) -> Result<()> {
    let layout = Layout::new(name)?;
    let config = layout.read_config()?;
    let result = controller(&layout, &config, strait);
    if let Err(e) = &result {
        let mut state = layout.read_state();
        state.error = Some(e.to_string());
        if let Err(w) = Layout::write_json(&layout.state(), &state) {
            tracing::error!("cannot record the failure ({e}): {w}");
        }
    }
    result
}

/// The DNS Service's ClusterIP, as pods are told in their resolv.conf:
/// kube-system/kube-dns as allocated, else the 10th address of the first
/// service CIDR (what allocation reserves for it).
fn cluster_dns_ip(state: &ClusterState, config: &LabConfig) -> String {
    state
        .services
        .iter()
        .find(|s| {
            s.metadata.namespace.as_deref() == Some("kube-system")
                && s.metadata.name.as_deref() == Some("kube-dns")
        })
        .and_then(|s| s.spec.as_ref()?.cluster_ip.clone())
        .filter(|ip| ip.parse::<IpAddr>().is_ok())
        .or_else(|| {
            let first = config.service_cidr.split(',').next()?.trim();
            let net: ipnet::IpNet = first.parse().ok()?;
            net.hosts().nth(9).map(|ip| ip.to_string())
        })
        .unwrap_or_else(|| "10.96.0.10".into())
}

fn controller(layout: &Layout, config: &LabConfig, strait: &Path) -> Result<()> {
    let nodes = net::build(layout, config)?;
    tracing::info!(nodes = nodes.len(), backend = ?config.backend, "network built");
    let cluster_config =
        ClusterConfig::default().with_service_cidrs(std::slice::from_ref(&config.service_cidr))?;
    let mut running: BTreeMap<(String, String), Running> = BTreeMap::new();
    let mut previous: Option<ClusterState> = None;
    let mut last_written = String::new();
    // Pods that failed to start: not retried before the instant, and why.
    let mut failures: BTreeMap<(String, String), (Instant, String)> = BTreeMap::new();
    let mut admitted = Admitted::default();
    // Objects the controllers refused (a taken ClusterIP, …), logged once.
    let mut left_out: BTreeSet<String> = BTreeSet::new();
    // The API server: its store is the desired state from here on.
    let underlay = NetNs::open(format!("/run/netns/{}", layout.underlay_ns()))?;
    // The certificate also names the `kubernetes` Service's address.
    let first_service_ip = config
        .service_cidr
        .split(',')
        .next()
        .and_then(|c| c.trim().parse::<ipnet::IpNet>().ok())
        .and_then(|net| net.hosts().next())
        .map(|ip| ip.to_string());
    let mut api = LabApi::start(
        layout,
        ([127, 0, 0, 1], 0).into(),
        &underlay,
        first_service_ip.as_slice(),
        &cluster_config,
    )?;
    // Every node's network is run by `strait agent` against the API server.
    let mut agents = NodeAgents::start(layout, config, strait);
    // desired.json holds what `lab up -f` was given (and the objects every
    // cluster has): it seeds the store once. From here on the store is the
    // one source of truth: kubectl and `strait lab apply/delete` write there.
    let objects = desired_objects(layout, config, strait, &mut admitted)?;
    api.import(&objects);
    // What the agents report, for the Nodes' Ready condition.
    let mut node_problems: BTreeMap<String, crate::layout::NodeProblem> = BTreeMap::new();
    loop {
        let started = Instant::now();
        let desired = ClusterState::from_objects(
            api.desired()?
                .into_iter()
                .map(|(o, origin)| (o, Some(origin))),
        )?;
        let state0 =
            match reconcile_leaving_out(desired, previous.as_ref(), &cluster_config, &mut left_out)
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("{e}; keeping the cluster as it is");
                    api.wait_change(Instant::now() + ROUND);
                    continue;
                }
            };
        // The cluster's objects are on file before the first pod starts:
        // the DNS pod reads them at start and exits if there are none.
        if last_written.is_empty() {
            match serde_json::to_string(&state0.as_list()) {
                Ok(list) => {
                    Layout::write_atomic(&layout.cluster(), list.as_bytes())?;
                    last_written = list;
                }
                Err(e) => tracing::error!("cannot serialise the cluster: {e}"),
            }
        }
        let dns_ip = cluster_dns_ip(&state0, config);
        // Pods that should run and do not yet; pods that run and should not.
        // A pod deleted through the API keeps running through its grace
        // period: it is leaving, not wanted.
        let leaving = api.leaving_pods();
        let wanted: BTreeSet<(String, String)> = state0
            .pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| key_of(&p.metadata))
            .filter(|k| !leaving.contains(k))
            .collect();
        // Pods that left: terminating first (SIGTERM, endpoint marked
        // terminating), gone after their grace period or once they exit.
        for (key, pod) in running.iter_mut() {
            if !wanted.contains(key) && pod.terminating_until.is_none() {
                begin_termination(pod);
            }
        }
        let done: Vec<(String, String)> = running
            .iter_mut()
            .filter_map(|(k, p)| {
                let until = p.terminating_until?;
                (Instant::now() >= until || all_exited(p)).then(|| k.clone())
            })
            .collect();
        for key in done {
            if let Some(pod) = running.remove(&key) {
                stop_pod(layout, config, strait, pod);
                if leaving.contains(&key) {
                    api.pod_stopped(&key.0, &key.1);
                }
            }
        }
        // Deleted through the API and not running (never started, or
        // stopped already): nothing to wait for.
        for key in leaving.iter().filter(|k| !running.contains_key(*k)) {
            api.pod_stopped(&key.0, &key.1);
        }
        for pod in state0.pods.iter() {
            let key = key_of(&pod.metadata);
            if !wanted.contains(&key)
                || running.contains_key(&key)
                || failures
                    .get(&key)
                    .is_some_and(|(until, _)| Instant::now() < *until)
            {
                continue;
            }
            // Snapshots keep pods compact; starting one needs all of its spec.
            let started = pod
                .to_pod()
                .map_err(Error::from)
                .and_then(|pod| start_pod(layout, config, strait, &pod, &running, &dns_ip));
            match started {
                Ok(r) => {
                    tracing::info!(pod = %format!("{}/{}", key.0, key.1), node = %r.record.node, ip = %r.record.ip, "pod started");
                    failures.remove(&key);
                    running.insert(key, r);
                }
                Err(e) => {
                    tracing::error!("pod {}/{}: {e}", key.0, key.1);
                    failures.insert(
                        key,
                        (Instant::now() + Duration::from_secs(2), e.to_string()),
                    );
                }
            }
        }
        for pod in running
            .values_mut()
            .filter(|p| p.terminating_until.is_none())
        {
            supervise(&nodes, pod, strait);
        }

        // The cluster as it is: pods with their status, slices recomputed.
        let mut actual = state0.clone();
        for pod in running.values() {
            let mut p = with_status(&pod.spec, &pod.record, config);
            if pod.terminating_until.is_some() {
                // What the API server sets on delete: the EndpointSlice
                // controller then marks the endpoint terminating.
                p.metadata.deletion_timestamp = Some(
                    strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        strait_model::k8s_openapi::jiff::Timestamp::from_second(pod.deleted_at)
                            .unwrap_or_default(),
                    ),
                );
            }
            actual.insert(Object::Pod(Arc::new(p.into())));
        }
        let mut actual = controllers::reconcile(actual, None, &cluster_config).unwrap_or(state0);
        not_ready_nodes(&mut actual, &node_problems);
        api.publish(&actual);
        match serde_json::to_string(&actual.as_list()) {
            Ok(list) if list != last_written => {
                Layout::write_atomic(&layout.cluster(), list.as_bytes())?;
                last_written = list;
            }
            Ok(_) => {}
            // The file keeps the last good cluster; never an empty one.
            Err(e) => tracing::error!("cannot serialise the cluster: {e}"),
        }
        node_problems = agents
            .supervise(layout, config, strait, &nodes)
            .into_iter()
            .collect();
        let state = LabState {
            pods: running
                .values()
                .map(|r| {
                    (
                        format!("{}/{}", r.record.namespace, r.record.name),
                        r.record.clone(),
                    )
                })
                .collect(),
            // Ready: every pod, and every node's agent has synced its rules.
            ready: running.values().all(|r| r.record.ready) && agents.all_synced(),
            error: None,
            problems: failures
                .iter()
                .filter(|(k, _)| wanted.contains(*k))
                .map(|((ns, n), (_, m))| (format!("{ns}/{n}"), m.clone()))
                .collect(),
            node_problems: node_problems.clone(),
        };
        if let Err(e) = Layout::write_json(&layout.state(), &state) {
            tracing::error!("{e}; state.json keeps the previous round");
        }
        previous = Some(actual);
        // Probes and pod supervision keep a round; a change of the desired
        // objects starts the next one at once.
        api.wait_change(started + ROUND);
    }
}

/// The controllers over `desired`; an object they refuse (a ClusterIP taken
/// or outside the service CIDR, no NodePort left) is left out, logged once,
/// and the rest go on: one bad object stops no other.
fn reconcile_leaving_out(
    mut desired: ClusterState,
    previous: Option<&ClusterState>,
    config: &ClusterConfig,
    logged: &mut BTreeSet<String>,
) -> Result<ClusterState> {
    let mut refused = BTreeSet::new();
    loop {
        match controllers::reconcile(desired.clone(), previous, config) {
            Ok(state) => {
                logged.retain(|m| refused.contains(m));
                return Ok(state);
            }
            Err(e) => {
                // Only an error that names one object can leave it out.
                let named = match &e {
                    strait_model::Error::Object { object, .. } => desired
                        .objects()
                        .map(|o| strait_model::ObjectKey::of(&o))
                        .find(|k| k.to_string() == *object),
                    _ => None,
                };
                let Some(key) = named else {
                    return Err(e.into());
                };
                let message = e.to_string();
                if logged.insert(message.clone()) {
                    tracing::error!("{message}; left out, the others go on");
                }
                refused.insert(message);
                desired.remove(&key);
            }
        }
    }
}

/// A node whose agent does not run or sync is not Ready, with the reason,
/// as the kubelet reports a node it cannot run: `kubectl get nodes` and
/// `strait lab get nodes` show it.
fn not_ready_nodes(
    state: &mut ClusterState,
    problems: &BTreeMap<String, crate::layout::NodeProblem>,
) {
    for (name, problem) in problems {
        let Some(node) = state.nodes.get("", name) else {
            continue;
        };
        let mut node = (**node).clone();
        let status = node.status.get_or_insert_with(Default::default);
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        conditions.retain(|c| c.type_ != "Ready");
        conditions.push(strait_model::k8s_openapi::api::core::v1::NodeCondition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some("StraitAgentNotReady".into()),
            message: Some(problem.message.clone()),
            ..Default::default()
        });
        state.insert(Object::Node(Arc::new(node)));
    }
}

fn key_of(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The desired objects admitted at the last round, and the refusals said.
#[derive(Default)]
struct Admitted {
    objects: Vec<(Object, Origin)>,
    refusals: Vec<String>,
}

/// The desired objects plus what every cluster has: the Nodes and the
/// cluster DNS (strait's, as pods behind kube-system/kube-dns). `strait lab
/// apply` writes only admitted objects, but the file may be edited by hand
/// or read by a stricter strait: an object refused now keeps the version
/// `admitted` before, and each refusal is logged once.
fn desired_objects(
    layout: &Layout,
    config: &LabConfig,
    strait: &Path,
    admitted: &mut Admitted,
) -> Result<Vec<(Object, Origin)>> {
    let text = std::fs::read_to_string(layout.desired())
        .unwrap_or_else(|_| r#"{"apiVersion":"v1","kind":"List","items":[]}"#.into());
    let mut loaded = parse_str_with("desired.json", &text, Format::Json, Admission::PerObject)?;
    loaded.keep_refused(&admitted.objects);
    let refusals: Vec<String> = loaded.refused.iter().map(|r| r.error.to_string()).collect();
    for refusal in &refusals {
        if !admitted.refusals.contains(refusal) {
            tracing::error!("{refusal}; refused, keeping what was admitted before");
        }
    }
    admitted.refusals = refusals;
    admitted.objects.clone_from(&loaded.objects);
    let mut addons = String::new();
    for i in 0..config.nodes {
        addons.push_str(&format!(
            r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{}","labels":{{"kubernetes.io/hostname":"{}"}}}},"spec":{{"podCIDR":"{}","podCIDRs":["{}"]}},"status":{{"addresses":[{{"type":"InternalIP","address":"{}"}},{{"type":"Hostname","address":"{}"}}],"conditions":[{{"type":"Ready","status":"True","reason":"StraitLab","message":"the lab node's namespace is up"}}],"nodeInfo":{{"kubeletVersion":"v1.34.0-strait","kubeProxyVersion":"","containerRuntimeVersion":"strait-lab://{}","operatingSystem":"linux","architecture":"amd64","osImage":"strait lab","kernelVersion":"","machineID":"","systemUUID":"","bootID":""}}}}}}"#,
            config.node_name(i),
            config.node_name(i),
            config.node_pod_cidr(i),
            config.node_pod_cidr(i),
            config.node_ip(i),
            config.node_name(i),
            env!("CARGO_PKG_VERSION"),
        ));
        addons.push('\n');
    }
    let has = |kind: &str, ns: &str, name: &str| {
        loaded.objects.iter().any(|(o, _)| {
            o.kind().as_str() == kind
                && o.metadata().namespace.as_deref() == Some(ns)
                && o.metadata().name.as_deref() == Some(name)
        })
    };
    // What kube-apiserver keeps for `default/kubernetes`: its own address,
    // so that pods reach the API at the Service (10.96.0.1:443).
    if !has("Endpoints", "default", "kubernetes") {
        let (ip, port) = crate::api::CONTROL_PLANE;
        addons.push_str(&format!(
            r#"{{"apiVersion":"v1","kind":"Endpoints","metadata":{{"name":"kubernetes","namespace":"default","labels":{{"endpointslice.kubernetes.io/skip-mirror":"true"}}}},"subsets":[{{"addresses":[{{"ip":"{}"}}],"ports":[{{"name":"https","port":{port},"protocol":"TCP"}}]}}]}}"#,
            std::net::Ipv4Addr::from(ip)
        ));
        addons.push('\n');
        addons.push_str(&format!(
            r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{{"name":"kubernetes","namespace":"default","labels":{{"kubernetes.io/service-name":"kubernetes"}}}},"addressType":"IPv4","endpoints":[{{"addresses":["{}"],"conditions":{{"ready":true}}}}],"ports":[{{"name":"https","port":{port},"protocol":"TCP"}}]}}"#,
            std::net::Ipv4Addr::from(ip)
        ));
        addons.push('\n');
    }
    if !has("Service", "kube-system", "kube-dns") {
        addons.push_str(r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"kube-dns","namespace":"kube-system","labels":{"k8s-app":"kube-dns"}},"spec":{"selector":{"k8s-app":"kube-dns"},"ports":[{"name":"dns","port":53,"protocol":"UDP"},{"name":"dns-tcp","port":53,"protocol":"TCP"}]}}"#);
        addons.push('\n');
    }
    if !has("Deployment", "kube-system", "strait-dns") {
        let kubeconfig = layout.dns_kubeconfig().display().to_string();
        let exe = strait.display().to_string();
        addons.push_str(&format!(
            r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"strait-dns","namespace":"kube-system"}},"spec":{{"replicas":1,"selector":{{"matchLabels":{{"k8s-app":"kube-dns"}}}},"template":{{"metadata":{{"labels":{{"k8s-app":"kube-dns"}}}},"spec":{{"containers":[{{"name":"dns","image":"strait","command":["{exe}","dns","--kubernetes","--kubeconfig","{kubeconfig}","--listen","0.0.0.0:53","--metrics-address","127.0.0.1:9153","--upstream","127.0.0.1:9","--upstream-timeout-ms","200"],"ports":[{{"name":"dns","containerPort":53,"protocol":"UDP"}},{{"name":"dns-tcp","containerPort":53,"protocol":"TCP"}}],"readinessProbe":{{"tcpSocket":{{"port":53}},"periodSeconds":1}}}}]}}}}}}}}"#
        ));
        addons.push('\n');
    }
    // The class of the nodes' Ingress controllers, the lab's default (an
    // Ingress without spec.ingressClassName is served, as on a cluster
    // whose admin marked one class default).
    let has_class = loaded.objects.iter().any(|(o, _)| {
        o.kind().as_str() == "IngressClass" && o.metadata().name.as_deref() == Some("strait")
    });
    if !has_class {
        // The controller name `strait ingress` serves by default
        // (strait_ingress::CONTROLLER).
        addons.push_str(r#"{"apiVersion":"networking.k8s.io/v1","kind":"IngressClass","metadata":{"name":"strait","annotations":{"ingressclass.kubernetes.io/is-default-class":"true"}},"spec":{"controller":"strait.dev/ingress"}}"#);
        addons.push('\n');
    }
    // The GatewayClass of the nodes' Gateway API controllers, as
    // deploy/45-gatewayclass.yaml makes it on a cluster.
    let has_gateway_class = loaded.objects.iter().any(|(o, _)| {
        o.kind().as_str() == "GatewayClass" && o.metadata().name.as_deref() == Some("strait")
    });
    if !has_gateway_class {
        // strait_ingress::GATEWAY_CONTROLLER.
        addons.push_str(r#"{"apiVersion":"gateway.networking.k8s.io/v1","kind":"GatewayClass","metadata":{"name":"strait"},"spec":{"controllerName":"strait.dev/gateway-controller"}}"#);
        addons.push('\n');
    }
    let extra = parse_str("lab addons", &addons, Format::Json)?;
    loaded.objects.extend(extra.objects);
    Ok(loaded.objects)
}

/// The node's network configuration, with the pod's `hostPort`s as
/// runtimeConfig.portMappings (the way the kubelet passes them).
fn cni_conf(layout: &Layout, config: &LabConfig, node: usize, pod: &Pod) -> String {
    let mappings: Vec<serde_json::Value> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| {
            serde_json::json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                "hostIP": p.host_ip.clone().unwrap_or_default(),
            })
        })
        .collect();
    serde_json::json!({
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": mappings},
        "cniVersion": "1.1.0",
        "name": "strait-lab",
        "type": "strait",
        "bridge": "cni0",
        "isGateway": true,
        "isDefaultGateway": true,
        "ipMasq": false,
        "hairpinMode": true,
        // Pods get the overlay's MTU, as flannel's CNI config says: a full
        // 1500-byte packet would not fit in flannel.1 (1450) with DF set.
        "mtu": config.pod_mtu(),
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": config.node_pod_cidr(node).to_string()}]],
            "dataDir": layout.ipam().join(format!("node{}", node + 1)).display().to_string(),
        }
    })
    .to_string()
}

/// Call the CNI plugin (strait itself) as a runtime would, in the node.
fn cni(
    layout: &Layout,
    config: &LabConfig,
    strait: &Path,
    node: usize,
    pod: &Pod,
    command: &str,
) -> Result<serde_json::Value> {
    let (namespace, name) = key_of(&pod.metadata);
    // The container ID is the pod's key: nothing from the manifest is
    // handed to the plugin as an identifier.
    let id = crate::layout::pod_key(&namespace, &name);
    let netns = format!("/run/netns/{}", layout.pod_ns(&namespace, &name));
    let conf = cni_conf(layout, config, node, pod);
    let node_ns = NetNs::open(format!("/run/netns/{}", layout.node_ns(node)))?;
    let call = strait_cni::Call {
        command,
        container_id: &id,
        netns: &netns,
        ifname: "eth0",
        conf: &conf,
        env: &[],
    };
    let reply = strait_cni::invoke(strait, &node_ns, &call)
        .map_err(crate::error::io("run the CNI plugin"))?;
    if reply.code == 0 {
        Ok(reply.json)
    } else {
        Err(Error::Lab {
            lab: layout.name.clone(),
            message: format!(
                "CNI {command}: {}",
                reply.json["msg"].as_str().unwrap_or("failed")
            ),
        })
    }
}

fn start_pod(
    layout: &Layout,
    config: &LabConfig,
    strait: &Path,
    pod: &Pod,
    running: &BTreeMap<(String, String), Running>,
    dns_ip: &str,
) -> Result<Running> {
    let (namespace, name) = key_of(&pod.metadata);
    let spec = pod.spec.clone().unwrap_or_default();
    // Where: the node it names, else the one with the fewest pods.
    let node = spec
        .node_name
        .as_deref()
        .and_then(|n| (0..config.nodes).find(|i| config.node_name(*i) == n))
        .unwrap_or_else(|| {
            (0..config.nodes)
                .min_by_key(|i| running.values().filter(|r| r.node == *i).count())
                .unwrap_or(0)
        });
    let netns = layout.pod_ns(&namespace, &name);
    let _ = NetNs::delete(&netns);
    NetNs::create(&netns)?;
    let result = match cni(layout, config, strait, node, pod, "ADD") {
        Ok(r) => r,
        Err(e) => {
            let _ = NetNs::delete(&netns);
            return Err(e);
        }
    };
    let ip = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let workdir = layout.pod_dir(&namespace, &name);
    std::fs::create_dir_all(&workdir).map_err(crate::error::io("create the pod's directory"))?;
    // The pod's resolv.conf, as the kubelet writes it for dnsPolicy
    // ClusterFirst: the DNS Service's ClusterIP, whatever the service CIDR.
    let resolv = format!("search {namespace}.svc.cluster.local svc.cluster.local cluster.local\nnameserver {dns_ip}\noptions ndots:5\n");
    std::fs::write(workdir.join("resolv.conf"), resolv)
        .map_err(crate::error::io("write resolv.conf"))?;
    let mut running = Running {
        record: PodRecord {
            namespace,
            name,
            node: config.node_name(node),
            netns,
            ip,
            pid: None,
            ready: false,
            restarts: 0,
            phase: "Running".into(),
            workdir: workdir.display().to_string(),
            processes: Vec::new(),
            message: None,
        },
        node,
        containers: spec.containers.iter().map(|_| None).collect(),
        spec: pod.clone(),
        probe_ok: false,
        last_probe: None,
        probe_streak: (0, 0),
        started_at: Instant::now(),
        restart_after: None,
        terminating_until: None,
        deleted_at: 0,
    };
    for i in 0..running.containers.len() {
        let child = spawn_container(&running.record, &spec.containers[i], &spec, strait);
        match child {
            Ok(c) => {
                if i == 0 {
                    running.record.pid = Some(c.1.pid);
                }
                running.containers[i] = Some(c);
            }
            Err(e) => {
                tracing::error!(
                    "pod {}/{} container {}: {e}",
                    running.record.namespace,
                    running.record.name,
                    spec.containers[i].name
                );
                running.record.message = Some(e.to_string());
            }
        }
    }
    record_processes(&mut running);
    Ok(running)
}

/// A container: a host process in the pod's network namespace, in a UTS
/// namespace of its own (hostname = pod name or spec.hostname) and a mount
/// namespace where /etc/resolv.conf is the pod's. `nsenter` and `unshare`
/// exec in place, so the PID is the container's own; its process group is
/// what the lab signals, and it is recorded with its start time. A command
/// that is exactly `strait` runs the lab's own binary (as the lab's DNS
/// pods do), so manifests can run `strait lab serve` wherever strait is
/// installed.
fn spawn_container(
    pod: &PodRecord,
    c: &Container,
    spec: &strait_model::k8s_openapi::api::core::v1::PodSpec,
    strait: &Path,
) -> Result<(Child, ProcessId)> {
    let mut argv: Vec<String> = c.command.clone().unwrap_or_default();
    argv.extend(c.args.clone().unwrap_or_default());
    if argv.first().is_some_and(|a| a == "strait") {
        argv[0] = strait.display().to_string();
    }
    if argv.is_empty() {
        return Err(Error::Step(format!(
            "container {}: images are not run in the lab; give a command",
            c.name
        )));
    }
    let hostname: String = spec
        .hostname
        .clone()
        .unwrap_or_else(|| pod.name.clone())
        .chars()
        .take(63)
        .collect();
    // The log's file name comes from the container's name: admission
    // makes it a DNS label, and the lab checks again rather than trust
    // that a `/` or `..` never reaches a path.
    if strait_model::validate_dns_label(&c.name).is_err() {
        return Err(Error::Step(format!(
            "container {:?}: the name is not a DNS label",
            c.name
        )));
    }
    let workdir = PathBuf::from(&pod.workdir);
    // Appended, not truncated: a container that exits and is restarted
    // keeps what it said before (kubectl logs --previous).
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(workdir.join(format!("{}.log", c.name)))
        .map_err(crate::error::io("open the container log"))?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", pod.netns))
        .args(["--", "unshare", "--mount", "--uts", "--", "sh", "-c", r#"mount --bind "$1" /etc/resolv.conf && hostname "$2" && cd "$3" && shift 3 && exec "$@""#, "strait-pod"])
        .arg(workdir.join("resolv.conf"))
        .arg(&hostname)
        .arg(&workdir)
        .args(&argv)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", &workdir)
        .env("HOSTNAME", &hostname)
        .env("POD_NAME", &pod.name)
        .env("POD_NAMESPACE", &pod.namespace)
        .env("POD_IP", &pod.ip)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(crate::error::io("log"))?)
        .stderr(log)
        .process_group(0);
    for e in c.env.iter().flatten() {
        if let Some(v) = &e.value {
            cmd.env(&e.name, v);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(crate::error::io(format!("start container {}", c.name)))?;
    // Not reaped yet, so its /proc entry is there even if it already exited.
    match ProcessId::of(child.id() as i32) {
        Some(id) => Ok((child, id)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::Step(format!(
                "container {}: its process vanished at start",
                c.name
            )))
        }
    }
}

/// What `lab down` reads: every container process running now.
fn record_processes(pod: &mut Running) {
    pod.record.processes = pod.containers.iter().flatten().map(|(_, id)| *id).collect();
}

/// Restart what exited (restartPolicy), probe readiness.
fn supervise(nodes: &[NetNs], pod: &mut Running, strait: &Path) {
    let spec = pod.spec.spec.clone().unwrap_or_default();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let mut all_running = true;
    for i in 0..pod.containers.len() {
        let exited = match pod.containers[i].as_mut().map(|(c, _)| c.try_wait()) {
            Some(Ok(Some(status))) => Some(status.success()),
            Some(Ok(None)) => None,
            _ => Some(false),
        };
        let Some(success) = exited else { continue };
        all_running = false;
        let restart = match policy.as_str() {
            "Never" => false,
            "OnFailure" => !success,
            _ => true,
        };
        if restart {
            let due = *pod
                .restart_after
                .get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
            if Instant::now() >= due {
                pod.restart_after = None;
                pod.record.restarts += 1;
                // A restarted container starts over, readiness included.
                pod.started_at = Instant::now();
                pod.probe_ok = false;
                pod.probe_streak = (0, 0);
                match spawn_container(&pod.record, &spec.containers[i], &spec, strait) {
                    Ok(c) => {
                        if i == 0 {
                            pod.record.pid = Some(c.1.pid);
                        }
                        pod.containers[i] = Some(c);
                    }
                    Err(e) => {
                        tracing::error!(
                            "pod {}/{} container {}: restart: {e}",
                            pod.record.namespace,
                            pod.record.name,
                            spec.containers[i].name
                        );
                    }
                }
                record_processes(pod);
            }
        } else {
            pod.record.phase = if success {
                "Succeeded".into()
            } else {
                "Failed".into()
            };
        }
    }
    // Readiness: the first container's probe, or running is ready.
    let probe = spec
        .containers
        .first()
        .and_then(|c| c.readiness_probe.clone());
    let ready = match probe {
        None => all_running,
        Some(p) => {
            // As the kubelet does: not before initialDelaySeconds, then every
            // periodSeconds; Ready after successThreshold successes in a row,
            // not Ready after failureThreshold failures in a row.
            let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
            let delay = Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64);
            let due = pod.started_at.elapsed() >= delay
                && pod.last_probe.is_none_or(|t| t.elapsed() >= period);
            if all_running && due {
                pod.last_probe = Some(Instant::now());
                if probe_once(&nodes[pod.node], &pod.record, &spec, &p) {
                    pod.probe_streak = (pod.probe_streak.0 + 1, 0);
                    if pod.probe_streak.0 >= p.success_threshold.unwrap_or(1).max(1) as u32 {
                        pod.probe_ok = true;
                    }
                } else {
                    pod.probe_streak = (0, pod.probe_streak.1 + 1);
                    if pod.probe_streak.1 >= p.failure_threshold.unwrap_or(3).max(1) as u32 {
                        pod.probe_ok = false;
                    }
                }
            }
            all_running && pod.probe_ok
        }
    };
    pod.record.ready = ready;
}

fn probe_once(
    node: &NetNs,
    pod: &PodRecord,
    spec: &strait_model::k8s_openapi::api::core::v1::PodSpec,
    probe: &strait_model::k8s_openapi::api::core::v1::Probe,
) -> bool {
    let port_of = |p: &IntOrString| -> Option<u16> {
        match p {
            IntOrString::Int(n) => u16::try_from(*n).ok(),
            IntOrString::String(name) => spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| cp.name.as_deref() == Some(name))
                .and_then(|cp| u16::try_from(cp.container_port).ok()),
        }
    };
    let Ok(ip) = pod.ip.parse::<IpAddr>() else {
        return false;
    };
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = port_of(&tcp.port) else {
            return false;
        };
        let addr = SocketAddr::new(ip, port);
        return node
            .run(move || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            })
            .unwrap_or(false);
    }
    if let Some(http) = &probe.http_get {
        let Some(port) = port_of(&http.port) else {
            return false;
        };
        let addr = SocketAddr::new(ip, port);
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        return node
            .run(move || {
                use std::io::Read;
                let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: strait-lab-probe\r\n\r\n").as_bytes()).is_err() {
                    return false;
                }
                let mut head = [0u8; 12];
                if s.read_exact(&mut head).is_err() {
                    return false;
                }
                let code: u16 = String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0);
                (200..400).contains(&code)
            })
            .unwrap_or(false);
    }
    if let Some(exec) = &probe.exec {
        let argv = exec.command.clone().unwrap_or_default();
        if argv.is_empty() {
            return false;
        }
        return Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", pod.netns))
            .arg("--")
            .args(&argv)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    }
    true
}

/// Every container has exited (and is reaped, so no zombie looks alive).
fn all_exited(pod: &mut Running) -> bool {
    pod.containers.iter_mut().all(|c| {
        c.as_mut()
            .is_none_or(|(c, _)| !matches!(c.try_wait(), Ok(None)))
    })
}

/// SIGTERM the containers' process groups; the pod has its grace period.
fn begin_termination(pod: &mut Running) {
    let grace = pod
        .spec
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
        .clamp(0, 300) as u64;
    for (c, _) in pod.containers.iter_mut().flatten() {
        let _ = killpg(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
    }
    pod.record.ready = false;
    pod.record.phase = "Terminating".into();
    pod.terminating_until = Some(Instant::now() + Duration::from_secs(grace));
    pod.deleted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
}

/// SIGKILL what is left, CNI DEL, drop the namespace and the files.
fn stop_pod(layout: &Layout, config: &LabConfig, strait: &Path, mut pod: Running) {
    for (c, _) in pod.containers.iter_mut().flatten() {
        let _ = killpg(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
        let _ = c.wait();
    }
    // What left the containers' process groups still lives in the pod's
    // namespace (and would keep it alive): end it too.
    if let Some(ino) = procs::netns_inode(Path::new(&format!("/run/netns/{}", pod.record.netns))) {
        let left = procs::kill_in_netns(&BTreeSet::from([ino]), Duration::from_secs(2));
        if !left.is_empty() {
            tracing::warn!(pod = %format!("{}/{}", pod.record.namespace, pod.record.name), ?left, "processes survive in the pod's namespace");
        }
    }
    let id = format!("{}/{}", pod.record.namespace, pod.record.name);
    if let Err(e) = cni(layout, config, strait, pod.node, &pod.spec, "DEL") {
        tracing::warn!("pod {id}: {e}");
    }
    let _ = NetNs::delete(&pod.record.netns);
    let _ = std::fs::remove_dir_all(&pod.record.workdir);
    tracing::info!(pod = %id, "pod stopped");
}

fn with_status(pod: &Pod, record: &PodRecord, config: &LabConfig) -> Pod {
    let mut pod = pod.clone();
    let node_ip = (0..config.nodes)
        .find(|i| config.node_name(*i) == record.node)
        .map(|i| config.node_ip(i).to_string());
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(record.node.clone());
    }
    let ready = if record.ready { "True" } else { "False" };
    pod.status = Some(PodStatus {
        phase: Some(record.phase.clone()),
        pod_ip: Some(record.ip.clone()),
        pod_ips: Some(vec![PodIP {
            ip: record.ip.clone(),
        }]),
        host_ip: node_ip,
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: ready.into(),
            ..Default::default()
        }]),
        // What `kubectl get pods` reads READY and RESTARTS from.
        container_statuses: pod.spec.as_ref().map(|spec| {
            spec.containers
                .iter()
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    image_id: String::new(),
                    ready: record.ready,
                    restart_count: record.restarts as i32,
                    started: Some(record.phase == "Running"),
                    state: (record.phase == "Running").then(|| ContainerState {
                        running: Some(ContainerStateRunning::default()),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    });
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Backend;

    fn config(name: &str) -> LabConfig {
        LabConfig {
            name: name.into(),
            nodes: 1,
            backend: Backend::Vxlan,
            pod_cidr: "10.244.0.0/16".parse().unwrap(),
            service_cidr: "10.100.0.0/16".into(),
        }
    }

    #[test]
    fn pods_are_told_the_dns_service_of_the_service_cidr() {
        let config = config("dnsip");
        // No kube-dns in the state: the address allocation keeps for it.
        assert_eq!(
            cluster_dns_ip(&ClusterState::default(), &config),
            "10.100.0.10"
        );
        let mut c2 = config.clone();
        c2.service_cidr = "10.96.0.0/12,fd00::/108".into();
        assert_eq!(cluster_dns_ip(&ClusterState::default(), &c2), "10.96.0.10");
    }

    #[test]
    fn pod_mtu_is_the_overlays() {
        let mut c = config("mtu");
        assert_eq!(c.pod_mtu(), 1450);
        let conf: serde_json::Value = serde_json::from_str(&cni_conf(
            &Layout::new("mtu").unwrap(),
            &c,
            0,
            &Pod::default(),
        ))
        .unwrap();
        assert_eq!(conf["mtu"], 1450);
        c.backend = Backend::HostGw;
        assert_eq!(c.pod_mtu(), 1500);
    }
}
