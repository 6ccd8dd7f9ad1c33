//! Admission: what the API server does to an object before storing it —
//! defaulting (so every later stage sees `protocol: TCP`, `type: ClusterIP`, …)
//! and validation of the fields strait relies on. Errors are (field path, message).

use std::net::IpAddr;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ClientIPConfig, Container, Endpoints, Pod, PodSpec, Service, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::kind::{Kind, ObjectKey};
use crate::names::{dns1035_label, dns_label, dns_subdomain};
use crate::selector::Selector;

type Check = Result<(), (String, String)>;

fn bad(field: impl Into<String>, message: impl Into<String>) -> Check {
    Err((field.into(), message.into()))
}

/// Default and validate what every object has, in place: its name, its
/// namespace, its labels and its UID. The kind's own fields are checked by
/// the function of that kind ([`crate::Object::admit`] calls both).
pub(crate) fn metadata(kind: Kind, meta: &mut ObjectMeta) -> Check {
    let name = meta.name.clone().unwrap_or_default();
    object_name(kind, &name)?;
    if kind.is_namespaced() {
        // The namespace reaches chain names, DNS names and file names
        // downstream; kube-apiserver only stores namespaces that are labels.
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        if let Err(why) = dns_label(namespace) {
            return bad("metadata.namespace", format!("{namespace:?} {why}"));
        }
    }
    // Labels are what selectors, policies and tools match on: spelled as
    // kube-apiserver requires (the rule of selector keys and values).
    if let Some(labels) = &meta.labels {
        if let Err(e) = Selector::from_map(labels) {
            return bad("metadata.labels", e.to_string());
        }
    }
    // The API server gives every object a UID on create; strait derives it
    // from what the object is, so that it is the same on every run.
    if meta.uid.as_deref().unwrap_or_default().is_empty() {
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        meta.uid = Some(crate::hash::uid(kind.as_str(), namespace, &name));
    }
    Ok(())
}

/// A NetworkPolicy, defaulted and validated as kube-apiserver does
/// (networking/v1 defaults, `ValidateNetworkPolicySpec`): every field a
/// planner reads must be honourable as written, or the object is refused —
/// a policy read "as best we can" could open traffic its author closed.
/// Defaults: each port's `protocol` to TCP; `policyTypes`, when empty, to
/// `[Ingress]` plus `Egress` when `spec.egress` has a rule.
pub(crate) fn network_policy(np: &mut NetworkPolicy) -> Check {
    let Some(spec) = np.spec.as_mut() else {
        return Ok(());
    };
    if let Some(sel) = &spec.pod_selector {
        if let Err(e) = Selector::from_label_selector(sel) {
            return bad("spec.podSelector", e.to_string());
        }
    }
    for (r, rule) in spec.ingress.iter_mut().flatten().enumerate() {
        for (i, port) in rule.ports.iter_mut().flatten().enumerate() {
            network_policy_port(&format!("spec.ingress[{r}].ports[{i}]"), port)?;
        }
        for (i, peer) in rule.from.iter().flatten().enumerate() {
            network_policy_peer(&format!("spec.ingress[{r}].from[{i}]"), peer)?;
        }
    }
    for (r, rule) in spec.egress.iter_mut().flatten().enumerate() {
        for (i, port) in rule.ports.iter_mut().flatten().enumerate() {
            network_policy_port(&format!("spec.egress[{r}].ports[{i}]"), port)?;
        }
        for (i, peer) in rule.to.iter().flatten().enumerate() {
            network_policy_peer(&format!("spec.egress[{r}].to[{i}]"), peer)?;
        }
    }
    let types = spec.policy_types.get_or_insert_with(Vec::new);
    if types.len() > 2 {
        return bad(
            "spec.policyTypes",
            "may not specify more than two policyTypes",
        );
    }
    for (i, t) in types.iter().enumerate() {
        one_of(&format!("spec.policyTypes[{i}]"), t, &["Ingress", "Egress"])?;
    }
    if types.is_empty() {
        types.push("Ingress".to_owned());
        if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
            types.push("Egress".to_owned());
        }
    }
    Ok(())
}

/// One `ports` entry: a known protocol (TCP by default), a port number or
/// an IANA name, and `endPort` only after a numeric `port`, not below it.
fn network_policy_port(
    at: &str,
    port: &mut k8s_openapi::api::networking::v1::NetworkPolicyPort,
) -> Check {
    protocol(format!("{at}.protocol"), &mut port.protocol)?;
    match (&port.port, port.end_port) {
        (Some(IntOrString::Int(first)), end) => {
            port_number(format!("{at}.port"), *first)?;
            if let Some(end) = end {
                if end < *first {
                    return bad(
                        format!("{at}.endPort"),
                        format!("{end} must be greater than or equal to port ({first})"),
                    );
                }
                port_number(format!("{at}.endPort"), end)?;
            }
        }
        (Some(IntOrString::String(name)), end) => {
            if let Some(end) = end {
                return bad(
                    format!("{at}.endPort"),
                    format!("{end} may not be given with a named port ({name:?})"),
                );
            }
            if let Err(why) = port_name(name) {
                return bad(format!("{at}.port"), format!("{name:?} {why}"));
            }
        }
        (None, Some(end)) => {
            return bad(
                format!("{at}.endPort"),
                format!("{end} may not be given without port"),
            );
        }
        (None, None) => {}
    }
    Ok(())
}

/// One `from`/`to` entry: at least one of podSelector, namespaceSelector,
/// ipBlock; ipBlock alone; selectors readable; the block a CIDR with its
/// exceptions strictly inside.
fn network_policy_peer(
    at: &str,
    peer: &k8s_openapi::api::networking::v1::NetworkPolicyPeer,
) -> Check {
    for (field, sel) in [
        ("podSelector", &peer.pod_selector),
        ("namespaceSelector", &peer.namespace_selector),
    ] {
        if let Some(sel) = sel {
            if let Err(e) = Selector::from_label_selector(sel) {
                return bad(format!("{at}.{field}"), e.to_string());
            }
        }
    }
    let Some(block) = &peer.ip_block else {
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            return bad(
                at,
                "must specify a peer: podSelector, namespaceSelector or ipBlock",
            );
        }
        return Ok(());
    };
    if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
        return bad(at, "may not specify both ipBlock and another peer");
    }
    let Ok(cidr) = block.cidr.parse::<ipnet::IpNet>() else {
        return bad(
            format!("{at}.ipBlock.cidr"),
            format!("{:?} is not an IP range such as 10.0.0.0/8", block.cidr),
        );
    };
    for (e, except) in block.except.iter().flatten().enumerate() {
        let inside = except.parse::<ipnet::IpNet>().is_ok_and(|ex| {
            cidr.trunc().contains(&ex.trunc()) && ex.prefix_len() > cidr.prefix_len()
        });
        if !inside {
            return bad(
                format!("{at}.ipBlock.except[{e}]"),
                format!(
                    "{except:?} must be an IP range strictly inside {}",
                    block.cidr
                ),
            );
        }
    }
    Ok(())
}

/// `spec.podCIDR(s)` of a Node: CIDRs, at most one per family.
pub(crate) fn node_pod_cidrs(node: &k8s_openapi::api::core::v1::Node) -> Check {
    let Some(spec) = node.spec.as_ref() else {
        return Ok(());
    };
    if let Some(cidr) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty()) {
        if cidr.parse::<ipnet::IpNet>().is_err() {
            return bad(
                "spec.podCIDR",
                format!("{cidr:?} is not an IP range such as 10.244.0.0/24"),
            );
        }
    }
    let cidrs = spec.pod_cidrs.as_deref().unwrap_or_default();
    let mut families = Vec::new();
    for (i, cidr) in cidrs.iter().enumerate() {
        let Ok(net) = cidr.parse::<ipnet::IpNet>() else {
            return bad(
                format!("spec.podCIDRs[{i}]"),
                format!("{cidr:?} is not an IP range such as 10.244.0.0/24"),
            );
        };
        let v4 = matches!(net, ipnet::IpNet::V4(_));
        if families.contains(&v4) {
            return bad("spec.podCIDRs", "at most one range per family");
        }
        families.push(v4);
    }
    Ok(())
}

