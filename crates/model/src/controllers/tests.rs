use super::*;
use crate::manifest::{parse_str, Format};

fn desired(yaml: &str) -> ClusterState {
    let loaded = parse_str("test.yaml", yaml, Format::Yaml).expect("test manifests parse");
    ClusterState::from_objects(
        loaded
            .objects
            .into_iter()
            .map(|(o, origin)| (o, Some(origin))),
    )
    .unwrap()
}

/// Manifests through admission and the controllers; either may refuse them.
fn run(yaml: &str) -> Result<ClusterState> {
    let loaded = parse_str("test.yaml", yaml, Format::Yaml)?;
    let state = ClusterState::from_objects(
        loaded
            .objects
            .into_iter()
            .map(|(o, origin)| (o, Some(origin))),
    )?;
    reconcile(state, None, &ClusterConfig::default())
}

fn cluster_ip(state: &ClusterState, ns: &str, name: &str) -> String {
    state
        .services
        .get(ns, name)
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .cluster_ip
        .clone()
        .unwrap()
}

fn node_ports(state: &ClusterState, ns: &str, name: &str) -> Vec<i32> {
    let spec = state.services.get(ns, name).unwrap().spec.clone().unwrap();
    spec.ports
        .unwrap()
        .iter()
        .filter_map(|p| p.node_port)
        .collect()
}

fn service(name: &str, extra: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{port: 80}}]\n{extra}---\n")
}

fn slices_of<'a>(
    state: &'a ClusterState,
    ns: &str,
    service: &str,
) -> Vec<&'a k8s_openapi::api::discovery::v1::EndpointSlice> {
    state
        .endpoint_slices
        .in_namespace(ns)
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .unwrap()
                .get(LABEL_SERVICE_NAME)
                .map(String::as_str)
                == Some(service)
        })
        .map(|s| &**s)
        .collect()
}

// ---- the kubernetes and kube-dns Services ----

#[test]
fn kubernetes_service_always_exists_at_the_first_address() {
    let state = run("").unwrap();
    assert_eq!(cluster_ip(&state, "default", "kubernetes"), "10.96.0.1");
    let ports = state
        .services
        .get("default", "kubernetes")
        .unwrap()
        .spec
        .clone()
        .unwrap()
        .ports
        .unwrap();
    assert_eq!(ports[0].port, 443);
}

