//! Admission: what the API server does to an object before storing it —
//! defaulting (so every later stage sees `protocol: TCP`, `type: ClusterIP`, …)
//! and validation of the fields strait relies on. Errors are (field path, message).

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ClientIPConfig, Container, Endpoints, Pod, PodSpec, Service, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::object::Object;
use crate::selector::Selector;

type Check = Result<(), (String, String)>;

fn bad(field: impl Into<String>, message: impl Into<String>) -> Check {
    Err((field.into(), message.into()))
}

/// Default and validate one object in place.
pub fn object(object: &mut Object) -> Check {
    let kind = object.kind();
    let name = object.metadata().name.clone().unwrap_or_default();
    object_name(kind, &name)?;
    if kind.is_namespaced() {
        // The namespace reaches chain names, DNS names and file names
        // downstream; kube-apiserver only stores namespaces that are labels.
        let namespace = object.metadata().namespace.as_deref().unwrap_or_default();
        if let Err(why) = dns_label(namespace) {
            return bad("metadata.namespace", format!("{namespace:?} {why}"));
        }
    }
    // The API server gives every object a UID on create; strait derives it
    // from what the object is, so that it is the same on every run.
    let meta = object.metadata_mut();
    if meta.uid.as_deref().unwrap_or_default().is_empty() {
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        meta.uid = Some(crate::hash::uid(kind.as_str(), namespace, &name));
    }
    match object {
        Object::Service(svc) => service(Arc::make_mut(svc)),
        // Checked by `pod` while still typed.
        Object::Pod(_) => Ok(()),
        Object::Deployment(d) => deployment(Arc::make_mut(d)),
        Object::Namespace(ns) => {
            namespace(Arc::make_mut(ns), &name);
            Ok(())
        }
        Object::Endpoints(e) => endpoints(Arc::make_mut(e)),
        Object::EndpointSlice(s) => endpoint_slice(Arc::make_mut(s)),
        Object::NetworkPolicy(np) => match np.spec.as_ref().and_then(|s| s.pod_selector.as_ref()) {
            Some(sel) => Selector::from_label_selector(sel)
                .map(|_| ())
                .or_else(|e| bad("spec.podSelector", e.to_string())),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The label the control plane sets on every Namespace, so that policies and
/// tools can select a namespace by its name.
pub const LABEL_METADATA_NAME: &str = "kubernetes.io/metadata.name";

/// Namespace defaulting: the name label always holds the name, whatever the
/// manifest says (the API server overwrites it the same way).
fn namespace(ns: &mut k8s_openapi::api::core::v1::Namespace, name: &str) {
    ns.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(LABEL_METADATA_NAME.to_owned(), name.to_owned());
}

/// `metadata.name` by the rule kube-apiserver applies to the kind.
fn object_name(kind: crate::Kind, name: &str) -> Check {
    use crate::Kind;
    if name.is_empty() {
        return bad("metadata.name", "missing: every object needs a name");
    }
    let valid = match kind {
        // A Service name is a DNS label that starts with a letter (RFC 1035):
        // it becomes environment variable names as well as DNS names.
        Kind::Service => dns1035_label(name),
        Kind::Namespace => dns_label(name),
        Kind::Deployment
        | Kind::EndpointSlice
        | Kind::Endpoints
        | Kind::Ingress
        | Kind::IngressClass
        | Kind::NetworkPolicy
        | Kind::Node
        | Kind::Pod => dns_subdomain(name),
    };
    if let Err(why) = valid {
        return bad("metadata.name", format!("{name:?} {why}"));
    }
    Ok(())
}

/// Default and validate a Pod's spec before it is stored compact; its name
/// is checked first, as `object` would.
pub(crate) fn pod(pod: &mut Pod) -> Check {
    object_name(
        crate::Kind::Pod,
        pod.metadata.name.as_deref().unwrap_or_default(),
    )?;
    match pod.spec.as_mut() {
        Some(spec) => pod_spec(spec, "spec"),
        None => bad("spec", "missing: a Pod needs spec.containers"),
    }
}

/// RFC 1123 label: what Service and Namespace names must be.
pub fn dns_label(s: &str) -> Result<(), &'static str> {
    if s.len() > 63 {
        return Err("is longer than 63 characters");
    }
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err("must consist of lower case alphanumeric characters or '-', and start and end with an alphanumeric character")
    }
}

/// RFC 1035 label: an RFC 1123 label that starts with a letter.
pub fn dns1035_label(s: &str) -> Result<(), &'static str> {
    dns_label(s)?;
    if s.as_bytes()[0].is_ascii_lowercase() {
        Ok(())
    } else {
        Err("must start with a lower case letter, and consist of lower case alphanumeric characters or '-' ending with an alphanumeric character")
    }
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn dns_subdomain(s: &str) -> Result<(), &'static str> {
    if s.len() > 253 {
        return Err("is longer than 253 characters");
    }
    for part in s.split('.') {
        dns_label(part).map_err(|_| {
            "must consist of lower case alphanumeric characters, '-' or '.', and start and end with an alphanumeric character"
        })?;
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

fn service(svc: &mut Service) -> Check {
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
        if ip.parse::<IpAddr>().is_err() {
            return bad(
                format!("spec.externalIPs[{i}]"),
                format!("{ip:?} must be an IP address"),
            );
        }
    }

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

pub(crate) fn pod_spec(spec: &mut PodSpec, at: &str) -> Check {
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
    let mut names = std::collections::BTreeSet::new();
    let groups: [(&str, &mut Vec<Container>); 2] = [
        ("containers", &mut spec.containers),
        (
            "initContainers",
            spec.init_containers.get_or_insert_with(Vec::new),
        ),
    ];
    for (group, containers) in groups {
        for (c, container) in containers.iter_mut().enumerate() {
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
                            format!("{name:?} is used by another port of this Pod"),
                        );
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

fn deployment(d: &mut Deployment) -> Check {
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
    if !selector.matches(&labels) {
        return bad(
            "spec.template.metadata.labels",
            "do not match spec.selector: the Deployment would not own its own pods",
        );
    }
    match spec.template.spec.as_mut() {
        Some(pod) => pod_spec(pod, "spec.template.spec"),
        None => bad(
            "spec.template.spec",
            "missing: the pod template needs containers",
        ),
    }
}

fn endpoints(e: &mut Endpoints) -> Check {
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
                if address.ip.parse::<IpAddr>().is_err() {
                    return bad(
                        format!("subsets[{s}].{list}[{a}].ip"),
                        format!("{:?} must be an IP address", address.ip),
                    );
                }
            }
        }
        for (p, port) in subset.ports.iter_mut().flatten().enumerate() {
            port_number(format!("subsets[{s}].ports[{p}].port"), port.port)?;
            protocol(
                format!("subsets[{s}].ports[{p}].protocol"),
                &mut port.protocol,
            )?;
        }
    }
    Ok(())
}

fn endpoint_slice(s: &mut EndpointSlice) -> Check {
    one_of("addressType", &s.address_type, &["IPv4", "IPv6", "FQDN"])?;
    if s.endpoints.len() > 1000 {
        return bad(
            "endpoints",
            format!("{} endpoints: at most 1000 are allowed", s.endpoints.len()),
        );
    }
    for (i, endpoint) in s.endpoints.iter().enumerate() {
        if endpoint.addresses.is_empty() {
            return bad(
                format!("endpoints[{i}].addresses"),
                "required: at least one address",
            );
        }
        for (a, address) in endpoint.addresses.iter().enumerate() {
            let ok = match s.address_type.as_str() {
                "IPv4" => address.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => address.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => dns_subdomain(address).is_ok(),
            };
            if !ok {
                return bad(
                    format!("endpoints[{i}].addresses[{a}]"),
                    format!("{address:?} is not a valid {} address", s.address_type),
                );
            }
        }
    }
    for (p, port) in s.ports.iter_mut().flatten().enumerate() {
        if let Some(n) = port.port {
            port_number(format!("ports[{p}].port"), n)?;
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
        assert!(refused(pod).contains("(Pod a/b/p): metadata.namespace: "));
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
}