/// The label the control plane sets on every Namespace, so that policies and
/// tools can select a namespace by its name.
pub const LABEL_METADATA_NAME: &str = "kubernetes.io/metadata.name";

/// Namespace defaulting: the name label always holds the name, whatever the
/// manifest says (the API server overwrites it the same way).
pub(crate) fn namespace(ns: &mut k8s_openapi::api::core::v1::Namespace, name: &str) {
    ns.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(LABEL_METADATA_NAME.to_owned(), name.to_owned());
}

/// The most a Secret may hold (kube-apiserver's `MaxSecretSize`).
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// A Secret as kube-apiserver admits it: `stringData` merged into `data`
/// (its entries win, as the API's conversion writes them), `type` defaulted
/// to `Opaque`, keys checked as config keys, the 1 MiB limit, and the keys
/// each built-in type requires (`tls.crt` and `tls.key` for
/// `kubernetes.io/tls`; their content is not parsed here, as the API
/// server does not either: the Ingress controller reports a bad pair).
pub(crate) fn secret(secret: &mut k8s_openapi::api::core::v1::Secret) -> Check {
    if let Some(strings) = secret.string_data.take() {
        for (key, value) in strings {
            secret_key(&format!("stringData[{key:?}]"), &key)?;
            secret
                .data
                .get_or_insert_with(Default::default)
                .insert(key, k8s_openapi::ByteString(value.into_bytes()));
        }
    }
    let kind = secret.type_.get_or_insert_with(|| "Opaque".to_owned());
    if kind.is_empty() {
        *kind = "Opaque".to_owned();
    }
    let data = secret.data.clone().unwrap_or_default();
    let mut total = 0usize;
    for (key, value) in &data {
        secret_key(&format!("data[{key:?}]"), key)?;
        total += value.0.len();
    }
    if total > MAX_SECRET_BYTES {
        return bad(
            "data",
            format!("too long: {total} bytes, a Secret holds at most {MAX_SECRET_BYTES}"),
        );
    }
    let need = |key: &str| -> Check {
        if data.contains_key(key) {
            Ok(())
        } else {
            bad(format!("data[{key}]"), "missing: required for this type")
        }
    };
    match secret.type_.as_deref().unwrap_or_default() {
        "kubernetes.io/tls" => {
            need("tls.crt")?;
            need("tls.key")
        }
        "kubernetes.io/ssh-auth" => need("ssh-privatekey"),
        "kubernetes.io/basic-auth"
            if !data.contains_key("username") && !data.contains_key("password") =>
        {
            bad(
                "data",
                "must have at least one of username or password for type kubernetes.io/basic-auth",
            )
        }
        "kubernetes.io/dockercfg" => docker_json(&data, ".dockercfg"),
        "kubernetes.io/dockerconfigjson" => docker_json(&data, ".dockerconfigjson"),
        "kubernetes.io/service-account-token" => {
            let named = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .is_some_and(|n| !n.is_empty());
            if named {
                Ok(())
            } else {
                bad(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "missing: required for type kubernetes.io/service-account-token",
                )
            }
        }
        _ => Ok(()),
    }
}

fn docker_json(
    data: &std::collections::BTreeMap<String, k8s_openapi::ByteString>,
    key: &str,
) -> Check {
    match data.get(key) {
        None => bad(format!("data[{key}]"), "missing: required for this type"),
        Some(v) if serde_json::from_slice::<serde_json::Value>(&v.0).is_err() => {
            bad(format!("data[{key}]"), "not valid JSON")
        }
        Some(_) => Ok(()),
    }
}

/// A key of `data`/`stringData`: kube-apiserver's config-key rule (it
/// becomes a file name when the Secret is mounted).
fn secret_key(field: &str, key: &str) -> Check {
    let why = if key.is_empty() || key.len() > 253 {
        Some("must be 1 to 253 characters")
    } else if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some("must consist of alphanumeric characters, '-', '_' or '.'")
    } else if key == "." || key == ".." || key.starts_with("..") {
        Some("must not be '.' or '..' nor start with '..'")
    } else {
        None
    };
    match why {
        Some(why) => bad(field, format!("{key:?} is not a valid key: {why}")),
        None => Ok(()),
    }
}

/// `metadata.name` by the rule kube-apiserver applies to the kind.
fn object_name(kind: Kind, name: &str) -> Check {
    if name.is_empty() {
        return bad("metadata.name", "missing: every object needs a name");
    }
    let valid = match kind {
        // A Service name is a DNS label that starts with a letter (RFC 1035):
        // it becomes environment variable names as well as DNS names.
        Kind::Service => dns1035_label(name),
        Kind::Namespace => dns_label(name),
        Kind::ClusterNetworkPolicy
        | Kind::Deployment
        | Kind::EndpointSlice
        | Kind::Endpoints
        | Kind::Gateway
        | Kind::GatewayClass
        | Kind::HTTPRoute
        | Kind::ReferenceGrant
        | Kind::Ingress
        | Kind::IngressClass
        | Kind::NetworkPolicy
        | Kind::Node
        | Kind::Pod
        | Kind::Secret => dns_subdomain(name),
    };
    if let Err(why) = valid {
        return bad("metadata.name", format!("{name:?} {why}"));
    }
    Ok(())
}

/// Default and validate a Pod's spec before it is stored compact; its name
/// is checked first, as [`metadata`] checks every object's.
pub(crate) fn pod(pod: &mut Pod) -> Check {
    object_name(Kind::Pod, pod.metadata.name.as_deref().unwrap_or_default())?;
    let key = ObjectKey::new(
        Kind::Pod,
        pod.metadata
            .namespace
            .as_deref()
            .filter(|ns| !ns.is_empty())
            .unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default(),
    );
    match pod.spec.as_mut() {
        Some(spec) => pod_spec(spec, "spec", &key)?,
        None => return bad("spec", "missing: a Pod needs spec.containers"),
    }
    if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        if let Err(why) = dns_subdomain(node) {
            return bad("spec.nodeName", format!("{node:?} {why}"));
        }
    }
    // The pod's addresses become endpoints of the Services that select it:
    // the same rule as for endpoints written by hand.
    let status = pod.status.as_ref();
    if let Some(ip) = status
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|ip| !ip.is_empty())
    {
        endpoint_ip("status.podIP".into(), ip)?;
    }
    let pod_ips = status
        .and_then(|s| s.pod_ips.as_deref())
        .unwrap_or_default();
    for (i, ip) in pod_ips.iter().enumerate() {
        endpoint_ip(format!("status.podIPs[{i}].ip"), &ip.ip)?;
    }
    Ok(())
}

/// IANA service name: how named ports are spelled (`http`, `dns-tcp`).
fn port_name(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 15 {
        return Err("must be 1 to 15 characters");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        return Err("may contain only lower case letters, digits and '-'");
    }
    if !b.iter().any(|c| c.is_ascii_lowercase()) {
        return Err("must contain at least one letter");
    }
    if b[0] == b'-' || b[b.len() - 1] == b'-' || s.contains("--") {
        return Err("must not start or end with '-' nor contain '--'");
    }
    Ok(())
}

fn port_number(field: String, port: i32) -> Check {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        bad(field, format!("{port} is not a port number (1-65535)"))
    }
}