#[test]
fn kube_dns_gets_the_tenth_address_unless_another_dns_service_holds_it() {
    let dns = "apiVersion: v1\nkind: Service\nmetadata: {name: kube-dns, namespace: kube-system}\nspec: {ports: [{port: 53, protocol: UDP}]}\n";
    assert_eq!(
        cluster_ip(&run(dns).unwrap(), "kube-system", "kube-dns"),
        "10.96.0.10"
    );
    // RKE2's DNS Service holds the tenth address in a dump: kube-apiserver
    // reserves nothing there, so neither does strait.
    let rke2 = "apiVersion: v1\nkind: Service\nmetadata: {name: rke2-coredns-rke2-coredns, namespace: kube-system}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 53, protocol: UDP}]}\n";
    let state = run(rke2).unwrap();
    assert_eq!(
        cluster_ip(&state, "kube-system", "rke2-coredns-rke2-coredns"),
        "10.96.0.10"
    );
    // With a kube-dns that asks for nothing, kube-dns makes way.
    let state = run(&format!("{dns}---\n{rke2}")).unwrap();
    assert_eq!(
        cluster_ip(&state, "kube-system", "rke2-coredns-rke2-coredns"),
        "10.96.0.10"
    );
    let other = cluster_ip(&state, "kube-system", "kube-dns");
    assert!(other.starts_with("10.") && other != "10.96.0.10", "{other}");
    // Two Services that both ask for it: the second is told who has it.
    let err = run(&format!(
        "{rke2}---\n{}",
        service("web", "  clusterIP: 10.96.0.10\n")
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("spec.clusterIP: 10.96.0.10 is already allocated to Service"),
        "{err}"
    );
}

// ---- cluster IPs ----

#[test]
fn user_given_cluster_ips_are_honoured_or_rejected_clearly() {
    let state = run(&service("web", "  clusterIP: 10.96.5.5\n")).unwrap();
    assert_eq!(cluster_ip(&state, "default", "web"), "10.96.5.5");

    let taken = run(
        &(service("a", "  clusterIP: 10.96.5.5\n") + &service("b", "  clusterIP: 10.96.5.5\n"))
    )
    .unwrap_err()
    .to_string();
    assert!(taken.contains("Service default/b (test.yaml, document 2): spec.clusterIP: 10.96.5.5 is already allocated to Service default/a"), "{taken}");

    let outside = run(&service("web", "  clusterIP: 10.0.0.5\n"))
        .unwrap_err()
        .to_string();
    assert!(
        outside.contains("10.0.0.5 is not in the service CIDR 10.96.0.0/12"),
        "{outside}"
    );

    let kubernetes = run(&service("web", "  clusterIP: 10.96.0.1\n"))
        .unwrap_err()
        .to_string();
    assert!(
        kubernetes.contains("already allocated to Service default/kubernetes"),
        "{kubernetes}"
    );
}

#[test]
fn explicit_addresses_win_over_dynamic_ones_whatever_the_order() {
    // `a` sorts first and would be allocated first; `z` names the address
    // `a` would hash to. Static addresses are reserved before any dynamic one.
    let a = run(&service("a", "")).unwrap();
    let wanted = cluster_ip(&a, "default", "a");
    let state =
        run(&(service("a", "") + &service("z", &format!("  clusterIP: {wanted}\n")))).unwrap();
    assert_eq!(cluster_ip(&state, "default", "z"), wanted);
    assert_ne!(cluster_ip(&state, "default", "a"), wanted);
}

#[test]
fn allocation_is_deterministic_and_stable() {
    let many: String = (0..50).map(|i| service(&format!("svc-{i}"), "")).collect();
    let first = run(&many).unwrap();
    let second = run(&many).unwrap();
    for i in 0..50 {
        let name = format!("svc-{i}");
        assert_eq!(
            cluster_ip(&first, "default", &name),
            cluster_ip(&second, "default", &name)
        );
    }
    // Dynamic addresses avoid the lower band kept for hand-picked ones.
    let ip: std::net::Ipv4Addr = cluster_ip(&first, "default", "svc-0").parse().unwrap();
    assert!(u32::from(ip) - u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) > 256);

    // With the previous snapshot, adding and removing other Services never moves one.
    let more = many.clone() + &service("newcomer", "");
    let next = reconcile(desired(&more), Some(&first), &ClusterConfig::default()).unwrap();
    for i in 0..50 {
        let name = format!("svc-{i}");
        assert_eq!(
            cluster_ip(&first, "default", &name),
            cluster_ip(&next, "default", &name)
        );
    }
}

#[test]
fn previous_allocations_survive_a_collision_with_a_newcomer() {
    let base = run(&service("old", "")).unwrap();
    let ip = cluster_ip(&base, "default", "old");
    // A newcomer asking for nothing must not take "old"'s address even when
    // it hashes anywhere; and "old" keeps it although its manifest has none.
    let next = reconcile(
        desired(&(service("old", "") + &service("new", ""))),
        Some(&base),
        &ClusterConfig::default(),
    )
    .unwrap();
    assert_eq!(cluster_ip(&next, "default", "old"), ip);
    assert_ne!(cluster_ip(&next, "default", "new"), ip);
}

#[test]
fn an_exhausted_service_cidr_is_an_error() {
    // A /28 has 14 usable addresses: one for `kubernetes`, one kept for kube-dns.
    let config = ClusterConfig::default()
        .with_service_cidrs(&["10.0.0.0/28".into()])
        .unwrap();
    let twelve: String = (0..12).map(|i| service(&format!("s{i}"), "")).collect();
    assert!(reconcile(desired(&twelve), None, &config).is_ok());
    let thirteen = twelve + &service("one-too-many", "");
    let err = reconcile(desired(&thirteen), None, &config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the service CIDR 10.0.0.0/28 is full"),
        "{err}"
    );
}

