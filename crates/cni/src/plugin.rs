//! The CNI commands: ADD, DEL, CHECK, STATUS, GC and VERSION.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use strait_linux::{nft_apply, Kernel, Link, Namespaces, NetOps};
use strait_nft::Transaction;

use crate::error::{code, Error, Result};
use crate::ident::{self, attachment_key};
use crate::ipam::{self, RangeSet, Store};
use crate::nft::{check_mapping, Entries};
use crate::types::{
    parse_cni_args, parse_conf, Attachment, CniResult, Interface, IpConfig, NetConf, PortMapping,
    RouteConf, SUPPORTED_VERSIONS,
};

/// What the runtime passes in the environment.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
}

impl Env {
    pub fn from_map(vars: &BTreeMap<String, String>) -> Env {
        let get = |k: &str| vars.get(k).cloned().unwrap_or_default();
        Env {
            command: get("CNI_COMMAND"),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
            path: get("CNI_PATH"),
        }
    }

    fn require(&self, names: &[(&str, &str)]) -> Result<()> {
        for (name, value) in names {
            if value.is_empty() {
                return Err(Error::new(
                    code::INVALID_ENVIRONMENT,
                    format!("{name} is not set"),
                ));
            }
        }
        Ok(())
    }
}

/// The plugin's verdict: what to print on stdout and the exit code.
pub struct Outcome {
    pub stdout: String,
    pub exit_code: i32,
}

/// Run one CNI command, as a runtime invokes the plugin.
pub fn run(env: &Env, stdin: &[u8]) -> Outcome {
    // The version to answer errors in: the config's when it can be read.
    let version = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.1.0".to_owned());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&Error::internal(format!("cannot start: {e}")), &version),
    };
    match runtime.block_on(dispatch(&Kernel, env, stdin)) {
        Ok(stdout) => Outcome {
            stdout,
            exit_code: 0,
        },
        Err(e) => fail(&e, &version),
    }
}

fn fail(e: &Error, version: &str) -> Outcome {
    tracing::debug!(code = e.code, "{e}");
    Outcome {
        stdout: e.to_json(version),
        exit_code: 1,
    }
}

/// Run one command against `kernel`: the real one, or a fake in tests.
async fn dispatch<K: Namespaces>(kernel: &K, env: &Env, stdin: &[u8]) -> Result<String> {
    if env.command == "VERSION" {
        let requested = serde_json::from_slice::<serde_json::Value>(stdin)
            .ok()
            .and_then(|v| {
                v.get("cniVersion")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "1.1.0".into());
        return Ok(
            serde_json::json!({"cniVersion": requested, "supportedVersions": SUPPORTED_VERSIONS})
                .to_string(),
        );
    }
    let conf = parse_conf(stdin)?;
    check_version(&conf, &env.command)?;
    if matches!(env.command.as_str(), "ADD" | "DEL" | "CHECK") {
        // As the skel does before any plugin code runs: these reach IPAM
        // files, link names and (as digests) nft elements and state files.
        ident::check_container_id(&env.container_id)?;
        ident::check_interface_name(&env.ifname, "CNI_IFNAME", code::INVALID_ENVIRONMENT)?;
    }
    let plan = Plan::from_conf(&conf, env)?;
    match env.command.as_str() {
        "ADD" => add(kernel, &conf, &plan, env).await,
        "DEL" => del(kernel, &conf, &plan, env).await.map(|()| String::new()),
        "CHECK" => check(kernel, &conf, &plan, env)
            .await
            .map(|()| String::new()),
        "STATUS" => status(&conf, &plan).map(|()| String::new()),
        "GC" => gc(&conf, &plan).map(|()| String::new()),
        "" => Err(Error::new(
            code::INVALID_ENVIRONMENT,
            "CNI_COMMAND is not set",
        )),
        other => Err(Error::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_COMMAND {other:?} is not ADD, DEL, CHECK, STATUS, GC or VERSION"),
        )),
    }
}

