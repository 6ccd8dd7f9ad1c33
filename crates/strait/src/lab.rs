//! `strait lab …`: the commands around a lab's controller process.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strait_lab::{Backend, LabConfig, LabState, Layout};
use strait_model::{ClusterState, Kind, Object, ObjectKey};

use crate::cli::{
    LabApplyArgs, LabBackend, LabCommand, LabDeleteArgs, LabExecArgs, LabGetArgs, LabLogsArgs,
    LabUpArgs,
};
use crate::error::Error;
use crate::lab_client::{api_resource, LabClient, Refusal, LAST_APPLIED};

pub(crate) fn lab_error(lab: &str, message: impl Into<String>) -> Error {
    Error::Lab(strait_lab::Error::Lab {
        lab: lab.to_owned(),
        message: message.into(),
    })
}

pub(crate) fn need_root(lab: &str) -> Result<(), Error> {
    if strait_linux::is_root() {
        Ok(())
    } else {
        Err(lab_error(
            lab,
            "the lab needs root: it creates network namespaces (run it with sudo)",
        ))
    }
}

pub fn run(command: LabCommand) -> Result<(), Error> {
    match command {
        LabCommand::Up(args) => up(&args),
        LabCommand::Apply(args) => apply(&args),
        LabCommand::Delete(args) => delete(&args),
        LabCommand::Get(args) => get(&args),
        LabCommand::Exec(args) => exec(&args).map(|_| ()),
        LabCommand::Logs(args) => logs(&args),
        LabCommand::Trace(args) => trace(&args),
        LabCommand::Policy(crate::cli::LabPolicyCommand::Matrix(args)) => {
            crate::lab_matrix::matrix(&args)
        }
        LabCommand::Serve(args) => crate::lab_matrix::serve(&args),
        LabCommand::Kubeconfig(args) => kubeconfig(&args.name),
        LabCommand::Down(args) => down(&args.name),
        LabCommand::Controller(args) => {
            let exe = std::env::current_exe().map_err(|e| {
                lab_error(&args.name, format!("cannot find strait's own path: {e}"))
            })?;
            Ok(strait_lab::run_controller(&args.name, &exe)?)
        }
    }
}

pub(crate) fn running(name: &str) -> Result<Layout, Error> {
    let layout = Layout::new(name)?;
    if !layout.config().exists() {
        return Err(lab_error(
            name,
            "no such lab (start one with `strait lab up`)",
        ));
    }
    Ok(layout)
}

/// Objects of manifests, admitted (defaults, validation) as the API server would.
fn read_objects(files: &[String], recursive: bool) -> Result<Vec<Object>, Error> {
    Ok(crate::state::read_objects(files, recursive)?
        .into_iter()
        .map(|(o, _)| o)
        .collect())
}

fn write_desired(layout: &Layout, objects: BTreeMap<ObjectKey, Object>) -> Result<(), Error> {
    let state = ClusterState::from_objects(objects.into_values().map(|o| (o, None)))?;
    let json = serde_json::to_vec(&state.as_list()).map_err(|e| Error::Output(e.to_string()))?;
    Ok(Layout::write_atomic(&layout.desired(), &json)?)
}