#[test]
fn headless_and_external_name_services_get_no_address() {
    let state = run(&format!(
        "{}apiVersion: v1\nkind: Service\nmetadata: {{name: ext}}\nspec: {{type: ExternalName, externalName: example.com}}\n",
        service("h", "  clusterIP: None\n")
    ))
    .unwrap();
    assert_eq!(cluster_ip(&state, "default", "h"), "None");
    let ext = state
        .services
        .get("default", "ext")
        .unwrap()
        .spec
        .clone()
        .unwrap();
    assert_eq!(ext.cluster_ip, None);
    assert_eq!(ext.ip_families, None);
}

#[test]
fn dual_stack_when_asked_and_configured() {
    let config = ClusterConfig::default()
        .with_service_cidrs(&["10.96.0.0/16".into(), "fd00:10:96::/112".into()])
        .unwrap();
    let state = reconcile(
        desired(&service("ds", "  ipFamilyPolicy: PreferDualStack\n")),
        None,
        &config,
    )
    .unwrap();
    let spec = state
        .services
        .get("default", "ds")
        .unwrap()
        .spec
        .clone()
        .unwrap();
    assert_eq!(spec.ip_families.unwrap(), ["IPv4", "IPv6"]);
    let ips = spec.cluster_ips.unwrap();
    assert!(
        ips[0].starts_with("10.96.") && ips[1].starts_with("fd00:10:96::"),
        "{ips:?}"
    );
    let err = run(&service("ds", "  ipFamilyPolicy: RequireDualStack\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.ipFamilyPolicy"), "{err}");
}

// ---- NodePorts ----

#[test]
fn node_ports_are_allocated_validated_and_shared_across_protocols() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: dns}\nspec:\n  type: NodePort\n  ports:\n  - {name: udp, port: 53, protocol: UDP}\n  - {name: tcp, port: 53, protocol: TCP}\n  - {name: metrics, port: 9153}\n";
    let state = run(svc).unwrap();
    let ports = node_ports(&state, "default", "dns");
    assert_eq!(ports.len(), 3);
    assert_eq!(ports[0], ports[1], "53/UDP and 53/TCP share a NodePort");
    assert_ne!(ports[0], ports[2]);
    assert!(
        ports.iter().all(|p| (30000 + 86..=32767).contains(p)),
        "{ports:?}"
    );

    let given =
        service("np", "  type: NodePort\n").replace("{port: 80}", "{port: 80, nodePort: 30078}");
    assert_eq!(node_ports(&run(&given).unwrap(), "default", "np"), [30078]);

    let out_of_range = given.replace("30078", "8080");
    let err = run(&out_of_range).unwrap_err().to_string();
    assert!(
        err.contains("spec.ports[0].nodePort: 8080 is outside the NodePort range 30000-32767"),
        "{err}"
    );

    let twice = given.clone() + &given.replace("name: np", "name: np2");
    let err = run(&twice).unwrap_err().to_string();
    assert!(
        err.contains("Service default/np2")
            && err.contains("30078 is already allocated to Service default/np"),
        "{err}"
    );

    let tcp_udp = "apiVersion: v1\nkind: Service\nmetadata: {name: both}\nspec:\n  type: NodePort\n  ports:\n  - {name: a, port: 53, protocol: UDP, nodePort: 30053}\n  - {name: b, port: 53, protocol: TCP, nodePort: 30053}\n";
    assert_eq!(
        node_ports(&run(tcp_udp).unwrap(), "default", "both"),
        [30053, 30053]
    );
    let same_proto = tcp_udp.replace("protocol: UDP", "protocol: TCP").replace(
        "port: 53, protocol: TCP, nodePort: 30053}\n  - {name: b, port: 53",
        "port: 53, protocol: TCP, nodePort: 30053}\n  - {name: b, port: 54",
    );
    assert!(run(&same_proto)
        .unwrap_err()
        .to_string()
        .contains("is used by another port of this Service"));
}