fn check_version(conf: &NetConf, command: &str) -> Result<()> {
    let v = conf.cni_version.as_str();
    if !SUPPORTED_VERSIONS.contains(&v) {
        return Err(Error::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "incompatible CNI version {v:?}: strait supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let needs = match command {
        "CHECK" => "0.4.0",
        "STATUS" | "GC" => "1.1.0",
        _ => return Ok(()),
    };
    if version_lt(v, needs) {
        return Err(Error::new(
            code::INCOMPATIBLE_VERSION,
            format!("{command} needs cniVersion {needs} or later, the configuration says {v}"),
        ));
    }
    Ok(())
}

fn version_lt(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        s.split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    };
    parse(a) < parse(b)
}

/// The validated configuration: everything checked before anything changes.
struct Plan {
    bridge: String,
    sets: Vec<RangeSet>,
    data_dir: String,
    routes: Vec<RouteConf>,
    port_mappings: Vec<PortMapping>,
    requested: Vec<IpAddr>,
    is_gateway: bool,
}

impl Plan {
    /// Every subnet of the network: traffic to them is not masqueraded.
    fn subnets(&self) -> Vec<IpNet> {
        self.sets.iter().flatten().map(|r| r.subnet).collect()
    }

    fn from_conf(conf: &NetConf, env: &Env) -> Result<Plan> {
        ident::check_network_name(&conf.name)?;
        let bridge = conf.bridge.clone().unwrap_or_else(|| "cni0".into());
        // It also names a sysctl (`net.ipv4.conf.<bridge>.route_localnet`).
        ident::check_interface_name(&bridge, "bridge", code::INVALID_CONFIG)?;
        if let Some(mtu) = conf.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(Error::config(
                    "mtu",
                    format!("{mtu} must be between 68 and 65535"),
                ));
            }
        }
        let ipam = conf
            .ipam
            .as_ref()
            .ok_or_else(|| Error::config("ipam", "missing: strait needs an ipam section"))?;
        if !matches!(ipam.ipam_type.as_str(), "host-local" | "strait") {
            return Err(Error::config(
                "ipam.type",
                format!(
                    "{:?}: strait handles \"host-local\" and \"strait\" IPAM itself",
                    ipam.ipam_type
                ),
            ));
        }
        let sets = ipam::range_sets(ipam)?;
        let port_mappings = if conf.capabilities.get("portMappings") == Some(&true) {
            conf.runtime_config.port_mappings.clone()
        } else {
            Vec::new()
        };
        for (i, pm) in port_mappings.iter().enumerate() {
            check_mapping(pm, i)?;
        }
        let mut requested = Vec::new();
        let from_runtime = if conf.capabilities.get("ips") == Some(&true) {
            conf.runtime_config.ips.clone()
        } else {
            Vec::new()
        };
        let from_args = conf
            .args
            .as_ref()
            .and_then(|a| a.cni.as_ref())
            .map(|c| c.ips.clone())
            .unwrap_or_default();
        let cni_args = parse_cni_args(&env.args)?;
        let from_env: Vec<String> = cni_args
            .get("IP")
            .map(|v| v.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        for (source, list) in [
            ("runtimeConfig.ips", from_runtime),
            ("args.cni.ips", from_args),
            ("CNI_ARGS IP", from_env),
        ] {
            for text in list {
                // Accepts "10.1.2.3" and "10.1.2.3/24" like host-local.
                let ip = text
                    .parse::<IpAddr>()
                    .or_else(|_| text.parse::<IpNet>().map(|n| n.addr()))
                    .map_err(|_| Error::config(source, format!("{text:?} is not an IP address")))?;
                if !requested.contains(&ip) {
                    requested.push(ip);
                }
            }
        }
        Ok(Plan {
            bridge,
            sets,
            data_dir: ipam
                .data_dir
                .clone()
                .unwrap_or_else(|| ipam::DEFAULT_DATA_DIR.into()),
            routes: ipam.routes.clone(),
            port_mappings,
            requested,
            is_gateway: conf.is_gateway || conf.is_default_gateway,
        })
    }
}

/// The host end's name: derived from the attachment, so DEL finds it even
/// when the pod's namespace is already gone.
fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("veth{h:08x}")
}