fn up(args: &LabUpArgs) -> Result<(), Error> {
    let name = &args.lab.name;
    let layout = Layout::new(name)?;
    need_root(name)?;
    if layout.controller_pid().is_some() {
        return Err(lab_error(
            name,
            "already running (strait lab down first, or pick another --name)",
        ));
    }
    if !(1..=50).contains(&args.nodes) {
        return Err(lab_error(name, "--nodes must be between 1 and 50"));
    }
    let pod_cidr: ipnet::Ipv4Net = args.pod_cidr.parse().map_err(|_| {
        lab_error(
            name,
            format!("--pod-cidr {:?} is not an IPv4 CIDR", args.pod_cidr),
        )
    })?;
    if pod_cidr.prefix_len() > 16 {
        return Err(lab_error(
            name,
            "--pod-cidr must be a /16 or larger: each node gets a /24",
        ));
    }
    let objects = read_objects(&args.files, args.recursive)?;
    // A lab that died leaves things behind: clear them first.
    down(name)?;
    // Another lab going down may remove the empty /run/strait between the
    // two steps of creating ours: try again then.
    let mut created = std::fs::create_dir_all(&layout.dir);
    for _ in 0..3 {
        if created.is_ok() {
            break;
        }
        created = std::fs::create_dir_all(&layout.dir);
    }
    created.map_err(|e| lab_error(name, format!("create {}: {e}", layout.dir.display())))?;
    let config = LabConfig {
        name: name.clone(),
        nodes: args.nodes,
        backend: match args.backend {
            LabBackend::Vxlan => Backend::Vxlan,
            LabBackend::HostGw => Backend::HostGw,
        },
        pod_cidr: pod_cidr.trunc(),
        service_cidr: args.service_cidr.clone(),
    };
    Layout::write_json(&layout.config(), &config)?;
    write_desired(
        &layout,
        objects
            .into_iter()
            .map(|o| (ObjectKey::of(&o), o))
            .collect(),
    )?;

    let exe = std::env::current_exe()
        .map_err(|e| lab_error(name, format!("cannot find strait's own path: {e}")))?;
    let log = std::fs::File::create(layout.log())
        .map_err(|e| lab_error(name, format!("create the log: {e}")))?;
    let child = Command::new(&exe)
        .args(["lab", "controller", "--name", name])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| lab_error(name, e.to_string()))?,
        )
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| lab_error(name, format!("cannot start the controller: {e}")))?;
    let controller = strait_lab::ProcessId::of(child.id() as i32)
        .ok_or_else(|| lab_error(name, "the controller exited at once"))?;
    layout.write_controller(controller)?;
    wait_ready(&layout, Duration::from_secs(args.timeout))?;
    summary(&layout, &config);
    Ok(())
}