#[test]
fn load_balancers_get_node_ports_unless_told_not_to_and_health_checks_when_local() {
    let lb = service(
        "lb",
        "  type: LoadBalancer\n  externalTrafficPolicy: Local\n",
    );
    let state = run(&lb).unwrap();
    assert_eq!(node_ports(&state, "default", "lb").len(), 1);
    let hc = state
        .services
        .get("default", "lb")
        .unwrap()
        .spec
        .clone()
        .unwrap()
        .health_check_node_port;
    assert!(
        hc.is_some_and(|p| (30000..=32767).contains(&p))
            && Some(hc.unwrap()) != node_ports(&state, "default", "lb").first().copied()
    );

    let no_ports = service(
        "lb",
        "  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n",
    );
    let state = run(&no_ports).unwrap();
    assert!(node_ports(&state, "default", "lb").is_empty());
    assert_eq!(
        state
            .services
            .get("default", "lb")
            .unwrap()
            .spec
            .clone()
            .unwrap()
            .health_check_node_port,
        None
    );

    let cluster_ip_with_node_port =
        service("c", "").replace("{port: 80}", "{port: 80, nodePort: 30080}");
    assert!(run(&cluster_ip_with_node_port)
        .unwrap_err()
        .to_string()
        .contains("may only be set when type is NodePort or LoadBalancer"));
}

#[test]
fn node_port_exhaustion_is_an_error() {
    let config = ClusterConfig {
        node_port_range: "30000-30015".parse().unwrap(),
        ..ClusterConfig::default()
    };
    let sixteen: String = (0..16)
        .map(|i| service(&format!("n{i}"), "  type: NodePort\n"))
        .collect();
    assert!(reconcile(desired(&sixteen), None, &config).is_ok());
    let err = reconcile(
        desired(&(sixteen + &service("extra", "  type: NodePort\n"))),
        None,
        &config,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("the NodePort range 30000-30015 is full"),
        "{err}"
    );
}

// ---- Deployments ----

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: IMAGE, ports: [{name: http, containerPort: 8080}]}]}\n";

fn pod_names(state: &ClusterState) -> Vec<String> {
    state
        .pods
        .in_namespace("shop")
        .map(|p| p.metadata.name.clone().unwrap())
        .collect()
}

#[test]
fn deployments_become_replicas_pods_with_the_template_hash() {
    let state = run(&DEPLOYMENT.replace("IMAGE", "nginx")).unwrap();
    let names = pod_names(&state);
    assert_eq!(names.len(), 3);
    let pod = state.pods.get("shop", &names[0]).unwrap();
    let hash = pod.metadata.labels.as_ref().unwrap()[LABEL_POD_TEMPLATE_HASH].clone();
    assert_eq!(pod.metadata.labels.as_ref().unwrap()["app"], "web");
    for name in &names {
        let rest = name
            .strip_prefix(&format!("web-{hash}-"))
            .expect("name is <deployment>-<hash>-<suffix>");
        assert_eq!(rest.len(), 5);
    }
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.clone()),
        ("ReplicaSet", format!("web-{hash}"))
    );
    // Same input, same pods.
    assert_eq!(
        names,
        pod_names(&run(&DEPLOYMENT.replace("IMAGE", "nginx")).unwrap())
    );
}

#[test]
fn a_changed_template_replaces_the_pods_and_scaling_keeps_the_rest() {
    let before = pod_names(&run(&DEPLOYMENT.replace("IMAGE", "nginx")).unwrap());
    let after = pod_names(&run(&DEPLOYMENT.replace("IMAGE", "nginx:2")).unwrap());
    assert_eq!(after.len(), 3);
    assert!(
        after.iter().all(|n| !before.contains(n)),
        "new template, new pods"
    );
    let scaled = pod_names(
        &run(&DEPLOYMENT
            .replace("IMAGE", "nginx")
            .replace("replicas: 3", "replicas: 1"))
        .unwrap(),
    );
    assert_eq!(scaled.len(), 1);
    assert!(
        before.contains(&scaled[0]),
        "scaling down keeps existing pods"
    );
    let zero = run(&DEPLOYMENT
        .replace("IMAGE", "nginx")
        .replace("replicas: 3", "replicas: 0"))
    .unwrap();
    assert!(pod_names(&zero).is_empty());
}

#[test]
fn pod_status_from_the_previous_snapshot_is_kept() {
    let yaml = DEPLOYMENT.replace("IMAGE", "nginx");
    let first = run(&yaml).unwrap();
    let mut with_status = first.clone();
    let name = pod_names(&first)[0].clone();
    let mut pod = first.pods.get("shop", &name).unwrap().to_pod().unwrap();
    pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
        pod_ip: Some("10.244.1.7".into()),
        ..Default::default()
    });
    with_status.insert(Object::Pod(std::sync::Arc::new(pod.into())));
    let next = reconcile(
        desired(&yaml),
        Some(&with_status),
        &ClusterConfig::default(),
    )
    .unwrap();
    let ip = next
        .pods
        .get("shop", &name)
        .unwrap()
        .pod_ip()
        .map(str::to_owned);
    assert_eq!(ip.as_deref(), Some("10.244.1.7"));
}