fn protocol(field: String, protocol: &mut Option<String>) -> Check {
    let p = protocol.get_or_insert_with(|| "TCP".to_owned());
    match p.as_str() {
        "TCP" | "UDP" | "SCTP" => Ok(()),
        other => bad(
            field,
            format!("unsupported protocol {other:?}: use TCP, UDP or SCTP"),
        ),
    }
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Check {
    if allowed.contains(&value) {
        Ok(())
    } else {
        bad(
            field,
            format!(
                "unsupported value {value:?}: use one of {}",
                allowed.join(", ")
            ),
        )
    }
}

pub(crate) fn service(svc: &mut Service) -> Check {
    service_spec(svc)?;
    load_balancer_status(svc)
}

/// `status.loadBalancer.ingress` as kube-apiserver checks it: the proxy sends
/// traffic for these addresses, so junk is refused rather than skipped.
fn load_balancer_status(svc: &Service) -> Check {
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for (i, ingress) in ingress.into_iter().flatten().enumerate() {
        let at = |f: &str| format!("status.loadBalancer.ingress[{i}].{f}");
        let ip = ingress.ip.as_deref().filter(|ip| !ip.is_empty());
        if let Some(ip) = ip {
            if ip.parse::<IpAddr>().is_err() {
                return bad(at("ip"), format!("{ip:?} must be an IP address"));
            }
        }
        if let Some(host) = ingress.hostname.as_deref().filter(|h| !h.is_empty()) {
            if host.parse::<IpAddr>().is_ok() {
                return bad(
                    at("hostname"),
                    format!("{host:?} must be a DNS name, not an IP address"),
                );
            }
            if let Err(why) = dns_subdomain(host) {
                return bad(at("hostname"), format!("{host:?} {why}"));
            }
        }
        if let Some(mode) = ingress.ip_mode.as_deref() {
            if ip.is_none() {
                return bad(at("ipMode"), "may only be set when ip is set");
            }
            one_of(&at("ipMode"), mode, &["VIP", "Proxy"])?;
        }
    }
    Ok(())
}

/// The legacy annotation that `spec.loadBalancerSourceRanges` replaced; the
/// API server still validates it.
pub const ANNOTATION_LB_SOURCE_RANGES: &str =
    "service.beta.kubernetes.io/load-balancer-source-ranges";

/// `spec.loadBalancerSourceRanges` (or, when that is empty, the annotation)
/// must be CIDRs, and only on load balancers, as kube-apiserver requires. A
/// range the proxy could not read would otherwise leave the LB open.
fn source_ranges(
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    ty: &str,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> Check {
    let ranges = spec
        .load_balancer_source_ranges
        .as_deref()
        .unwrap_or_default();
    let annotation = annotations
        .and_then(|a| a.get(ANNOTATION_LB_SOURCE_RANGES))
        .filter(|v| !v.trim().is_empty());
    let (field, list): (String, Vec<&str>) = if !ranges.is_empty() {
        (
            "spec.loadBalancerSourceRanges".into(),
            ranges.iter().map(String::as_str).collect(),
        )
    } else if let Some(value) = annotation {
        (
            format!("metadata.annotations[{ANNOTATION_LB_SOURCE_RANGES}]"),
            value.split(',').collect(),
        )
    } else {
        return Ok(());
    };
    if ty != "LoadBalancer" {
        return bad(
            field,
            format!("may only be used when type is LoadBalancer, not {ty}"),
        );
    }
    for (i, range) in list.iter().enumerate() {
        if range.trim().parse::<ipnet::IpNet>().is_err() {
            let at = if ranges.is_empty() {
                field.clone()
            } else {
                format!("{field}[{i}]")
            };
            return bad(
                at,
                format!("{range:?} is not an IP range such as 10.240.0.0/24"),
            );
        }
    }
    Ok(())
}

/// `spec.ipFamilies` and `spec.ipFamilyPolicy` spelled as the API allows;
/// which families a Service gets is the allocator's business.
fn ip_families(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> Check {
    let families = spec.ip_families.as_deref().unwrap_or_default();
    for (i, family) in families.iter().enumerate() {
        one_of(&format!("spec.ipFamilies[{i}]"), family, &["IPv4", "IPv6"])?;
    }
    if families.len() > 2 || (families.len() == 2 && families[0] == families[1]) {
        return bad(
            "spec.ipFamilies",
            "at most one of each family, IPv4 and IPv6",
        );
    }
    if spec.cluster_ips.as_ref().is_some_and(|ips| ips.len() > 2) {
        return bad("spec.clusterIPs", "at most two addresses, one per family");
    }
    if let Some(policy) = spec.ip_family_policy.as_deref() {
        one_of(
            "spec.ipFamilyPolicy",
            policy,
            &["SingleStack", "PreferDualStack", "RequireDualStack"],
        )?;
        if policy == "SingleStack" && families.len() == 2 {
            return bad(
                "spec.ipFamilyPolicy",
                "SingleStack allows one family, but spec.ipFamilies lists two",
            );
        }
    }
    Ok(())
}

/// An address that traffic is sent to (an endpoint or an external IP), as
/// kube-apiserver's ValidateEndpointIP has it: not unspecified, loopback or
/// link-local — 169.254.169.254 is the cloud metadata service, and 127.0.0.1
/// would capture the node's own loopback traffic — and, stricter than the
/// API server (which refuses link-local multicast only), not multicast.
fn endpoint_ip(field: String, text: &str) -> Check {
    let Ok(ip) = text.parse::<IpAddr>() else {
        return bad(field, format!("{text:?} must be an IP address"));
    };
    // An IPv4-mapped IPv6 address is the IPv4 address to the kernel.
    let why = match ip.to_canonical() {
        ip if ip.is_unspecified() => "may not be unspecified (0.0.0.0, ::)",
        ip if ip.is_loopback() => "may not be in the loopback range (127.0.0.0/8, ::1/128)",
        IpAddr::V4(v4) if v4.is_link_local() => {
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
        }
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
        }
        ip if ip.is_multicast() => "may not be a multicast address (224.0.0.0/4, ff00::/8)",
        _ => return Ok(()),
    };
    bad(field, format!("{text:?} {why}"))
}

fn service_spec(svc: &mut Service) -> Check {
    let Some(spec) = svc.spec.as_mut() else {
        return bad(
            "spec",
            "missing: a Service needs spec.ports (or type ExternalName)",
        );
    };
    let ty = spec
        .type_
        .get_or_insert_with(|| "ClusterIP".to_owned())
        .clone();
    one_of(
        "spec.type",
        &ty,
        &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
    )?;
    let external_name = ty == "ExternalName";
    if external_name {
        match spec.external_name.as_deref() {
            Some(n) if !n.is_empty() => {
                if let Err(why) = dns_subdomain(n.trim_end_matches('.')) {
                    return bad("spec.externalName", format!("{n:?} {why}"));
                }
            }
            _ => return bad("spec.externalName", "required when type is ExternalName"),
        }
        if spec.cluster_ip.as_deref().is_some_and(|ip| !ip.is_empty()) {
            return bad("spec.clusterIP", "may not be set when type is ExternalName");
        }
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let headless_or_external = headless || external_name;
    if let Some(ip) = spec.cluster_ip.as_deref() {
        if !ip.is_empty() && ip != "None" && ip.parse::<IpAddr>().is_err() {
            return bad(
                "spec.clusterIP",
                format!("{ip:?} must be an IP address, \"None\" or empty"),
            );
        }
    }
    if headless && ty != "ClusterIP" {
        return bad(
            "spec.clusterIP",
            format!("may not be None when type is {ty}"),
        );
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        endpoint_ip(format!("spec.externalIPs[{i}]"), ip)?;
    }
    for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
        if ip != "None" && ip.parse::<IpAddr>().is_err() {
            return bad(
                format!("spec.clusterIPs[{i}]"),
                format!("{ip:?} must be an IP address or \"None\""),
            );
        }
    }
    if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|ip| !ip.is_empty()) {
        if ip.parse::<IpAddr>().is_err() {
            return bad(
                "spec.loadBalancerIP",
                format!("{ip:?} must be an IP address"),
            );
        }
    }
    ip_families(spec)?;
    source_ranges(spec, &ty, svc.metadata.annotations.as_ref())?;

    let affinity = spec
        .session_affinity
        .get_or_insert_with(|| "None".to_owned())
        .clone();
    one_of("spec.sessionAffinity", &affinity, &["None", "ClientIP"])?;
    if affinity == "ClientIP" {
        let cfg = spec
            .session_affinity_config
            .get_or_insert_with(SessionAffinityConfig::default);
        let client = cfg.client_ip.get_or_insert_with(ClientIPConfig::default);
        let timeout = *client.timeout_seconds.get_or_insert(10800);
        if !(1..=86400).contains(&timeout) {
            return bad(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                format!("{timeout} must be between 1 and 86400"),
            );
        }
    }
    if !external_name {
        let p = spec
            .internal_traffic_policy
            .get_or_insert_with(|| "Cluster".to_owned());
        one_of("spec.internalTrafficPolicy", p, &["Cluster", "Local"])?;
    }
    let node_ports_allowed = ty == "NodePort" || ty == "LoadBalancer";
    if node_ports_allowed {
        let p = spec
            .external_traffic_policy
            .get_or_insert_with(|| "Cluster".to_owned());
        one_of("spec.externalTrafficPolicy", p, &["Cluster", "Local"])?;
    } else if spec.external_traffic_policy.is_some() {
        return bad(
            "spec.externalTrafficPolicy",
            format!("may only be set when type is NodePort or LoadBalancer, not {ty}"),
        );
    }
    if ty == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    } else if spec.allocate_load_balancer_node_ports.is_some() {
        return bad(
            "spec.allocateLoadBalancerNodePorts",
            "may only be set when type is LoadBalancer",
        );
    }
    let local_lb = ty == "LoadBalancer" && spec.external_traffic_policy.as_deref() == Some("Local");
    if spec.health_check_node_port.is_some_and(|p| p != 0) && !local_lb {
        return bad(
            "spec.healthCheckNodePort",
            "may only be set for type LoadBalancer with externalTrafficPolicy Local",
        );
    }
    if let Some(port) = spec.health_check_node_port.filter(|p| *p != 0) {
        port_number("spec.healthCheckNodePort".into(), port)?;
    }
    if let Some(selector) = &spec.selector {
        if let Err(e) = Selector::from_map(selector) {
            return bad("spec.selector", e.to_string());
        }
    }

    if spec.ports.as_ref().is_some_and(Vec::is_empty) {
        spec.ports = None;
    }
    if spec.ports.is_none() && !headless_or_external {
        return bad(
            "spec.ports",
            "required: a Service with a cluster IP needs at least one port",
        );
    }
    let ports = spec.ports.as_deref_mut().unwrap_or_default();
    let many = ports.len() > 1;
    let mut names = std::collections::BTreeSet::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, port) in ports.iter_mut().enumerate() {
        let at = |f: &str| format!("spec.ports[{i}].{f}");
        port_number(at("port"), port.port)?;
        protocol(at("protocol"), &mut port.protocol)?;
        let name = port.name.clone().unwrap_or_default();
        if many && name.is_empty() {
            return bad(at("name"), "required when a Service has more than one port");
        }
        if !name.is_empty() {
            if let Err(why) = dns_label(&name) {
                return bad(at("name"), format!("{name:?} {why}"));
            }
            if !names.insert(name.clone()) {
                return bad(
                    at("name"),
                    format!("{name:?} is used by another port of this Service"),
                );
            }
        }
        let proto = port.protocol.clone().unwrap_or_default();
        if !seen.insert((port.port, proto.clone())) {
            return bad(at("port"), format!("{}/{proto} is listed twice", port.port));
        }
        match port.target_port.get_or_insert(IntOrString::Int(port.port)) {
            IntOrString::Int(0) => port.target_port = Some(IntOrString::Int(port.port)),
            IntOrString::Int(n) => port_number(at("targetPort"), *n)?,
            IntOrString::String(s) => {
                if let Err(why) = port_name(s) {
                    return bad(
                        at("targetPort"),
                        format!("{s:?} is neither a port number nor a port name: {why}"),
                    );
                }
            }
        }
        match port.node_port {
            Some(0) | None => port.node_port = None,
            Some(n) if !node_ports_allowed => {
                return bad(
                    at("nodePort"),
                    format!("{n} may only be set when type is NodePort or LoadBalancer, not {ty}"),
                )
            }
            Some(n) => port_number(at("nodePort"), n)?,
        }
    }
    Ok(())
}