/// What ADD did, kept for DEL, CHECK and GC (runtimes may not pass it back).
/// The identifiers are kept too: the file's name is only their digest.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttachmentState {
    #[serde(default, rename = "containerID")]
    container_id: String,
    #[serde(default)]
    ifname: String,
    ips: Vec<IpNet>,
    ip_masq: bool,
    port_mappings: Vec<PortMapping>,
}

/// `<dataDir>/.strait/<network>/<key>.json`, the key a digest of the
/// attachment: fixed length, hex only, so no container ID (of any length
/// the spec allows) can leave the directory or overflow a file name.
/// The network name is checked ([`ident::check_network_name`]) and is a
/// directory name already for host-local.
fn state_path(plan: &Plan, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    // Beside host-local's directory, not in it: the reference plugin reads
    // every file there as a reservation.
    PathBuf::from(&plan.data_dir)
        .join(".strait")
        .join(network)
        .join(format!(
            "{}.json",
            attachment_key(network, container_id, ifname)
        ))
}

impl AttachmentState {
    fn entries<'a>(&'a self, conf: &'a NetConf, container_id: &str, ifname: &str) -> Entries<'a> {
        Entries {
            network: &conf.name,
            key: attachment_key(&conf.name, container_id, ifname),
            ips: &self.ips,
            masquerade: self.ip_masq,
            port_mappings: &self.port_mappings,
        }
    }
}

/// The state ADD left, if any. A file that cannot be read or parsed is
/// reported (DEL then works from the IPAM reservations instead).
fn load_state(path: &PathBuf) -> Option<AttachmentState> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if is_absent(&e) => return None,
        Err(e) => {
            tracing::warn!("cannot read {}: {e}", path.display());
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::warn!("cannot parse {}: {e}", path.display());
            None
        }
    }
}

/// The file (or a directory on its way) is not there.
fn is_absent(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::libc::ENOTDIR)
}