// ---- EndpointSlices ----

/// A running pod: name, labels, IP (empty for none), ready, port name → number.
fn pod(name: &str, ip: &str, ready: bool, ports: &[(&str, i32)], extra_meta: &str) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|(n, p)| format!("{{name: {n}, containerPort: {p}}}"))
        .collect();
    let status = if ip.is_empty() {
        "status: {phase: Pending}".to_string()
    } else {
        format!("status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}], conditions: [{{type: Ready, status: \"{}\"}}]}}", if ready { "True" } else { "False" })
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}{extra_meta}}}\nspec: {{nodeName: node-1, containers: [{{name: c, ports: [{}]}}]}}\n{status}\n---\n",
        ports.join(", ")
    )
}

const WEB: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, labels: {team: a}}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n---\n";

fn endpoints_of(
    slice: &k8s_openapi::api::discovery::v1::EndpointSlice,
) -> Vec<(String, bool, bool, bool)> {
    slice
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.clone().unwrap();
            (
                e.addresses[0].clone(),
                c.ready.unwrap(),
                c.serving.unwrap(),
                c.terminating.unwrap(),
            )
        })
        .collect()
}

#[test]
fn named_target_ports_resolve_per_pod_into_separate_slices() {
    let yaml = format!(
        "{WEB}{}{}{}",
        pod("a", "10.244.1.2", true, &[("http", 8080)], ""),
        pod("b", "10.244.1.3", true, &[("http", 9090)], ""),
        pod("c", "10.244.1.4", true, &[("other", 7070)], ""),
    );
    let state = run(&yaml).unwrap();
    let mut slices: Vec<(Option<i32>, Vec<String>)> = slices_of(&state, "default", "web")
        .iter()
        .map(|s| {
            let port = s
                .ports
                .as_ref()
                .and_then(|p| p.first())
                .and_then(|p| p.port);
            (
                port,
                s.endpoints.iter().map(|e| e.addresses[0].clone()).collect(),
            )
        })
        .collect();
    slices.sort();
    // Pod c lacks the port name: it is an endpoint of a slice without that port.
    assert_eq!(
        slices,
        vec![
            (None, vec!["10.244.1.4".to_string()]),
            (Some(8080), vec!["10.244.1.2".to_string()]),
            (Some(9090), vec!["10.244.1.3".to_string()]),
        ]
    );
    let slice = slices_of(&state, "default", "web")[0];
    let labels = slice.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[LABEL_SERVICE_NAME], "web");
    assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY_CONTROLLER);
    assert_eq!(labels["team"], "a", "the Service's labels are copied");
    assert_eq!(
        slice.metadata.owner_references.as_ref().unwrap()[0].kind,
        "Service"
    );
    assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("node-1"));
    assert_eq!(
        slice.endpoints[0]
            .target_ref
            .as_ref()
            .unwrap()
            .kind
            .as_deref(),
        Some("Pod")
    );
}

#[test]
fn readiness_terminating_and_pods_without_ip() {
    let yaml = format!(
        "{WEB}{}{}{}{}",
        pod("ready", "10.244.1.2", true, &[("http", 80)], ""),
        pod("not-ready", "10.244.1.3", false, &[("http", 80)], ""),
        pod(
            "terminating",
            "10.244.1.4",
            true,
            &[("http", 80)],
            ", deletionTimestamp: \"2026-01-01T00:00:00Z\""
        ),
        pod("no-ip", "", true, &[("http", 80)], ""),
    );
    let state = run(&yaml).unwrap();
    let slices = slices_of(&state, "default", "web");
    assert_eq!(slices.len(), 1);
    assert_eq!(
        endpoints_of(slices[0]),
        vec![
            ("10.244.1.3".into(), false, false, false),
            ("10.244.1.2".into(), true, true, false),
            ("10.244.1.4".into(), false, true, true),
        ]
    );

    let publish = yaml.replace(
        "  selector: {app: web}",
        "  publishNotReadyAddresses: true\n  selector: {app: web}",
    );
    let state = run(&publish).unwrap();
    let ready: Vec<bool> = endpoints_of(slices_of(&state, "default", "web")[0])
        .iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(
        ready,
        [true, true, true],
        "publishNotReadyAddresses makes every endpoint ready"
    );
}