/// `who` names the Pod or Deployment in warnings.
pub(crate) fn pod_spec(spec: &mut PodSpec, at: &str, who: &ObjectKey) -> Check {
    if spec.containers.is_empty() {
        return bad(
            format!("{at}.containers"),
            "required: a Pod needs at least one container",
        );
    }
    spec.restart_policy
        .get_or_insert_with(|| "Always".to_owned());
    one_of(
        &format!("{at}.restartPolicy"),
        spec.restart_policy.as_deref().unwrap_or_default(),
        &["Always", "OnFailure", "Never"],
    )?;
    spec.dns_policy
        .get_or_insert_with(|| "ClusterFirst".to_owned());
    spec.termination_grace_period_seconds.get_or_insert(30);
    if let Some(h) = &spec.hostname {
        if let Err(why) = dns_label(h) {
            return bad(format!("{at}.hostname"), format!("{h:?} {why}"));
        }
    }
    if let Some(s) = &spec.subdomain {
        if let Err(why) = dns_label(s) {
            return bad(format!("{at}.subdomain"), format!("{s:?} {why}"));
        }
    }
    // Port names are unique per container (kube-apiserver); across the
    // containers of a pod the API server only warns, and a named port then
    // means the first one found (see `CompactPod::container_port_by_name`).
    let mut pod_names = std::collections::BTreeMap::new();
    let groups: [(&str, &mut Vec<Container>); 2] = [
        ("containers", &mut spec.containers),
        (
            "initContainers",
            spec.init_containers.get_or_insert_with(Vec::new),
        ),
    ];
    // Container names become file names in the lab: labels, one per pod.
    let mut containers_seen = std::collections::BTreeSet::new();
    for (group, containers) in groups {
        for (c, container) in containers.iter_mut().enumerate() {
            let field = format!("{at}.{group}[{c}].name");
            if let Err(why) = dns_label(&container.name) {
                return bad(field, format!("{:?} {why}", container.name));
            }
            if !containers_seen.insert(container.name.clone()) {
                return bad(
                    field,
                    format!(
                        "{:?} is the name of another container of this pod",
                        container.name
                    ),
                );
            }
            let mut names = std::collections::BTreeSet::new();
            for (p, port) in container.ports.iter_mut().flatten().enumerate() {
                let field = |f: &str| format!("{at}.{group}[{c}].ports[{p}].{f}");
                port_number(field("containerPort"), port.container_port)?;
                protocol(field("protocol"), &mut port.protocol)?;
                if let Some(hp) = port.host_port.filter(|hp| *hp != 0) {
                    port_number(field("hostPort"), hp)?;
                }
                if let Some(name) = &port.name {
                    if let Err(why) = port_name(name) {
                        return bad(field("name"), format!("{name:?} {why}"));
                    }
                    if !names.insert(name.clone()) {
                        return bad(
                            field("name"),
                            format!("{name:?} is used by another port of this container"),
                        );
                    }
                    let here = format!("{at}.{group}[{c}].ports[{p}]");
                    match pod_names.get(name) {
                        Some(first) => tracing::warn!(
                            "{who}: {here}: port name {name:?} is also used by {first}; \
                             Services and probes that select the port by name use the first"
                        ),
                        None => {
                            pod_names.insert(name.clone(), here);
                        }
                    }
                }
            }
        }
    }
    if spec.init_containers.as_ref().is_some_and(Vec::is_empty) {
        spec.init_containers = None;
    }
    Ok(())
}

/// Families of a headless Service without a selector, as kube-apiserver's
/// allocator gives them: such a Service gets no address and its endpoints
/// are whatever someone writes, so it is not bound to the families of the
/// cluster's service CIDRs (prometheus-operator's `kubelet` Service asks for
/// RequireDualStack on single-stack clusters). `primary` is the cluster's
/// first family. Defaults in place; the enums were checked at admission.
pub(crate) fn selectorless_headless_families(
    spec: &mut k8s_openapi::api::core::v1::ServiceSpec,
    primary: &str,
) {
    let families = spec.ip_families.get_or_insert_with(Vec::new);
    if families.is_empty() {
        families.push(primary.to_owned());
    }
    let policy = spec.ip_family_policy.get_or_insert_with(|| {
        if families.len() == 2 {
            "RequireDualStack".to_owned()
        } else {
            "SingleStack".to_owned()
        }
    });
    if policy != "SingleStack" && families.len() == 1 {
        let other = if families[0] == "IPv4" {
            "IPv6"
        } else {
            "IPv4"
        };
        families.push(other.to_owned());
    }
}