/// Until the controller reports every pod of the cluster Ready.
fn wait_ready(layout: &Layout, timeout: Duration) -> Result<(), Error> {
    let started = Instant::now();
    loop {
        let state = layout.read_state();
        if let Some(e) = &state.error {
            return Err(lab_error(
                &layout.name,
                format!(
                    "the controller failed: {e} (log: {})",
                    layout.log().display()
                ),
            ));
        }
        // A pod that cannot start will not become Ready, a node without a
        // Service proxy will not get one: say why at once.
        let problems: Vec<String> = state
            .problems
            .iter()
            .map(|(k, m)| format!("{k}: {m}"))
            .chain(
                state
                    .node_problems
                    .iter()
                    .filter(|(_, p)| p.no_proxy)
                    .map(|(node, p)| format!("{node}: {}", p.message)),
            )
            .chain(
                state
                    .pods
                    .iter()
                    .filter_map(|(k, p)| p.message.as_ref().map(|m| format!("{k}: {m}"))),
            )
            .collect();
        if !problems.is_empty() {
            return Err(lab_error(
                &layout.name,
                format!(
                    "{} (the lab keeps running; strait lab down to remove it)",
                    problems.join("; ")
                ),
            ));
        }
        let wanted = cluster(layout).map(|c| c.pods.len()).unwrap_or(usize::MAX);
        if state.ready && wanted != usize::MAX && state.pods.len() == wanted && wanted > 0 {
            return Ok(());
        }
        if layout.controller_pid().is_none() {
            return Err(lab_error(
                &layout.name,
                format!("the controller exited (log: {})", layout.log().display()),
            ));
        }
        if started.elapsed() > timeout {
            let waiting: Vec<String> = state
                .pods
                .iter()
                .filter(|(_, p)| !p.ready)
                .map(|(k, _)| k.clone())
                .collect();
            return Err(lab_error(
                &layout.name,
                format!(
                    "pods not Ready after {}s: {} (the lab keeps running; see strait lab get -A)",
                    timeout.as_secs(),
                    waiting.join(", ")
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `lab trace`: the lab's current state, nodes, backend and tables.
/// The admin kubeconfig the controller wrote when its API server started.
fn kubeconfig(name: &str) -> Result<(), Error> {
    let layout = running(name)?;
    let text = std::fs::read_to_string(layout.kubeconfig()).map_err(|e| {
        lab_error(
            name,
            format!("no kubeconfig yet ({}): {e}", layout.kubeconfig().display()),
        )
    })?;
    print!("{text}");
    Ok(())
}

fn trace(args: &crate::cli::LabTraceArgs) -> Result<(), Error> {
    let layout = running(&args.lab.name)?;
    let config = layout.read_config()?;
    let state =
        cluster(&layout).ok_or_else(|| lab_error(&args.lab.name, "no cluster state yet"))?;
    let topology = crate::trace::Topology {
        nodes: crate::trace::Topology::from_state(&state),
        cluster_cidrs: vec![config.pod_cidr.into()],
        service_cidrs: config.service_cidr.parse().into_iter().collect(),
        backend: match config.backend {
            Backend::Vxlan => crate::trace::Backend::Vxlan,
            Backend::HostGw => crate::trace::Backend::HostGw,
        },
        extra_tables: vec![strait_lab::masquerade_table(config.pod_cidr)?],
    };
    let node = args.node.clone().or_else(|| Some(config.node_name(0)));
    crate::trace::print(
        &state,
        &topology,
        "cluster.local",
        &args.packet,
        node.as_deref(),
    )
}

fn cluster(layout: &Layout) -> Option<ClusterState> {
    let text = std::fs::read_to_string(layout.cluster()).ok()?;
    let loaded = strait_model::parse_str("cluster.json", &text, strait_model::Format::Json).ok()?;
    ClusterState::from_objects(loaded.objects.into_iter().map(|(o, _)| (o, None))).ok()
}

fn summary(layout: &Layout, config: &LabConfig) {
    let backend = match config.backend {
        Backend::Vxlan => "vxlan",
        Backend::HostGw => "host-gw",
    };
    println!(
        "lab {} is up ({backend}, controller PID {}, files in {})",
        layout.name,
        layout.controller_pid().unwrap_or(0),
        layout.dir.display()
    );
    println!("\nNODE      IP            POD CIDR");
    for i in 0..config.nodes {
        println!(
            "{:<9} {:<13} {}",
            config.node_name(i),
            config.node_ip(i),
            config.node_pod_cidr(i)
        );
    }
    let state = layout.read_state();
    println!("\nNAMESPACE     POD                                   NODE      IP");
    for p in state.pods.values() {
        println!("{:<13} {:<37} {:<9} {}", p.namespace, p.name, p.node, p.ip);
    }
    if let Some(c) = cluster(layout) {
        println!("\nNAMESPACE     SERVICE              CLUSTER-IP       PORTS");
        for s in c.services.iter() {
            let spec = s.spec.clone().unwrap_or_default();
            println!(
                "{:<13} {:<20} {:<16} {}",
                s.metadata.namespace.as_deref().unwrap_or_default(),
                s.metadata.name.as_deref().unwrap_or_default(),
                spec.cluster_ip.clone().unwrap_or_default(),
                ports(&spec)
            );
        }
    }
}

fn ports(spec: &strait_model::k8s_openapi::api::core::v1::ServiceSpec) -> String {
    let list: Vec<String> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| match p.node_port {
            Some(np) => format!(
                "{}:{}/{}",
                p.port,
                np,
                p.protocol.as_deref().unwrap_or("TCP")
            ),
            None => format!("{}/{}", p.port, p.protocol.as_deref().unwrap_or("TCP")),
        })
        .collect();
    if list.is_empty() {
        "<none>".into()
    } else {
        list.join(",")
    }
}

/// As `kubectl apply -f`, through the lab's API server: each object is
/// created, or patched to what the file says (`created`, `configured`,
/// `unchanged`); an object refused (by admission here, or by the API
/// server: a 422 naming the field) is printed with its error and changes
/// nothing, the others are applied, and the command fails if any was
/// refused.
fn apply(args: &LabApplyArgs) -> Result<(), Error> {
    let layout = running(&args.lab.name)?;
    let loaded = crate::state::read_objects_alone(&args.files, args.recursive)?;
    let client = LabClient::connect(&layout)?;
    let mut refused = loaded.refused.len();
    for refusal in &loaded.refused {
        eprintln!("error: {}", refusal.error);
    }
    let mut objects = loaded.objects;
    // Namespaces first, as the objects in them need them.
    objects.sort_by_key(|(o, _)| o.kind() != Kind::Namespace);
    // Namespaces the objects name and nobody defines are made, as `lab
    // apply` always allowed (kubectl would refuse).
    let defined: BTreeSet<String> = objects
        .iter()
        .filter(|(o, _)| o.kind() == Kind::Namespace)
        .filter_map(|(o, _)| o.metadata().name.clone())
        .collect();
    let named: BTreeSet<String> = objects
        .iter()
        .filter(|(o, _)| o.kind().is_namespaced())
        .filter_map(|(o, _)| o.metadata().namespace.clone())
        .filter(|ns| !ns.is_empty() && !defined.contains(ns))
        .collect();
    for ns in named {
        let made = match client.get(Kind::Namespace, "", &ns) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => client
                .create(
                    Kind::Namespace,
                    "",
                    serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                )
                .map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            // Its objects are refused by the server in turn, each said.
            eprintln!("error: Namespace {ns}: {}", e.message);
        }
    }
    for (object, origin) in &objects {
        let key = ObjectKey::of(object);
        match apply_one(&client, object) {
            Ok(word) => println!("{key} {word}"),
            Err(e) => {
                eprintln!("error: {origin} ({key}): {}", e.message);
                refused += 1;
            }
        }
    }
    match refused {
        0 => Ok(()),
        refused => Err(Error::Refused { refused }),
    }
}

/// Create the object, or patch the stored one to it as kubectl's
/// client-side apply does (keeping the applied configuration in the
/// `last-applied-configuration` annotation).
fn apply_one(client: &LabClient, object: &Object) -> Result<&'static str, Refusal> {
    let kind = object.kind();
    let mut value = serde_json::to_value(object).map_err(|e| Refusal {
        message: e.to_string(),
    })?;
    value["apiVersion"] = kind.api_version().into();
    value["kind"] = kind.as_str().into();
    // What the server owns is not the file's to send.
    if let Some(meta) = value["metadata"].as_object_mut() {
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            meta.remove(field);
        }
        if let Some(annotations) = meta.get_mut("annotations").and_then(|a| a.as_object_mut()) {
            annotations.remove(LAST_APPLIED);
        }
    }
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
    }
    let applied = serde_json::to_string(&value).map_err(|e| Refusal {
        message: e.to_string(),
    })?;
    value["metadata"]["annotations"][LAST_APPLIED] = applied.into();
    let meta = object.metadata();
    let ns = if kind.is_namespaced() {
        meta.namespace.as_deref().unwrap_or("default")
    } else {
        ""
    };
    let name = meta.name.as_deref().unwrap_or_default();
    match client.get(kind, ns, name)? {
        None => {
            client.create(kind, ns, value)?;
            Ok("created")
        }
        Some(current) => {
            let last: Option<serde_json::Value> = current["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .and_then(|t| serde_json::from_str(t).ok());
            let patch = crate::lab_client::apply_patch(&value, last.as_ref());
            let after = client.merge_patch(kind, ns, name, patch)?;
            let version = |v: &serde_json::Value| v["metadata"]["resourceVersion"].clone();
            Ok(if version(&after) == version(&current) {
                "unchanged"
            } else {
                "configured"
            })
        }
    }
}

/// Delete through the API server (pods gracefully, as kubectl does).
fn delete(args: &LabDeleteArgs) -> Result<(), Error> {
    let layout = running(&args.lab.name)?;
    let mut keys: Vec<ObjectKey> = read_objects(&args.files, args.recursive)?
        .iter()
        .map(ObjectKey::of)
        .collect();
    if let Some(object) = &args.object {
        let (kind, name) = object.split_once('/').ok_or_else(|| {
            lab_error(
                &args.lab.name,
                format!("{object:?}: give KIND/NAME, e.g. pod/web"),
            )
        })?;
        let kind = Kind::ALL
            .iter()
            .find(|k| {
                k.as_str().eq_ignore_ascii_case(kind)
                    || format!("{}s", k.as_str()).eq_ignore_ascii_case(kind)
            })
            .ok_or_else(|| lab_error(&args.lab.name, format!("unknown kind {kind:?}")))?;
        let ns = if kind.is_namespaced() {
            args.namespace.clone()
        } else {
            String::new()
        };
        keys.push(ObjectKey::new(*kind, ns, name));
    }
    let client = LabClient::connect(&layout)?;
    let mut refused = 0;
    for key in keys {
        let ns = if key.kind.is_namespaced() && key.namespace.is_empty() {
            "default"
        } else {
            key.namespace.as_str()
        };
        match client.delete(key.kind, ns, &key.name) {
            Ok(true) => println!("{key} deleted"),
            Ok(false) => println!("{key} not found"),
            Err(e) => {
                eprintln!("error: {key}: {}", e.message);
                refused += 1;
            }
        }
    }
    match refused {
        0 => Ok(()),
        refused => Err(Error::Refused { refused }),
    }
}

/// The kind a `lab get` argument names: the API server's plural, singular
/// or short name of any kind strait reads (`ingresses`, `ing`, …).
fn get_kind(name: &str) -> Option<Kind> {
    if name == "eps" {
        return Some(Kind::EndpointSlice);
    }
    strait_apiserver::RESOURCES
        .iter()
        .filter(|r| r.plural == name || r.singular == name || r.short_names.contains(&name))
        .find_map(|r| r.model_kind())
}

/// Columns as `kubectl get` prints them, from the API server's own `Table`
/// of the kind (the same columns kubectl gets from it): left-aligned,
/// three spaces apart, the wide ones only with `-o wide`.
fn print_table(kind: Kind, list: &[serde_json::Value], all_namespaces: bool, wide: bool) {
    let all_namespaces = all_namespaces && kind.is_namespaced();
    let plural = api_resource(kind).plural;
    let Some(resource) = strait_apiserver::RESOURCES
        .iter()
        .find(|r| r.model_kind() == Some(kind) && r.plural == plural)
    else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let objects: Vec<&serde_json::Value> = list.iter().collect();
    let table = strait_apiserver::table::table(
        resource,
        &objects,
        &strait_apiserver::table::TableOptions {
            headers: true,
            now_unix: now,
            ..Default::default()
        },
    );
    let columns: Vec<usize> = items(&table, "/columnDefinitions")
        .iter()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "<none>".into(),
        other => other.to_string(),
    };
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<String> = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE".into());
    }
    let definitions = items(&table, "/columnDefinitions");
    header.extend(
        columns
            .iter()
            .map(|&i| text(&definitions[i], "/name").to_ascii_uppercase()),
    );
    lines.push(header);
    for (row, object) in items(&table, "/rows").iter().zip(list) {
        let cells = items(row, "/cells");
        let mut line = Vec::new();
        if all_namespaces {
            line.push(text(object, "/metadata/namespace").to_owned());
        }
        line.extend(
            columns
                .iter()
                .map(|&i| cells.get(i).map(cell).unwrap_or_default()),
        );
        lines.push(line);
    }
    let mut widths = vec![0; lines[0].len()];
    for line in &lines {
        for (w, c) in widths.iter_mut().zip(line) {
            *w = (*w).max(c.chars().count());
        }
    }
    for line in &lines {
        let last = line.len().saturating_sub(1);
        let text: String = line
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.clone()
                } else {
                    format!("{c:<width$}   ", width = widths[i])
                }
            })
            .collect();
        println!("{text}");
    }
}