#[test]
fn finished_pods_are_not_endpoints_and_empty_services_keep_one_slice() {
    let done = pod("done", "10.244.1.9", false, &[("http", 80)], "")
        .replace("phase: Running", "phase: Succeeded");
    let state = run(&format!("{WEB}{done}")).unwrap();
    let slices = slices_of(&state, "default", "web");
    assert_eq!(slices.len(), 1);
    assert!(slices[0].endpoints.is_empty());
}

#[test]
fn more_than_100_endpoints_are_split() {
    let mut yaml = WEB.to_string();
    for i in 0..250 {
        yaml += &pod(
            &format!("p{i:03}"),
            &format!("10.244.{}.{}", i / 200, i % 200 + 2),
            true,
            &[("http", 80)],
            "",
        );
    }
    let state = run(&yaml).unwrap();
    let mut sizes: Vec<usize> = slices_of(&state, "default", "web")
        .iter()
        .map(|s| s.endpoints.len())
        .collect();
    sizes.sort();
    assert_eq!(sizes, [50, 100, 100]);
}

#[test]
fn hostnames_only_for_pods_whose_subdomain_is_the_service() {
    let maker = "apiVersion: v1\nkind: Service\nmetadata: {name: maker}\nspec: {clusterIP: None, selector: {app: web}}\n---\n";
    let with_host = |name: &str, ip: &str, sub: &str| {
        pod(name, ip, true, &[("http", 80)], "").replace(
            "spec: {nodeName: node-1,",
            &format!("spec: {{hostname: h-{name}, subdomain: {sub}, nodeName: node-1,"),
        )
    };
    let state = run(&format!(
        "{maker}{}{}",
        with_host("a", "10.244.1.2", "maker"),
        with_host("b", "10.244.1.3", "other")
    ))
    .unwrap();
    let slice = slices_of(&state, "default", "maker")[0];
    let hosts: Vec<Option<String>> = slice.endpoints.iter().map(|e| e.hostname.clone()).collect();
    assert_eq!(hosts, [Some("h-a".to_string()), None]);
    assert_eq!(
        slice
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .get("service.kubernetes.io/headless")
            .map(String::as_str),
        Some("")
    );
    assert_eq!(slice.ports, None);
}

#[test]
fn deployment_pods_and_services_meet_in_slices_once_pods_have_addresses() {
    // Pods from a Deployment have no address until a runtime gives them one.
    let yaml = format!(
        "{}---\n{WEB}",
        DEPLOYMENT
            .replace("IMAGE", "x")
            .replace("namespace: shop", "namespace: default")
    );
    let state = run(&yaml).unwrap();
    assert!(slices_of(&state, "default", "web")[0].endpoints.is_empty());
}

// ---- Endpoints mirroring and selector-less Services ----

#[test]
fn endpoints_of_selectorless_services_are_mirrored() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: mysql}\nspec: {ports: [{port: 3306}]}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: mysql}\nsubsets:\n- addresses: [{ip: 192.168.1.23}]\n  notReadyAddresses: [{ip: 192.168.1.24}, {ip: 'fd00::1'}]\n  ports: [{port: 3306}]\n";
    let state = run(yaml).unwrap();
    let slices = slices_of(&state, "default", "mysql");
    assert_eq!(slices.len(), 2, "one slice per address family");
    let v4 = slices.iter().find(|s| s.address_type == "IPv4").unwrap();
    assert_eq!(
        endpoints_of(v4),
        vec![
            ("192.168.1.23".into(), true, true, false),
            ("192.168.1.24".into(), false, false, false)
        ]
    );
    assert_eq!(
        v4.metadata.labels.as_ref().unwrap()[LABEL_MANAGED_BY],
        MANAGED_BY_MIRRORING
    );
    assert_eq!(v4.ports.as_ref().unwrap()[0].port, Some(3306));

    // Endpoints of a Service with a selector are not mirrored; neither are
    // Endpoints without a Service.
    let selected = yaml.replace("spec: {ports:", "spec: {selector: {app: db}, ports:");
    let state = run(&selected).unwrap();
    assert!(slices_of(&state, "default", "mysql").iter().all(|s| s
        .metadata
        .labels
        .as_ref()
        .unwrap()[LABEL_MANAGED_BY]
        == MANAGED_BY_CONTROLLER));
    let orphan = yaml.replace("name: mysql}\nspec", "name: other}\nspec");
    assert!(slices_of(&run(&orphan).unwrap(), "default", "mysql").is_empty());
}