/// The most pods strait's Deployment controller creates for one Deployment.
/// kube-apiserver takes any int32, but a real cluster is bounded by its nodes
/// (Kubernetes supports 150,000 pods per cluster); strait materialises every
/// pod in memory, so `replicas: 2000000000` must be refused, not attempted.
pub const MAX_REPLICAS: i32 = 10_000;

/// The most pods the standalone controllers create for all Deployments
/// together, so that many Deployments cannot do what one may not. A pod
/// takes a few KB: this keeps `render` and the lab well under a gigabyte.
pub const MAX_CONTROLLER_PODS: u64 = 100_000;

/// Counts the pods the Deployment controller is about to create against
/// [`MAX_CONTROLLER_PODS`], before it creates them.
#[derive(Debug, Default)]
pub(crate) struct PodBudget {
    taken: u64,
}

impl PodBudget {
    /// Take `replicas` pods from the budget, or say why not (the message for
    /// the Deployment's `spec.replicas`).
    pub(crate) fn take(&mut self, replicas: i32) -> Result<(), String> {
        let wanted = u64::try_from(replicas).unwrap_or(0);
        if wanted > MAX_REPLICAS as u64 {
            return Err(format!(
                "{replicas} is more than the {MAX_REPLICAS} pods strait creates for one Deployment"
            ));
        }
        if self.taken + wanted > MAX_CONTROLLER_PODS {
            return Err(format!(
                "{replicas} more pods would make {} for all Deployments together, more than strait creates ({MAX_CONTROLLER_PODS})",
                self.taken + wanted
            ));
        }
        self.taken += wanted;
        Ok(())
    }
}

pub(crate) fn deployment(d: &mut Deployment) -> Check {
    let key = ObjectKey::new(
        Kind::Deployment,
        d.metadata.namespace.as_deref().unwrap_or_default(),
        d.metadata.name.as_deref().unwrap_or_default(),
    );
    let Some(spec) = d.spec.as_mut() else {
        return bad(
            "spec",
            "missing: a Deployment needs spec.selector and spec.template",
        );
    };
    let replicas = *spec.replicas.get_or_insert(1);
    if replicas < 0 {
        return bad("spec.replicas", format!("{replicas} must not be negative"));
    }
    if replicas > MAX_REPLICAS {
        return bad(
            "spec.replicas",
            format!(
                "{replicas} is more than the {MAX_REPLICAS} pods strait creates for one Deployment"
            ),
        );
    }
    let selector = match Selector::from_label_selector(&spec.selector) {
        Ok(selector) => selector,
        Err(e) => return bad("spec.selector", e.to_string()),
    };
    if selector.is_empty() {
        return bad(
            "spec.selector",
            "empty: a Deployment must select its pods by label",
        );
    }
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if let Err(e) = Selector::from_map(&labels) {
        return bad("spec.template.metadata.labels", e.to_string());
    }
    if !selector.matches(&labels) {
        return bad(
            "spec.template.metadata.labels",
            "do not match spec.selector: the Deployment would not own its own pods",
        );
    }
    match spec.template.spec.as_mut() {
        Some(pod) => pod_spec(pod, "spec.template.spec", &key),
        None => bad(
            "spec.template.spec",
            "missing: the pod template needs containers",
        ),
    }
}

pub(crate) fn endpoints(e: &mut Endpoints) -> Check {
    for (s, subset) in e.subsets.iter_mut().flatten().enumerate() {
        let lists = [
            ("addresses", subset.addresses.iter().flatten()),
            (
                "notReadyAddresses",
                subset.not_ready_addresses.iter().flatten(),
            ),
        ];
        for (list, addresses) in lists {
            for (a, address) in addresses.enumerate() {
                endpoint_ip(format!("subsets[{s}].{list}[{a}].ip"), &address.ip)?;
                if let Some(h) = address.hostname.as_deref().filter(|h| !h.is_empty()) {
                    if let Err(why) = dns_label(h) {
                        return bad(
                            format!("subsets[{s}].{list}[{a}].hostname"),
                            format!("{h:?} {why}"),
                        );
                    }
                }
            }
        }
        for (p, port) in subset.ports.iter_mut().flatten().enumerate() {
            port_number(format!("subsets[{s}].ports[{p}].port"), port.port)?;
            if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                if let Err(why) = dns_label(name) {
                    return bad(
                        format!("subsets[{s}].ports[{p}].name"),
                        format!("{name:?} {why}"),
                    );
                }
            }
            protocol(
                format!("subsets[{s}].ports[{p}].protocol"),
                &mut port.protocol,
            )?;
        }
    }
    Ok(())
}