fn text<'a>(v: &'a serde_json::Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
}

fn items<'a>(v: &'a serde_json::Value, pointer: &str) -> &'a [serde_json::Value] {
    v.pointer(pointer)
        .and_then(serde_json::Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// As `kubectl get`, from the lab's API server.
fn get(args: &LabGetArgs) -> Result<(), Error> {
    let layout = running(&args.lab.name)?;
    let mut kinds = Vec::new();
    for name in args.kinds.split(',').map(|k| k.trim().to_ascii_lowercase()) {
        kinds.push(get_kind(&name).ok_or_else(|| {
            lab_error(
                &args.lab.name,
                format!(
                    "unknown kind {name:?}: nodes, pods, services, endpointslices, \
                     ingresses, ingressclasses or another kind strait reads"
                ),
            )
        })?);
    }
    let client = LabClient::connect(&layout)?;
    let namespace = args.namespace.as_deref().unwrap_or("default");
    let scope = (!args.all_namespaces).then_some(namespace);
    let mut listed = Vec::new();
    for kind in &kinds {
        let list = client.list(*kind, scope).map_err(|e| {
            lab_error(
                &args.lab.name,
                format!("list {}: {}", api_resource(*kind).plural, e.message),
            )
        })?;
        listed.push((*kind, list));
    }
    if let Some(format @ ("json" | "yaml")) = args.output.as_deref() {
        let all: Vec<serde_json::Value> = listed.into_iter().flat_map(|(_, l)| l).collect();
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": all});
        let text = if format == "json" {
            serde_json::to_string_pretty(&list).map_err(|e| Error::Output(e.to_string()))?
        } else {
            serde_saphyr::to_string(&list).map_err(|e| Error::Output(e.to_string()))?
        };
        println!("{text}");
        return Ok(());
    }
    let wide = args.output.as_deref() == Some("wide");
    // kubectl's -A: a NAMESPACE column first.
    let ns_header = if args.all_namespaces {
        "NAMESPACE     "
    } else {
        ""
    };
    let ns_column = |o: &serde_json::Value| {
        if args.all_namespaces {
            format!("{:<13} ", text(o, "/metadata/namespace"))
        } else {
            String::new()
        }
    };
    for (kind, list) in listed {
        match kind {
            Kind::Node => {
                println!("NAME      STATUS     INTERNAL-IP   POD-CIDR");
                for n in &list {
                    let ip = items(n, "/status/addresses")
                        .iter()
                        .find(|a| a["type"] == "InternalIP")
                        .map(|a| text(a, "/address"))
                        .unwrap_or_default();
                    let cidr = text(n, "/spec/podCIDR");
                    let name = text(n, "/metadata/name");
                    let ready = items(n, "/status/conditions")
                        .iter()
                        .find(|c| c["type"] == "Ready");
                    // A node whose Service proxy does not work is not Ready.
                    match ready {
                        Some(c) if c["status"] == "True" => {
                            println!("{name:<9} Ready      {ip:<13} {cidr}")
                        }
                        other => println!(
                            "{name:<9} NotReady   {ip:<13} {cidr}   ({})",
                            other.map_or("no Ready condition", |c| text(c, "/message"))
                        ),
                    }
                }
            }
            Kind::Pod => {
                println!("{ns_header}NAME                                  READY   STATUS    RESTARTS   IP            NODE");
                for p in &list {
                    let statuses = items(p, "/status/containerStatuses");
                    let containers = items(p, "/spec/containers").len();
                    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
                    let restarts: i64 = statuses
                        .iter()
                        .filter_map(|c| c["restartCount"].as_i64())
                        .sum();
                    let status = if p.pointer("/metadata/deletionTimestamp").is_some() {
                        "Terminating"
                    } else {
                        match text(p, "/status/phase") {
                            "" => "Pending",
                            phase => phase,
                        }
                    };
                    let or_none = |s: &'static str| -> &str {
                        match text(p, s) {
                            "" => "<none>",
                            v => v,
                        }
                    };
                    println!(
                        "{}{:<37} {:<7} {:<9} {:<10} {:<13} {}",
                        ns_column(p),
                        text(p, "/metadata/name"),
                        format!("{ready}/{containers}"),
                        status,
                        restarts,
                        or_none("/status/podIP"),
                        or_none("/spec/nodeName"),
                    );
                }
            }
            Kind::Service => {
                println!("{ns_header}NAME                 TYPE           CLUSTER-IP       PORT(S)");
                for s in &list {
                    let spec = &s["spec"];
                    let ip = if text(s, "/spec/type") == "ExternalName" {
                        text(s, "/spec/externalName")
                    } else {
                        text(s, "/spec/clusterIP")
                    };
                    let ports: Vec<String> = items(spec, "/ports")
                        .iter()
                        .map(|p| {
                            let protocol = match text(p, "/protocol") {
                                "" => "TCP",
                                p => p,
                            };
                            match p["nodePort"].as_i64() {
                                Some(np) => format!("{}:{np}/{protocol}", p["port"]),
                                None => format!("{}/{protocol}", p["port"]),
                            }
                        })
                        .collect();
                    println!(
                        "{}{:<20} {:<14} {:<16} {}",
                        ns_column(s),
                        text(s, "/metadata/name"),
                        text(s, "/spec/type"),
                        ip,
                        if ports.is_empty() {
                            "<none>".into()
                        } else {
                            ports.join(",")
                        }
                    );
                }
            }
            Kind::EndpointSlice => {
                println!("{ns_header}NAME                      ADDRESSTYPE   PORTS     ENDPOINTS");
                for s in &list {
                    let ports: Vec<String> = items(s, "/ports")
                        .iter()
                        .filter_map(|p| p["port"].as_i64().map(|n| n.to_string()))
                        .collect();
                    let eps: Vec<String> = items(s, "/endpoints")
                        .iter()
                        .map(|e| {
                            items(e, "/addresses")
                                .iter()
                                .filter_map(serde_json::Value::as_str)
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .collect();
                    let shown = if wide || eps.len() <= 3 {
                        eps.join(",")
                    } else {
                        format!("{} + {} more", eps[..3].join(","), eps.len() - 3)
                    };
                    println!(
                        "{}{:<25} {:<13} {:<9} {}",
                        ns_column(s),
                        text(s, "/metadata/name"),
                        text(s, "/addressType"),
                        if ports.is_empty() {
                            "<unset>".into()
                        } else {
                            ports.join(",")
                        },
                        if shown.is_empty() {
                            "<none>".into()
                        } else {
                            shown
                        }
                    );
                }
            }
            other => print_table(other, &list, args.all_namespaces, wide),
        }
    }
    Ok(())
}

fn pod_record(layout: &Layout, ns: &str, pod: &str) -> Result<strait_lab::PodRecord, Error> {
    let state: LabState = layout.read_state();
    state
        .pods
        .get(&format!("{ns}/{pod}"))
        .cloned()
        .ok_or_else(|| {
            lab_error(
                &layout.name,
                format!("no pod {ns}/{pod} (strait lab get -A)"),
            )
        })
}

/// Run the command in the pod; its exit code is returned.
pub fn exec(args: &LabExecArgs) -> Result<i32, Error> {
    need_root(&args.lab.name)?;
    let layout = running(&args.lab.name)?;
    let pod = pod_record(&layout, &args.namespace, &args.pod)?;
    let status = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", pod.netns))
        .args([
            "--",
            "unshare",
            "--mount",
            "--uts",
            "--",
            "sh",
            "-c",
            r#"mount --bind "$1" /etc/resolv.conf && hostname "$2" && shift 2 && exec "$@""#,
            "strait-exec",
        ])
        .arg(format!("{}/resolv.conf", pod.workdir))
        .arg(&pod.name)
        .args(&args.command)
        .status()
        .map_err(|e| lab_error(&args.lab.name, format!("cannot run nsenter: {e}")))?;
    Ok(status.code().unwrap_or(1))
}

fn logs(args: &LabLogsArgs) -> Result<(), Error> {
    let layout = running(&args.lab.name)?;
    let pod = pod_record(&layout, &args.namespace, &args.pod)?;
    let mut files: Vec<_> = std::fs::read_dir(&pod.workdir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    for f in files {
        print!("{}", std::fs::read_to_string(f).unwrap_or_default());
    }
    Ok(())
}

/// Stop the controller and every process of the lab, remove namespaces
/// and files. Also for a lab whose controller died; twice is fine. Only
/// what is provably the lab's is touched: the controller and containers
/// recorded with their start times, every process inside one of the lab's
/// network namespaces, and the namespaces named exactly as the lab names them.
pub fn down(name: &str) -> Result<(), Error> {
    let layout = Layout::new(name)?;
    need_root(name)?;
    // The controller first, so that it restarts nothing while we clean up.
    if let Some(controller) = layout.controller() {
        let pid = nix::unistd::Pid::from_raw(controller.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && controller.is_running() {
            std::thread::sleep(Duration::from_millis(20));
            // Reap it if it is our child (it is not, after `lab up` returned).
            let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
        if controller.is_running() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    // Every container's process group, if its leader is still the process
    // the controller started (a PID alone may have been reused since).
    let recorded: Vec<strait_lab::ProcessId> = layout
        .read_state()
        .pods
        .values()
        .flat_map(|p| p.processes.iter().copied())
        .collect();
    for p in &recorded {
        p.kill_group();
    }
    // Then whatever runs in the lab's namespaces, in a container's process
    // group or not (a daemon that left it, a probe or CNI call cut short).
    let namespaces: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|ns| layout.owns_netns(ns))
                .collect()
        })
        .unwrap_or_default();
    let inodes: std::collections::BTreeSet<u64> = namespaces
        .iter()
        .filter_map(|ns| strait_lab::netns_inode(&std::path::Path::new("/run/netns").join(ns)))
        .collect();
    let left = strait_lab::kill_in_netns(&inodes, Duration::from_secs(5));
    if !left.is_empty() {
        return Err(lab_error(
            name,
            format!("processes {left:?} survive SIGKILL in the lab's namespaces; try again"),
        ));
    }
    // SIGKILL is delivered asynchronously: wait until the recorded ones are
    // gone (or only zombies, which hold nothing), so that `down` returning
    // means done.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && recorded.iter().any(|p| p.is_running()) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for ns in &namespaces {
        let _ = strait_linux::NetNs::delete(ns);
    }
    if layout.dir.exists() {
        std::fs::remove_dir_all(&layout.dir)
            .map_err(|e| lab_error(name, format!("remove {}: {e}", layout.dir.display())))?;
    }
    // The last lab down leaves no /run/strait behind (fails harmlessly
    // while other labs still have their directories there).
    if let Some(parent) = layout.dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(())
}