#[test]
fn user_supplied_slices_of_selectorless_services_are_kept() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec: {ports: [{port: 80}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: ext-1, labels: {kubernetes.io/service-name: ext}}\naddressType: IPv4\nendpoints: [{addresses: [10.1.2.3]}]\nports: [{port: 80}]\n";
    let state = run(yaml).unwrap();
    let slices = slices_of(&state, "default", "ext");
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0].metadata.name.as_deref(), Some("ext-1"));
}

#[test]
fn controllers_replace_slices_they_own_from_a_dump() {
    let stale = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-old, labels: {kubernetes.io/service-name: web, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}}\naddressType: IPv4\nendpoints: [{addresses: [10.9.9.9]}]\n";
    let state = run(&format!(
        "{WEB}{}{stale}",
        pod("a", "10.244.1.2", true, &[("http", 80)], "")
    ))
    .unwrap();
    let slices = slices_of(&state, "default", "web");
    assert_eq!(slices.len(), 1);
    assert_eq!(endpoints_of(slices[0])[0].0, "10.244.1.2");
}

#[test]
fn every_object_gets_a_stable_uid() {
    let state = run(&format!(
        "{WEB}{}",
        pod("a", "10.244.1.2", true, &[("http", 80)], "")
    ))
    .unwrap();
    let again = run(&format!(
        "{WEB}{}",
        pod("a", "10.244.1.2", true, &[("http", 80)], "")
    ))
    .unwrap();
    for (x, y) in state.objects().zip(again.objects()) {
        let uid = x.metadata().uid.clone().unwrap();
        assert_eq!(uid.len(), 36);
        assert_eq!(Some(uid), y.metadata().uid.clone());
    }
    let slice = slices_of(&state, "default", "web")[0];
    let pod_uid = state.pods.get("default", "a").unwrap().metadata.uid.clone();
    assert_eq!(slice.endpoints[0].target_ref.as_ref().unwrap().uid, pod_uid);
}

// ---- input without Pods ----

#[test]
fn a_dump_without_pods_keeps_its_endpoint_slices() {
    // `kubectl get svc,endpointslices -o yaml`: one endpoint serving while
    // terminating, with a hostname; no Pods to compute anything from.
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\nspec:\n  clusterIP: None\n  selector: {app: db}\n  ports: [{port: 5432}]\n";
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: db-x7k2p\n  namespace: shop\n  labels: {kubernetes.io/service-name: db, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}\naddressType: IPv4\nendpoints:\n- addresses: [10.244.1.9]\n  hostname: db-0\n  conditions: {ready: false, serving: true, terminating: true}\nports: [{port: 5432, protocol: TCP, name: ''}]\n";
    let state = run(&format!("{svc}---\n{slice}")).unwrap();
    let slices = slices_of(&state, "shop", "db");
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0].metadata.name.as_deref(), Some("db-x7k2p"));
    let endpoint = &slices[0].endpoints[0];
    assert_eq!(endpoint.hostname.as_deref(), Some("db-0"));
    assert_eq!(endpoint.conditions.as_ref().unwrap().serving, Some(true));

    // With Pods in the input, the controller computes them as always.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: other, namespace: shop}\nspec: {containers: [{name: c}]}\n";
    let state = run(&format!("{svc}---\n{slice}---\n{pod}")).unwrap();
    let slices = slices_of(&state, "shop", "db");
    assert_eq!(slices.len(), 1);
    assert_ne!(slices[0].metadata.name.as_deref(), Some("db-x7k2p"));
    assert!(slices[0].endpoints.is_empty());
}