pub(crate) fn endpoint_slice(s: &mut EndpointSlice) -> Check {
    one_of("addressType", &s.address_type, &["IPv4", "IPv6", "FQDN"])?;
    if s.endpoints.len() > 1000 {
        return bad(
            "endpoints",
            format!("{} endpoints: at most 1000 are allowed", s.endpoints.len()),
        );
    }
    for (i, endpoint) in s.endpoints.iter().enumerate() {
        if endpoint.addresses.is_empty() || endpoint.addresses.len() > 100 {
            return bad(
                format!("endpoints[{i}].addresses"),
                format!(
                    "{} addresses: at least one and at most 100 are allowed",
                    endpoint.addresses.len()
                ),
            );
        }
        for (a, address) in endpoint.addresses.iter().enumerate() {
            let field = format!("endpoints[{i}].addresses[{a}]");
            let ok = match s.address_type.as_str() {
                "IPv4" => address.parse::<std::net::Ipv4Addr>().is_ok(),
                // An IPv4-mapped address is IPv4, not IPv6.
                "IPv6" => address
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|ip| ip.to_ipv4_mapped().is_none()),
                _ => dns_subdomain(address).is_ok(),
            };
            if !ok {
                return bad(
                    field,
                    format!("{address:?} is not a valid {} address", s.address_type),
                );
            }
            if s.address_type != "FQDN" {
                endpoint_ip(field, address)?;
            }
        }
        if let Some(h) = endpoint.hostname.as_deref() {
            if let Err(why) = dns_label(h) {
                return bad(format!("endpoints[{i}].hostname"), format!("{h:?} {why}"));
            }
        }
        if let Some(node) = endpoint.node_name.as_deref() {
            if let Err(why) = dns_subdomain(node) {
                return bad(
                    format!("endpoints[{i}].nodeName"),
                    format!("{node:?} {why}"),
                );
            }
        }
    }
    if s.ports.as_ref().is_some_and(|p| p.len() > 20000) {
        return bad("ports", "at most 20000 ports are allowed");
    }
    for (p, port) in s.ports.iter_mut().flatten().enumerate() {
        if let Some(n) = port.port {
            port_number(format!("ports[{p}].port"), n)?;
        }
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            if let Err(why) = dns_label(name) {
                return bad(format!("ports[{p}].name"), format!("{name:?} {why}"));
            }
        }
        protocol(format!("ports[{p}].protocol"), &mut port.protocol)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::manifest::{parse_str, Format};
    use crate::{Loaded, Object};

    fn parse(yaml: &str) -> crate::Result<Loaded> {
        parse_str("test.yaml", yaml, Format::Yaml)
    }

    fn refused(yaml: &str) -> String {
        match parse(yaml) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    }

    fn service_in(namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {namespace}}}\nspec: {{ports: [{{port: 80}}]}}\n"
        )
    }

    // ---- Secrets ----

    #[test]
    fn tls_secrets_need_both_keys_and_string_data_is_merged() {
        let tls = |data: &str| {
            format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: cert}}\ntype: kubernetes.io/tls\n{data}")
        };
        let err = refused(&tls("data: {tls.crt: YQ==}\n"));
        assert!(
            err.ends_with("data[tls.key]: missing: required for this type"),
            "{err}"
        );
        let err = refused(&tls("stringData: {tls.key: k}\n"));
        assert!(err.contains("data[tls.crt]: missing"), "{err}");
        let loaded = parse(&tls(
            "data: {tls.crt: YQ==, tls.key: YQ==}\nstringData: {tls.key: k}\n",
        ))
        .unwrap();
        let Object::Secret(secret) = &loaded.objects[0].0 else {
            panic!("not a Secret")
        };
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data["tls.crt"].0, b"a");
        assert_eq!(data["tls.key"].0, b"k", "stringData wins over data");
        assert!(secret.string_data.is_none());
        // Untyped is Opaque, which needs nothing.
        let opaque = parse("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n").unwrap();
        let Object::Secret(secret) = &opaque.objects[0].0 else {
            panic!("not a Secret")
        };
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        let err =
            refused("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {'../x': v}\n");
        assert!(
            err.contains("stringData[\"../x\"]: \"../x\" is not a valid key"),
            "{err}"
        );
        let big = "QUFB".repeat(400_000);
        let err = refused(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata: {{a: {big}}}\n"
        ));
        assert!(err.contains("data: too long: 1200000 bytes"), "{err}");
    }

    // ---- names and namespaces ----

    #[test]
    fn namespaces_must_be_dns_labels_for_every_namespaced_kind() {
        let long = "a".repeat(300);
        for bad in [
            "'a\"b'",
            "'a b'",
            "'UPPER'",
            "'-a'",
            long.as_str(),
            "'x;flush ruleset'",
        ] {
            let err = refused(&service_in(bad));
            assert!(
                err.contains("document 1 (Service ") && err.contains("): metadata.namespace: "),
                "{err}"
            );
        }
        let err = refused(&service_in(&long));
        assert!(err.contains("is longer than 63 characters"), "{err}");
        let err = refused(&service_in("'a b'"));
        assert!(
            err.ends_with("metadata.namespace: \"a b\" must consist of lower case alphanumeric characters or '-', and start and end with an alphanumeric character"),
            "{err}"
        );
        // Every namespaced kind, not only Services.
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: 'a/b'}\nspec: {containers: [{name: c}]}\n";
        // Printed quoted: `a/b/p` would not say where the namespace ends.
        assert!(refused(pod).contains("(Pod \"a/b\"/p): metadata.namespace: "));
        let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, namespace: '../x'}\naddressType: IPv4\nendpoints: []\n";
        assert!(refused(slice).contains("metadata.namespace: \"../x\""));
        // 63 characters is a label still.
        parse(&service_in(&"a".repeat(63))).unwrap();
    }

    #[test]
    fn names_follow_the_rule_of_their_kind() {
        // Services: RFC 1035 labels (a leading digit is refused).
        let svc = |name: &str| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: '{name}'}}\nspec: {{ports: [{{port: 80}}]}}\n")
        };
        let err = refused(&svc("1web"));
        assert!(
            err.contains("metadata.name: \"1web\" must start with a lower case letter"),
            "{err}"
        );
        assert!(refused(&svc("a.b")).contains("metadata.name: \"a.b\""));
        parse(&svc("web-1")).unwrap();
        // Pods and Deployments: subdomains (dots and leading digits are fine).
        let pod = |name: &str| {
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: '{name}'}}\nspec: {{containers: [{{name: c}}]}}\n")
        };
        parse(&pod("1.web")).unwrap();
        assert!(refused(&pod("a_b")).contains("(Pod default/a_b): metadata.name: "));
        // Namespaces: labels.
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}\n";
        assert!(refused(ns).contains("(Namespace a.b): metadata.name: "));
    }

    #[test]
    fn namespaces_carry_their_name_label() {
        let loaded = parse(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: dev\n  labels: {kubernetes.io/metadata.name: other, team: a}\n",
        )
        .unwrap();
        let labels: Vec<_> = loaded
            .objects
            .iter()
            .map(|(o, _)| match o {
                Object::Namespace(ns) => ns.metadata.labels.clone().unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(labels[0].get(super::LABEL_METADATA_NAME).unwrap(), "shop");
        assert_eq!(labels[1].get(super::LABEL_METADATA_NAME).unwrap(), "dev");
        assert_eq!(labels[1].get("team").unwrap(), "a");
    }

    // ---- addresses ----

    fn lb(spec: &str, status: &str) -> String {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: lb}}\nspec: {{type: LoadBalancer, ports: [{{port: 80}}], {spec}}}\n{status}")
    }

    #[test]
    fn external_ips_on_special_addresses_are_refused() {
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("127.3.2.1", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.251", "multicast"),
            ("ff02::fb", "multicast"),
        ] {
            let err = refused(&lb(&format!("externalIPs: ['{ip}']"), ""));
            assert!(
                err.contains("(Service default/lb): spec.externalIPs[0]: ") && err.contains(why),
                "{ip}: {err}"
            );
        }
        parse(&lb("externalIPs: ['192.0.2.7', '2001:db8::7']", "")).unwrap();
    }

    #[test]
    fn endpoint_addresses_on_special_addresses_are_refused() {
        let slice = |ty: &str, ip: &str| {
            format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s}}\naddressType: {ty}\nendpoints: [{{addresses: ['{ip}']}}]\n")
        };
        for (ty, ip) in [
            ("IPv4", "127.0.0.1"),
            ("IPv4", "169.254.169.254"),
            ("IPv6", "fe80::1"),
            ("IPv6", "::1"),
            ("IPv4", "0.0.0.0"),
        ] {
            let err = refused(&slice(ty, ip));
            assert!(
                err.contains("(EndpointSlice default/s): endpoints[0].addresses[0]: "),
                "{err}"
            );
        }
        // An IPv4-mapped address is not an IPv6 address.
        assert!(refused(&slice("IPv6", "::ffff:10.0.0.1")).contains("is not a valid IPv6 address"));
        parse(&slice("IPv4", "10.244.1.5")).unwrap();

        let endpoints = |list: &str, ip: &str| {
            format!("apiVersion: v1\nkind: Endpoints\nmetadata: {{name: e}}\nsubsets: [{{{list}: [{{ip: '{ip}'}}], ports: [{{port: 80}}]}}]\n")
        };
        let err = refused(&endpoints("addresses", "169.254.169.254"));
        assert!(err.contains("(Endpoints default/e): subsets[0].addresses[0].ip: \"169.254.169.254\" may not be in the link-local range"), "{err}");
        let err = refused(&endpoints("notReadyAddresses", "127.0.0.1"));
        assert!(
            err.contains("subsets[0].notReadyAddresses[0].ip: "),
            "{err}"
        );
        parse(&endpoints("addresses", "10.1.2.3")).unwrap();
    }

    #[test]
    fn load_balancer_ips_must_be_ips() {
        let err = refused(&lb("loadBalancerIP: 'not-an-ip'", ""));
        assert!(
            err.contains(
                "(Service default/lb): spec.loadBalancerIP: \"not-an-ip\" must be an IP address"
            ),
            "{err}"
        );
        let status = |ip: &str| {
            lb(
                "",
                &format!(
                    "status: {{loadBalancer: {{ingress: [{{ip: 192.0.2.1}}, {{ip: '{ip}'}}]}}}}\n"
                ),
            )
        };
        let err = refused(&status("192.0.2.300"));
        assert!(err.contains("(Service default/lb): status.loadBalancer.ingress[1].ip: \"192.0.2.300\" must be an IP address"), "{err}");
        parse(&status("2001:db8::1")).unwrap();
        let host = lb(
            "",
            "status: {loadBalancer: {ingress: [{hostname: 'a b'}]}}\n",
        );
        assert!(refused(&host).contains("status.loadBalancer.ingress[0].hostname: "));
        let mode = lb(
            "",
            "status: {loadBalancer: {ingress: [{ip: 192.0.2.1, ipMode: Bridge}]}}\n",
        );
        assert!(refused(&mode).contains("status.loadBalancer.ingress[0].ipMode: "));
    }

    #[test]
    fn source_ranges_must_be_cidrs_on_load_balancers() {
        let err = refused(&lb(
            "loadBalancerSourceRanges: [10.0.0.0/8, '10.1.0.0/33']",
            "",
        ));
        assert!(err.contains("(Service default/lb): spec.loadBalancerSourceRanges[1]: \"10.1.0.0/33\" is not an IP range"), "{err}");
        assert!(refused(&lb("loadBalancerSourceRanges: [everyone]", ""))
            .contains("spec.loadBalancerSourceRanges[0]: "));
        // Overlapping ranges are valid in Kubernetes.
        parse(&lb(
            "loadBalancerSourceRanges: [10.0.0.0/8, ' 10.1.0.0/16 ', 'fd00::/8']",
            "",
        ))
        .unwrap();

        let annotated = |value: &str, ty: &str| {
            format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: lb\n  annotations: {{service.beta.kubernetes.io/load-balancer-source-ranges: '{value}'}}\nspec: {{type: {ty}, ports: [{{port: 80}}]}}\n")
        };
        let err = refused(&annotated("10.0.0.0/8, junk", "LoadBalancer"));
        assert!(err.contains("metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]: \" junk\" is not an IP range"), "{err}");
        parse(&annotated("10.0.0.0/8, 192.168.0.0/16", "LoadBalancer")).unwrap();
        let err = refused(&annotated("10.0.0.0/8", "ClusterIP"));
        assert!(
            err.contains("may only be used when type is LoadBalancer"),
            "{err}"
        );
        let err = refused("apiVersion: v1\nkind: Service\nmetadata: {name: c}\nspec: {ports: [{port: 80}], loadBalancerSourceRanges: [10.0.0.0/8]}\n");
        assert!(
            err.contains(
                "spec.loadBalancerSourceRanges: may only be used when type is LoadBalancer"
            ),
            "{err}"
        );
    }

    #[test]
    fn enums_and_bounds_that_reach_the_data_path() {
        let svc = |spec: &str| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec: {{ports: [{{port: 80}}], {spec}}}\n")
        };
        assert!(refused(&svc("ipFamilies: [IPv5]"))
            .contains("spec.ipFamilies[0]: unsupported value \"IPv5\""));
        assert!(refused(&svc("ipFamilies: [IPv4, IPv4]")).contains("spec.ipFamilies: "));
        assert!(refused(&svc("ipFamilyPolicy: Both")).contains("spec.ipFamilyPolicy: "));
        assert!(refused(&svc("clusterIPs: ['10.96.0.5', 'x']")).contains("spec.clusterIPs[1]: "));
        assert!(refused(&svc(
            "sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 86401}}"
        ))
        .contains("timeoutSeconds: 86401"));
        let lb = "type: LoadBalancer, externalTrafficPolicy: Local, healthCheckNodePort: 70000";
        assert!(refused(&svc(lb)).contains("spec.healthCheckNodePort: 70000 is not a port number"));
        let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1], hostname: 'a.b'}]\n";
        assert!(refused(slice).contains("endpoints[0].hostname: "));
        let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nendpoints: []\nports: [{name: 'a b', port: 80}]\n";
        assert!(refused(slice).contains("ports[0].name: "));
        let many: Vec<String> = (0..101)
            .map(|i| format!("10.0.{}.{}", i / 200, i % 200 + 1))
            .collect();
        let slice = format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s}}\naddressType: IPv4\nendpoints: [{{addresses: [{}]}}]\n", many.join(", "));
        assert!(refused(&slice)
            .contains("endpoints[0].addresses: 101 addresses: at least one and at most 100"));
    }

    // ---- bounds ----

    fn reconcile(loaded: Loaded) -> crate::Result<crate::ClusterState> {
        let state = crate::ClusterState::from_objects(
            loaded
                .objects
                .into_iter()
                .map(|(o, origin)| (o, Some(origin))),
        )?;
        crate::controllers::reconcile(state, None, &Default::default())
    }

    fn deployment(name: &str, replicas: &str) -> String {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: a}}}}\n  template:\n    metadata: {{labels: {{app: a}}}}\n    spec: {{containers: [{{name: c}}]}}\n")
    }

    #[test]
    fn replicas_are_bounded_before_any_pod_is_made() {
        let err = refused(&deployment("big", "2000000000"));
        assert!(
            err.contains(
                "(Deployment shop/big): spec.replicas: 2000000000 is more than the 10000 pods"
            ),
            "{err}"
        );
        let at_limit = deployment("ok", &super::MAX_REPLICAS.to_string());
        let state = reconcile(parse(&at_limit).unwrap()).unwrap();
        assert_eq!(state.pods.iter().count(), super::MAX_REPLICAS as usize);

        // An object that reached the controllers some other way is bounded
        // there too, before its pods are made.
        let mut loaded = parse(&deployment("big", "1")).unwrap();
        if let Object::Deployment(d) = &mut loaded.objects[0].0 {
            std::sync::Arc::make_mut(d).spec.as_mut().unwrap().replicas = Some(2_000_000_000);
        }
        let err = reconcile(loaded).unwrap_err().to_string();
        assert!(
            err.starts_with("Deployment shop/big (test.yaml, document 1): spec.replicas: "),
            "{err}"
        );
    }

    #[test]
    fn pods_of_all_deployments_together_are_bounded() {
        let mut budget = super::PodBudget::default();
        for _ in 0..super::MAX_CONTROLLER_PODS / super::MAX_REPLICAS as u64 {
            budget.take(super::MAX_REPLICAS).unwrap();
        }
        let err = budget.take(1).unwrap_err();
        assert!(err.contains("for all Deployments together"), "{err}");
        budget.take(0).unwrap();
    }

    // ---- what real clusters send ----

    #[test]
    fn a_port_name_may_repeat_across_containers_but_not_within_one() {
        // prometheus-operator: `reloader-web` in an init container and a
        // sidecar (an init container with restartPolicy Always).
        let pod = |init_policy: &str, second: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: prom}}\nspec:\n  initContainers:\n  - name: init\n    {init_policy}\n    ports: [{{name: reloader-web, containerPort: 8081}}]\n  containers:\n  - name: main\n    ports: [{{name: web, containerPort: 9090}}, {second}]\n  - name: reloader\n    ports: [{{name: reloader-web, containerPort: 8080}}]\n"
            )
        };
        let loaded = parse(&pod(
            "restartPolicy: Always",
            "{name: grpc, containerPort: 10901}",
        ))
        .unwrap();
        let Object::Pod(p) = &loaded.objects[0].0 else {
            panic!()
        };
        // Like kube's FindPort: containers first, then sidecars; first wins.
        assert_eq!(p.container_port_by_name("reloader-web", "TCP"), Some(8080));
        assert_eq!(p.container_port_by_name("web", "TCP"), Some(9090));

        let err = refused(&pod("", "{name: web, containerPort: 9091}"));
        assert!(
            err.contains("(Pod default/prom): spec.containers[0].ports[1].name: \"web\" is used by another port of this container"),
            "{err}"
        );
    }

    #[test]
    fn selectorless_headless_services_may_be_dual_stack_on_a_single_stack_cluster() {
        // prometheus-operator's `kubelet` Service.
        let kubelet = "apiVersion: v1\nkind: Service\nmetadata: {name: kubelet, namespace: kube-system}\nspec:\n  clusterIP: None\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n  ports: [{name: https-metrics, port: 10250}]\n";
        let state = reconcile(parse(kubelet).unwrap()).unwrap();
        let spec = state
            .services
            .get("kube-system", "kubelet")
            .unwrap()
            .spec
            .clone()
            .unwrap();
        assert_eq!(spec.ip_families.unwrap(), ["IPv4", "IPv6"]);
        assert_eq!(spec.cluster_ips.unwrap(), ["None"]);

        // The policy alone asks for both families, the primary one first.
        let policy_only = kubelet.replace("  ipFamilies: [IPv4, IPv6]\n", "");
        let state = reconcile(parse(&policy_only).unwrap()).unwrap();
        let spec = state
            .services
            .get("kube-system", "kubelet")
            .unwrap()
            .spec
            .clone()
            .unwrap();
        assert_eq!(spec.ip_families.unwrap(), ["IPv4", "IPv6"]);
        // Nothing asked: the primary family, single-stack.
        let plain = policy_only.replace("  ipFamilyPolicy: RequireDualStack\n", "");
        let state = reconcile(parse(&plain).unwrap()).unwrap();
        let spec = state
            .services
            .get("kube-system", "kubelet")
            .unwrap()
            .spec
            .clone()
            .unwrap();
        assert_eq!(
            (spec.ip_families.unwrap(), spec.ip_family_policy.unwrap()),
            (vec!["IPv4".to_owned()], "SingleStack".to_owned())
        );

        // With a selector, the endpoints are the cluster's pods: refused as before.
        let selected = kubelet.replace(
            "  clusterIP: None\n",
            "  clusterIP: None\n  selector: {app: a}\n",
        );
        let err = reconcile(parse(&selected).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.ipFamil"), "{err}");
        // SingleStack with two families is refused at admission.
        let single = kubelet.replace("RequireDualStack", "SingleStack");
        assert!(refused(&single).contains("spec.ipFamilyPolicy: SingleStack allows one family"));
    }

    #[test]
    fn pod_fields_that_reach_paths_and_endpoints_are_checked() {
        let pod = |spec: &str, status: &str| {
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {spec}\n{status}")
        };
        let err = refused(&pod("{containers: [{name: '../../etc/x'}]}", ""));
        assert!(
            err.contains("(Pod default/p): spec.containers[0].name: \"../../etc/x\""),
            "{err}"
        );
        let err = refused(&pod(
            "{containers: [{name: a}], initContainers: [{name: a}]}",
            "",
        ));
        assert!(
            err.contains("spec.initContainers[0].name: \"a\" is the name of another container"),
            "{err}"
        );
        let err = refused(&pod("{containers: [{name: a}], nodeName: 'a b'}", ""));
        assert!(err.contains("spec.nodeName: "), "{err}");
        let err = refused(&pod(
            "{containers: [{name: a}]}",
            "status: {podIP: 127.0.0.1}\n",
        ));
        assert!(
            err.contains("status.podIP: \"127.0.0.1\" may not be in the loopback range"),
            "{err}"
        );
        let err = refused(&pod(
            "{containers: [{name: a}]}",
            "status: {podIPs: [{ip: 10.0.0.1}, {ip: 'x'}]}\n",
        ));
        assert!(
            err.contains("status.podIPs[1].ip: \"x\" must be an IP address"),
            "{err}"
        );
        parse(&pod(
            "{containers: [{name: a}], nodeName: node-1}",
            "status: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}]}\n",
        ))
        .unwrap();
    }

    #[test]
    fn labels_are_spelled_as_the_api_server_requires() {
        let svc = |labels: &str| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s, labels: {{{labels}}}}}\nspec: {{ports: [{{port: 80}}]}}\n")
        };
        let err = refused(&svc("'a b': x"));
        assert!(
            err.contains("(Service default/s): metadata.labels: "),
            "{err}"
        );
        let err = refused(&svc("app: 'x\"; flush ruleset'"));
        assert!(err.contains("metadata.labels: "), "{err}");
        assert!(refused(&svc(&format!("app: {}", "v".repeat(64)))).contains("metadata.labels: "));
        parse(&svc(
            "app.kubernetes.io/name: web, tier: '', k8s-app: kube-dns",
        ))
        .unwrap();
    }

    #[test]
    fn node_and_policy_ranges_must_be_cidrs() {
        let node = |spec: &str| {
            format!("apiVersion: v1\nkind: Node\nmetadata: {{name: n1}}\nspec: {{{spec}}}\n")
        };
        assert!(refused(&node("podCIDR: 10.244.0.0/33")).contains("(Node n1): spec.podCIDR: "));
        assert!(refused(&node("podCIDRs: [10.244.0.0/24, 10.245.0.0/24]"))
            .contains("spec.podCIDRs: at most one range per family"));
        parse(&node(
            "podCIDR: 10.244.0.0/24, podCIDRs: [10.244.0.0/24, 'fd00:10:244::/64']",
        ))
        .unwrap();
        let policy = |block: &str| {
            format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p}}\nspec:\n  podSelector: {{}}\n  egress: [{{to: [{{ipBlock: {block}}}]}}]\n")
        };
        let err = refused(&policy("{cidr: everyone}"));
        assert!(
            err.contains("(NetworkPolicy default/p): spec.egress[0].to[0].ipBlock.cidr: "),
            "{err}"
        );
        let err = refused(&policy("{cidr: 10.0.0.0/8, except: [192.168.0.0/16]}"));
        assert!(
            err.contains("spec.egress[0].to[0].ipBlock.except[0]: "),
            "{err}"
        );
        parse(&policy("{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}")).unwrap();
    }

    #[test]
    fn network_policies_that_cannot_be_honoured_are_refused() {
        let policy = |spec: &str| {
            format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n{spec}")
        };
        let cases = [
            (
                "  ingress: [{ports: [{port: 80, protocol: ICMP}]}]\n",
                "(NetworkPolicy shop/p): spec.ingress[0].ports[0].protocol: unsupported protocol \"ICMP\"",
            ),
            (
                "  egress: [{ports: [{port: 70000}]}]\n",
                "spec.egress[0].ports[0].port: 70000 is not a port number",
            ),
            (
                "  ingress: [{ports: [{port: 0}]}]\n",
                "spec.ingress[0].ports[0].port: 0 is not a port number",
            ),
            (
                "  ingress: [{ports: [{endPort: 90}]}]\n",
                "spec.ingress[0].ports[0].endPort: 90 may not be given without port",
            ),
            (
                "  ingress: [{ports: [{port: 90, endPort: 80}]}]\n",
                "spec.ingress[0].ports[0].endPort: 80 must be greater than or equal to port (90)",
            ),
            (
                "  ingress: [{ports: [{port: 90, endPort: 65536}]}]\n",
                "spec.ingress[0].ports[0].endPort: 65536 is not a port number",
            ),
            (
                "  ingress: [{ports: [{port: http, endPort: 90}]}]\n",
                "spec.ingress[0].ports[0].endPort: 90 may not be given with a named port (\"http\")",
            ),
            (
                "  ingress: [{ports: [{port: HTTP_1}]}]\n",
                "spec.ingress[0].ports[0].port: \"HTTP_1\" may contain only",
            ),
            (
                "  ingress: [{from: [{podSelector: {matchExpressions: [{key: app, operator: Equals, values: [a]}]}}]}]\n",
                "spec.ingress[0].from[0].podSelector: matchExpressions[0]: operator \"Equals\"",
            ),
            (
                "  egress: [{to: [{namespaceSelector: {matchLabels: {'bad key': x}}}]}]\n",
                "spec.egress[0].to[0].namespaceSelector: label key",
            ),
            (
                "  ingress: [{from: [{}]}]\n",
                "spec.ingress[0].from[0]: must specify a peer",
            ),
            (
                "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]\n",
                "spec.ingress[0].from[0]: may not specify both ipBlock and another peer",
            ),
            (
                "  podSelector: {matchExpressions: [{key: app, operator: In}]}\n",
                "spec.podSelector: matchExpressions[0]: operator In needs at least one value",
            ),
            (
                "  policyTypes: [Ingress, Sideways]\n",
                "spec.policyTypes[1]: unsupported value \"Sideways\"",
            ),
            (
                "  policyTypes: [Ingress, Egress, Ingress]\n",
                "spec.policyTypes: may not specify more than two policyTypes",
            ),
        ];
        for (spec, want) in cases {
            let err = refused(&policy(spec));
            assert!(err.contains(want), "{spec}: {err}");
        }
    }

    #[test]
    fn network_policies_are_defaulted_as_the_api_server_does() {
        let admitted = |spec: &str| {
            let text = format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p}}\nspec:\n{spec}");
            let loaded = parse(&text).unwrap();
            serde_json::to_value(&loaded.objects[0].0).unwrap()
        };
        let np = admitted(
            "  podSelector: {}\n  ingress: [{ports: [{port: 80}, {port: web, protocol: UDP}]}]\n",
        );
        assert_eq!(np["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(np["spec"]["ingress"][0]["ports"][1]["protocol"], "UDP");
        assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
        // `egress: []` does not make the policy govern egress; a rule does.
        let np = admitted("  podSelector: {}\n  egress: []\n");
        assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
        let np = admitted("  podSelector: {}\n  egress: [{}]\n");
        assert_eq!(
            np["spec"]["policyTypes"],
            serde_json::json!(["Ingress", "Egress"])
        );
        let np = admitted("  podSelector: {}\n  policyTypes: [Egress]\n");
        assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Egress"]));
        admitted("  ingress: [{ports: [{port: 8000, endPort: 8000}], from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}]}]\n");
    }
}