/// Write the state of an attachment whole or not at all: serialised first
/// (an error is reported, never an empty file), written to a temporary file
/// beside it, then renamed over the old one. Not fsynced: the rename is
/// what makes a crashed plugin leave the old file or the new, never half of
/// one, and after a crash of the machine the runtime adds its pods again
/// (host-local's reservations are not synced either). An fsync per ADD
/// cost ~10 ms of a 30 ms ADD+DEL cycle here.
fn save_state(path: &std::path::Path, state: &AttachmentState) -> Result<()> {
    let bytes = serde_json::to_vec(state).map_err(|e| {
        Error::internal(format!(
            "cannot serialise the state of {}: {e}",
            path.display()
        ))
    })?;
    let dir = path
        .parent()
        .ok_or_else(|| Error::internal(format!("{} has no directory", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    let written = (|| {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error("write", path, e)
    })
}

/// Open CNI_NETNS for ADD and CHECK. A path that does not exist is a
/// container that does not exist (code 3: the runtime need not clean up);
/// a path that exists but is not a network namespace (a file, a directory,
/// another kind of namespace) is a bad CNI_NETNS (code 4, which the spec
/// gives to invalid environment variables, naming the variable).
fn open_netns<K: Namespaces>(kernel: &K, path: &str) -> Result<K::Netns> {
    let netns = kernel.open_netns(path).map_err(|e| match &e {
        strait_linux::Error::Netns { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Error::new(
                code::UNKNOWN_CONTAINER,
                format!("CNI_NETNS {path:?} does not exist: the container is gone"),
            )
        }
        _ => Error::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_NETNS {path:?} cannot be opened: {e}"),
        ),
    })?;
    if !kernel.is_network(&netns) {
        return Err(Error::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_NETNS {path:?} is not a network namespace"),
        ));
    }
    Ok(netns)
}

fn io_error(what: &str, path: &std::path::Path, e: std::io::Error) -> Error {
    Error::new(code::IO_FAILURE, format!("{what} {}: {e}", path.display()))
}

async fn add<K: Namespaces>(kernel: &K, conf: &NetConf, plan: &Plan, env: &Env) -> Result<String> {
    env.require(&[
        ("CNI_CONTAINERID", &env.container_id),
        ("CNI_NETNS", &env.netns),
        ("CNI_IFNAME", &env.ifname),
    ])?;
    let netns = open_netns(kernel, &env.netns)?;
    let host = kernel.connect(None)?;
    let container = kernel.connect(Some(&netns))?;
    if container.link_by_name(&env.ifname).await?.is_some() {
        return Err(Error::internal(format!(
            "interface {} already exists in {}",
            env.ifname, env.netns
        )));
    }

    // The pod's loopback is brought up below; a failed ADD puts it back.
    let lo_down = container
        .link_by_name("lo")
        .await?
        .filter(|lo| !lo.up)
        .map(|lo| lo.index);

    // The host end's name is derived: if it is taken, it belongs to someone
    // else, and the rollback below must not remove it.
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    if host.link_by_name(&host_name).await?.is_some() {
        return Err(Error::internal(format!(
            "host interface {host_name} for container {} interface {} already exists",
            env.container_id, env.ifname
        )));
    }

    let store = Store::open(&plan.data_dir, &conf.name)?;
    let allocated = store.allocate(&plan.sets, &env.container_id, &env.ifname, &plan.requested)?;
    let ips: Vec<(IpNet, Option<IpAddr>)> = allocated
        .iter()
        .map(|(ip, range)| {
            (
                IpNet::new(*ip, range.subnet.prefix_len()).expect("prefix of a subnet"),
                range.gateway,
            )
        })
        .collect();
    drop(store);
    let subnets = plan.subnets();

    let entries = Entries {
        network: &conf.name,
        key: attachment_key(&conf.name, &env.container_id, &env.ifname),
        ips: &ips.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        masquerade: conf.ip_masq,
        port_mappings: &plan.port_mappings,
    };
    let path = state_path(plan, &conf.name, &env.container_id, &env.ifname);
    // The state is part of the attachment: when it cannot be saved, DEL
    // would not know what to remove, so ADD fails and undoes the rest.
    let result = match attach(
        conf,
        plan,
        env,
        kernel.netns_fd(&netns),
        &host,
        &container,
        &host_name,
        &ips,
        &subnets,
        &entries,
    )
    .await
    {
        Ok(result) => save_state(
            &path,
            &AttachmentState {
                container_id: env.container_id.clone(),
                ifname: env.ifname.clone(),
                ips: ips.iter().map(|(n, _)| *n).collect(),
                ip_masq: conf.ip_masq,
                port_mappings: plan.port_mappings.clone(),
            },
        )
        .map(|()| result),
        Err(e) => Err(e),
    };
    match result {
        Ok(result) => Ok(result.to_json(&conf.cni_version).to_string()),
        Err(e) => {
            // Undo everything: no veth, no address, no rule may be left.
            if let Ok(Some(link)) = host.link_by_name(&host_name).await {
                let _ = host.del_link(link.index).await;
            }
            if let Some(lo) = lo_down {
                let _ = container.set_down(lo).await;
            }
            if !entries.is_empty() {
                let _ = apply_full(&entries.full_del(&subnets));
            }
            if let Ok(store) = Store::open(&plan.data_dir, &conf.name) {
                let _ = store.release(&env.container_id, &env.ifname);
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn attach<N: NetOps>(
    conf: &NetConf,
    plan: &Plan,
    env: &Env,
    netns_fd: i32,
    host: &N,
    container: &N,
    host_name: &str,
    ips: &[(IpNet, Option<IpAddr>)],
    subnets: &[IpNet],
    entries: &Entries<'_>,
) -> Result<CniResult> {
    // The pod's nft elements go in while the links are made.
    let nft = if entries.is_empty() {
        None
    } else {
        Some(apply_fast(&entries.fast_add()))
    };
    let bridge = host.ensure_bridge(&plan.bridge, conf.mtu).await?;
    if conf.promisc_mode {
        host.set_promiscuous(bridge.index, true).await?;
    }
    if plan.is_gateway {
        set_gateway_addresses(host, &bridge, ips, conf.force_address).await?;
        for (net, _) in ips {
            let key = if net.addr().is_ipv4() {
                "net.ipv4.ip_forward"
            } else {
                "net.ipv6.conf.all.forwarding"
            };
            host.write_sysctl(key, "1")?;
        }
    }

    host.add_veth(host_name, &env.ifname, netns_fd, conf.mtu)
        .await?;
    let host_link = host
        .link_by_name(host_name)
        .await?
        .ok_or_else(|| Error::internal(format!("veth {host_name} vanished after creation")))?;
    host.set_controller(host_link.index, bridge.index).await?;
    if conf.hairpin_mode {
        host.set_hairpin(host_link.index, true).await?;
    }
    host.set_up(host_link.index).await?;

    if let Some(lo) = container.link_by_name("lo").await? {
        container.set_up(lo.index).await?;
    }
    let inner = container.link_by_name(&env.ifname).await?.ok_or_else(|| {
        Error::internal(format!("{} did not appear in {}", env.ifname, env.netns))
    })?;
    for (net, _) in ips {
        container.add_address(inner.index, *net).await?;
    }
    container.set_up(inner.index).await?;
    let mut routes = Vec::new();
    if conf.is_default_gateway {
        for (net, gw) in ips {
            let default: IpNet = if net.addr().is_ipv4() {
                "0.0.0.0/0".parse().expect("valid")
            } else {
                "::/0".parse().expect("valid")
            };
            container.add_route(default, *gw, inner.index).await?;
            routes.push(RouteConf {
                dst: default,
                gw: *gw,
            });
        }
    }
    for route in &plan.routes {
        let gw = route.gw.or_else(|| {
            ips.iter()
                .find(|(n, _)| n.addr().is_ipv4() == route.dst.addr().is_ipv4())
                .and_then(|(_, g)| *g)
        });
        if routes.iter().any(|r| r.dst == route.dst) {
            continue;
        }
        container.add_route(route.dst, gw, inner.index).await?;
        routes.push(RouteConf {
            dst: route.dst,
            gw: route.gw,
        });
    }

    if let Some(run) = nft {
        finish_nft(run, &entries.full_add(subnets)).map_err(|e| {
            match hostport_in_conflict(&e.to_string(), &plan.port_mappings) {
                Some(pm) => Error::internal(format!(
                    "hostPort {}/{} is already mapped to another container",
                    pm.host_port,
                    pm.protocol.to_ascii_lowercase()
                )),
                None => e,
            }
        })?;
        if !plan.port_mappings.is_empty() {
            // Lets localhost:hostPort be DNAT'ed out of the bridge.
            let _ = host.write_sysctl(
                &format!("net.ipv4.conf.{}.route_localnet", plan.bridge),
                "1",
            );
        }
    }

    let bridge = host.link_by_index(bridge.index).await?.unwrap_or(bridge);
    Ok(CniResult {
        interfaces: vec![
            Interface {
                name: bridge.name,
                mac: bridge.mac,
                sandbox: String::new(),
            },
            Interface {
                name: host_link.name,
                mac: host_link.mac,
                sandbox: String::new(),
            },
            Interface {
                name: inner.name,
                mac: inner.mac,
                sandbox: env.netns.clone(),
            },
        ],
        ips: ips
            .iter()
            .map(|(net, gw)| IpConfig {
                address: *net,
                gateway: if plan.is_gateway { *gw } else { None },
                interface: Some(2),
            })
            .collect(),
        routes,
    })
}

/// Put each gateway on the bridge; an address of the same subnet that is not
/// the gateway is an error unless `forceAddress`, which replaces it.
async fn set_gateway_addresses<N: NetOps>(
    host: &N,
    bridge: &Link,
    ips: &[(IpNet, Option<IpAddr>)],
    force: bool,
) -> Result<()> {
    let present = host.addresses(Some(bridge.index)).await?;
    for (net, gw) in ips {
        let Some(gw) = gw else { continue };
        let wanted = IpNet::new(*gw, net.prefix_len()).expect("prefix of a subnet");
        if present.iter().any(|(_, a)| *a == wanted) {
            continue;
        }
        let conflicting: Vec<IpNet> = present
            .iter()
            .map(|(_, a)| *a)
            .filter(|a| a.trunc() == wanted.trunc())
            .collect();
        if !conflicting.is_empty() && !force {
            return Err(Error::internal(format!(
                "bridge {} has address {} in the same subnet; expected {wanted} (set forceAddress to replace it)",
                bridge.name, conflicting[0]
            )));
        }
        host.add_address(bridge.index, wanted).await?;
    }
    Ok(())
}

async fn del<K: Namespaces>(kernel: &K, conf: &NetConf, plan: &Plan, env: &Env) -> Result<()> {
    env.require(&[
        ("CNI_CONTAINERID", &env.container_id),
        ("CNI_IFNAME", &env.ifname),
    ])?;
    // What ADD programmed, to remove it while the links go away.
    let path = state_path(plan, &conf.name, &env.container_id, &env.ifname);
    let state = match load_state(&path) {
        Some(state) => state,
        None => {
            let store = Store::open(&plan.data_dir, &conf.name)?;
            let held = store.held_by(&env.container_id, &env.ifname)?;
            fallback_state(conf, plan, &held)
        }
    };
    let entries = state.entries(conf, &env.container_id, &env.ifname);
    let nft = if entries.is_empty() || state.ips.is_empty() {
        None
    } else {
        Some(apply_fast(&entries.fast_del()))
    };

    let host = kernel.connect(None)?;
    let mut removed = false;
    // A namespace that is gone, or a path that is no namespace any more
    // (after `umount` a bind-mounted netns leaves a plain file behind), is
    // tolerated as the reference plugins tolerate a gone one: DEL removes
    // what is left on the node's side and succeeds.
    let netns = kernel
        .open_netns(&env.netns)
        .ok()
        .filter(|ns| kernel.is_network(ns));
    if let Some(netns) = netns {
        let container = kernel.connect(Some(&netns))?;
        if let Some(link) = container.link_by_name(&env.ifname).await? {
            container.del_link(link.index).await.or_else(|e| {
                if e.is_not_found() {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
            removed = true;
        }
    }
    if !removed {
        // The namespace is gone (or never had it): remove our end if left.
        if let Some(link) = host
            .link_by_name(&host_veth_name(&env.container_id, &env.ifname))
            .await?
        {
            host.del_link(link.index).await.or_else(|e| {
                if e.is_not_found() {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        }
    }
    let store = Store::open(&plan.data_dir, &conf.name)?;
    store.release(&env.container_id, &env.ifname)?;
    drop(store);
    if let Some(run) = nft {
        finish_nft(run, &entries.full_del(&plan.subnets()))?;
    }
    // Earlier versions named the file after the identifiers themselves
    // (checked above, so this cannot leave the directory); clean it up.
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_file(dir.join(format!("{}_{}.json", env.container_id, env.ifname)));
    }
    remove_state(&path)
}

/// The pod's elements only, over netlink (well under a millisecond; the
/// `nft` program took ~10 ms a run): whether the kernel took them.
fn apply_fast(tx: &Transaction) -> bool {
    strait_nft::netlink::Socket::open()
        .and_then(|mut socket| socket.apply(tx))
        .is_ok()
}

/// The whole table and the pod's elements, which works from any state:
/// over netlink, else through `nft`, whose refusal names the element at
/// fault (a hostPort mapped twice is told apart by it).
fn apply_full(tx: &Transaction) -> Result<()> {
    match strait_nft::netlink::Socket::open().and_then(|mut socket| socket.apply(tx)) {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::debug!("netlink refused the full transaction ({e}); trying nft");
            tx.validate().map_err(|e| Error::internal(e.to_string()))?;
            nft_apply(&strait_nft::text::transaction_script(tx)).map_err(Error::from)
        }
    }
}

/// When the fast transaction failed (table or elements not as expected),
/// apply the full one.
fn finish_nft(fast_applied: bool, full: &Transaction) -> Result<()> {
    if fast_applied {
        Ok(())
    } else {
        apply_full(full)
    }
}

fn fallback_state(conf: &NetConf, plan: &Plan, held: &[IpAddr]) -> AttachmentState {
    AttachmentState {
        ips: held.iter().map(|ip| IpNet::from(*ip)).collect(),
        ip_masq: conf.ip_masq,
        port_mappings: plan.port_mappings.clone(),
        ..AttachmentState::default()
    }
}

fn remove_state(path: &PathBuf) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if is_absent(&e) => Ok(()),
        Err(e) => Err(io_error("remove", path, e)),
    }
}

/// Remove the nft entries and the state file of one attachment (GC).
fn forget_attachment(
    conf: &NetConf,
    plan: &Plan,
    container_id: &str,
    ifname: &str,
    released: &[IpAddr],
) -> Result<()> {
    let path = state_path(plan, &conf.name, container_id, ifname);
    let state = load_state(&path).unwrap_or_else(|| fallback_state(conf, plan, released));
    let entries = state.entries(conf, container_id, ifname);
    if !entries.is_empty() && !state.ips.is_empty() {
        finish_nft(
            apply_fast(&entries.fast_del()),
            &entries.full_del(&plan.subnets()),
        )?;
    }
    remove_state(&path)
}

async fn check<K: Namespaces>(kernel: &K, conf: &NetConf, plan: &Plan, env: &Env) -> Result<()> {
    env.require(&[
        ("CNI_CONTAINERID", &env.container_id),
        ("CNI_NETNS", &env.netns),
        ("CNI_IFNAME", &env.ifname),
    ])?;
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| Error::config("prevResult", "missing: CHECK needs the result of ADD"))?;
    let prev = CniResult::from_value(prev)?;
    let netns = open_netns(kernel, &env.netns)?;
    let container = kernel.connect(Some(&netns))?;
    let inner = container.link_by_name(&env.ifname).await?.ok_or_else(|| {
        Error::internal(format!(
            "CHECK: interface {} is missing in {}",
            env.ifname, env.netns
        ))
    })?;
    if !inner.up {
        return Err(Error::internal(format!(
            "CHECK: interface {} is down",
            env.ifname
        )));
    }
    let present: Vec<IpNet> = container
        .addresses(Some(inner.index))
        .await?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    for ip in &prev.ips {
        if !present.contains(&ip.address) {
            return Err(Error::internal(format!(
                "CHECK: address {} is missing on {}",
                ip.address, env.ifname
            )));
        }
    }
    for route in &prev.routes {
        let routes = container.routes(route.dst.addr().is_ipv6()).await?;
        let found = routes
            .iter()
            .any(|r| r.destination == route.dst && (route.gw.is_none() || r.gateway == route.gw));
        if !found {
            return Err(Error::internal(format!(
                "CHECK: route to {} is missing in {}",
                route.dst, env.netns
            )));
        }
    }
    let host = kernel.connect(None)?;
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    let bridge = host
        .link_by_name(&plan.bridge)
        .await?
        .ok_or_else(|| Error::internal(format!("CHECK: bridge {} is missing", plan.bridge)))?;
    let veth = host
        .link_by_name(&host_name)
        .await?
        .ok_or_else(|| Error::internal(format!("CHECK: host interface {host_name} is missing")))?;
    if veth.controller != Some(bridge.index) {
        return Err(Error::internal(format!(
            "CHECK: {host_name} is not attached to bridge {}",
            plan.bridge
        )));
    }
    let store = Store::open(&plan.data_dir, &conf.name)?;
    let held = store.held_by(&env.container_id, &env.ifname)?;
    for ip in &prev.ips {
        if !held.contains(&ip.address.addr()) {
            return Err(Error::internal(format!(
                "CHECK: {} is not reserved for this container in IPAM",
                ip.address.addr()
            )));
        }
    }
    Ok(())
}

/// Ready to serve ADD: the address store is usable, each range set has a
/// free address, and `nft` is there when rules are needed.
fn status(conf: &NetConf, plan: &Plan) -> Result<()> {
    let unavailable = |msg: String| Error::new(code::NOT_AVAILABLE, msg);
    let store = Store::open(&plan.data_dir, &conf.name)
        .map_err(|e| unavailable(format!("IPAM store unusable: {}", e.msg)))?;
    for set in &plan.sets {
        if !store.has_free(set) {
            let subnets: Vec<String> = set.iter().map(|r| r.subnet.to_string()).collect();
            return Err(unavailable(format!(
                "no free address in {}",
                subnets.join(", ")
            )));
        }
    }
    if conf.ip_masq || conf.capabilities.get("portMappings") == Some(&true) {
        let nft = std::process::Command::new("nft").arg("--version").output();
        if !nft.is_ok_and(|o| o.status.success()) {
            return Err(unavailable(
                "nft is not installed (apt-get install nftables)".into(),
            ));
        }
    }
    Ok(())
}

fn gc(conf: &NetConf, plan: &Plan) -> Result<()> {
    let valid: Vec<Attachment> = conf.valid_attachments.clone().unwrap_or_default();
    let store = Store::open(&plan.data_dir, &conf.name)?;
    let mut stale: BTreeMap<(String, String), Vec<IpAddr>> = BTreeMap::new();
    for r in store.reservations()? {
        let known = valid.iter().any(|a| {
            a.container_id == r.container_id && (a.ifname == r.ifname || r.ifname.is_empty())
        });
        if !known {
            stale
                .entry((r.container_id.clone(), r.ifname.clone()))
                .or_default()
                .push(r.ip);
        }
    }
    for ips in stale.values() {
        for ip in ips {
            store.release_ip(*ip)?;
        }
    }
    drop(store);
    for ((id, ifname), ips) in &stale {
        forget_attachment(conf, plan, id, ifname, ips)?;
    }
    Ok(())
}

/// Which mapping an nft "File exists" error is about, if any.
fn hostport_in_conflict<'a>(message: &str, mappings: &'a [PortMapping]) -> Option<&'a PortMapping> {
    if !message.contains("File exists") {
        return None;
    }
    mappings
        .iter()
        .find(|pm| message.contains(&format!(". {} comment", pm.host_port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("strait-cni-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn state(ip: &str) -> AttachmentState {
        AttachmentState {
            container_id: "ctr".into(),
            ifname: "eth0".into(),
            ips: vec![ip.parse().unwrap()],
            ..AttachmentState::default()
        }
    }

    /// A write that fails half way leaves the previous state as it was,
    /// never an empty or partial file, and no temporary file behind.
    #[test]
    fn state_is_written_whole_or_not_at_all() {
        let dir = tempdir("state");
        let path = dir.join("net").join("key.json");
        save_state(&path, &state("10.0.0.2/24")).unwrap();
        let first = std::fs::read(&path).unwrap();
        assert!(!first.is_empty());
        // The temporary file cannot be made: a directory is in its way.
        let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
        std::fs::create_dir(&tmp).unwrap();
        let err = save_state(&path, &state("10.0.0.3/24")).unwrap_err();
        assert_eq!(err.code, code::IO_FAILURE);
        assert!(err.msg.contains("key.json"), "{}", err.msg);
        assert_eq!(std::fs::read(&path).unwrap(), first, "old state kept");
        let loaded = load_state(&path).unwrap();
        assert_eq!(loaded.ips, state("10.0.0.2/24").ips);
        std::fs::remove_dir(&tmp).unwrap();
        save_state(&path, &state("10.0.0.3/24")).unwrap();
        assert_eq!(load_state(&path).unwrap().ips, state("10.0.0.3/24").ips);
        let names: Vec<_> = std::fs::read_dir(dir.join("net"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["key.json"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A file in the way of the state directory is "no state", for DEL.
    #[test]
    fn a_state_path_through_a_file_counts_as_absent() {
        let dir = tempdir("absent");
        std::fs::write(dir.join(".strait"), "x").unwrap();
        let path = dir.join(".strait").join("net").join("key.json");
        assert!(load_state(&path).is_none());
        assert!(remove_state(&path).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[cfg(test)]
mod fake_tests;
