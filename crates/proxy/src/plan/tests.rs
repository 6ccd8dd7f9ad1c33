//! The planner, table by table: which endpoints each kind of traffic uses
//! (kube-proxy's `CategorizeEndpoints` and its EndpointSlice cache), the
//! traffic policies, affinity, the ways in from outside, both families, and
//! what is not proxied at all. Objects are built here directly, without
//! admission, as the proxy may be given them.

use serde_json::{json, Value};
use strait_model::k8s_openapi::api::core::v1::Service;
use strait_model::k8s_openapi::api::discovery::v1::EndpointSlice;

use super::*;

fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        for (k, v) in extra {
            match into.get_mut(&k) {
                Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                _ => {
                    into.insert(k, v);
                }
            }
        }
    }
}

/// `default/web` on 10.96.0.10, port `http` 80/TCP, changed by `extra`.
fn service(extra: Value) -> Service {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

/// An EndpointSlice of `default/web` with port `http` 8080/TCP.
fn slice(name: &str, address_type: &str, endpoints: Value) -> EndpointSlice {
    slice_with_ports(
        name,
        address_type,
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        endpoints,
    )
}

fn slice_with_ports(
    name: &str,
    address_type: &str,
    ports: Value,
    endpoints: Value,
) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "default", "name": name,
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": address_type,
        "ports": ports,
        "endpoints": endpoints,
    }))
    .unwrap()
}

/// One endpoint: `conditions` as given (absent ones left unset).
fn ep(ip: &str, node: &str, conditions: Value) -> Value {
    json!({"addresses": [ip], "nodeName": node, "conditions": conditions})
}

fn ready(ip: &str, node: &str) -> Value {
    ep(
        ip,
        node,
        json!({"ready": true, "serving": true, "terminating": false}),
    )
}

/// Serving while terminating: the fallback kube-proxy uses when nothing is ready.
fn draining(ip: &str, node: &str) -> Value {
    ep(
        ip,
        node,
        json!({"ready": false, "serving": true, "terminating": true}),
    )
}

fn not_ready(ip: &str, node: &str) -> Value {
    ep(
        ip,
        node,
        json!({"ready": false, "serving": false, "terminating": false}),
    )
}

fn ctx() -> NodeContext {
    NodeContext {
        node_name: "node-1".into(),
        node_ips: vec!["172.18.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
        nodeport_addresses: Vec::new(),
    }
}

fn plan_v4(svc: &Service, slices: &[EndpointSlice]) -> Vec<ServicePort> {
    let refs: Vec<&EndpointSlice> = slices.iter().collect();
    plan_family(svc, &refs, &ctx(), Family::V4)
}

fn one(svc: &Service, slices: &[EndpointSlice]) -> ServicePort {
    let mut ports = plan_v4(svc, slices);
    assert_eq!(ports.len(), 1, "{ports:?}");
    ports.remove(0)
}

fn ips(endpoints: &[Endpoint]) -> Vec<String> {
    endpoints.iter().map(|e| e.ip.to_string()).collect()
}

// ---- which endpoints: ready, else serving and terminating ----

#[test]
fn ready_endpoints_are_used_and_the_rest_are_not() {
    let p = one(
        &service(json!({})),
        &[slice(
            "s1",
            "IPv4",
            json!([
                ready("10.244.1.2", "node-1"),
                ready("10.244.2.2", "node-2"),
                draining("10.244.2.3", "node-2"),
                not_ready("10.244.2.4", "node-2"),
            ]),
        )],
    );
    assert_eq!(ips(&p.all_endpoints), ["10.244.1.2", "10.244.2.2"]);
    assert_eq!(ips(&p.cluster_endpoints), ["10.244.1.2", "10.244.2.2"]);
    assert_eq!(ips(&p.local_endpoints), ["10.244.1.2"]);
    assert!(p.has_endpoints);
    assert_eq!(p.all_endpoints[0].port, 8080);
    assert!(p.all_endpoints[0].local && !p.all_endpoints[1].local);
}

#[test]
fn with_nothing_ready_serving_terminating_endpoints_take_over() {
    let p = one(
        &service(json!({})),
        &[slice(
            "s1",
            "IPv4",
            json!([
                draining("10.244.2.3", "node-2"),
                not_ready("10.244.2.4", "node-2"),
                // Terminating but no longer serving: never used.
                ep(
                    "10.244.2.5",
                    "node-2",
                    json!({"ready": false, "serving": false, "terminating": true})
                ),
            ]),
        )],
    );
    assert_eq!(ips(&p.all_endpoints), ["10.244.2.3"]);
    assert_eq!(ips(&p.cluster_endpoints), ["10.244.2.3"]);
    assert!(p.has_endpoints);
}

#[test]
fn unset_conditions_mean_ready_serving_and_not_terminating() {
    let p = one(
        &service(json!({})),
        &[slice("s1", "IPv4", json!([{"addresses": ["10.244.1.2"]}]))],
    );
    assert_eq!(ips(&p.all_endpoints), ["10.244.1.2"]);
    // No nodeName: never local.
    assert!(p.local_endpoints.is_empty());
}

/// The API says an unset `serving` is true (kube-proxy reads it so): a
/// terminating endpoint that does not say whether it serves is a fallback.
#[test]
fn an_unset_serving_condition_counts_as_serving() {
    let p = one(
        &service(json!({})),
        &[slice(
            "s1",
            "IPv4",
            json!([ep(
                "10.244.2.3",
                "node-2",
                json!({"ready": false, "terminating": true})
            )]),
        )],
    );
    assert_eq!(ips(&p.all_endpoints), ["10.244.2.3"]);
}

#[test]
fn without_usable_endpoints_the_port_has_none_and_says_so() {
    let p = one(
        &service(json!({})),
        &[slice(
            "s1",
            "IPv4",
            json!([not_ready("10.244.2.4", "node-2")]),
        )],
    );
    assert!(p.all_endpoints.is_empty() && p.cluster_endpoints.is_empty());
    assert!(!p.has_endpoints);
    let p = one(&service(json!({})), &[]);
    assert!(!p.has_endpoints);
}

/// An address in two slices (a pod moving between slices, or a new pod
/// given the address of one still terminating): the one not terminating
/// counts, whichever slice comes first, as in kube-proxy's cache.
#[test]
fn an_address_in_two_slices_counts_once_preferring_the_one_not_terminating() {
    let old = slice(
        "a-old",
        "IPv4",
        json!([ep(
            "10.244.2.3",
            "node-2",
            json!({"ready": false, "serving": false, "terminating": true})
        )]),
    );
    let new = slice("b-new", "IPv4", json!([ready("10.244.2.3", "node-2")]));
    for slices in [[old.clone(), new.clone()], [new, old]] {
        let p = one(&service(json!({})), &slices);
        assert_eq!(ips(&p.all_endpoints), ["10.244.2.3"], "{slices:?}");
    }
}

#[test]
fn endpoints_match_the_service_port_by_name_and_protocol() {
    let svc = service(json!({"spec": {"ports": [
        {"name": "http", "port": 80, "protocol": "TCP"},
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
    ]}}));
    let s = slice_with_ports(
        "s1",
        "IPv4",
        json!([
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "dns", "port": 5353, "protocol": "UDP"},
        ]),
        json!([ready("10.244.1.2", "node-1")]),
    );
    let ports = plan_v4(&svc, &[s]);
    let by_name = |n: &str| ports.iter().find(|p| p.port_name == n).unwrap();
    assert_eq!(by_name("http").all_endpoints[0].port, 8080);
    assert_eq!(by_name("dns").protocol, Protocol::Udp);
    assert_eq!(by_name("dns").all_endpoints[0].port, 5353);
    // No slice port for it: the Service port exists, without endpoints.
    assert!(!by_name("dns-tcp").has_endpoints);
}

#[test]
fn unnamed_ports_are_named_by_number_and_odd_protocols_and_ports_are_skipped() {
    let svc = service(json!({"spec": {"ports": [
        {"port": 8443},
        {"name": "sctp", "port": 9, "protocol": "SCTP"},
        {"name": "odd", "port": 10, "protocol": "ICMP"},
        {"name": "big", "port": 70000},
    ]}}));
    let s = slice_with_ports(
        "s1",
        "IPv4",
        json!([{"name": "", "port": 443, "protocol": "TCP"}, {"name": "sctp", "port": 0, "protocol": "SCTP"}]),
        json!([ready("10.244.1.2", "node-1")]),
    );
    let ports = plan_v4(&svc, &[s]);
    let names: Vec<&str> = ports.iter().map(|p| p.port_name.as_str()).collect();
    assert_eq!(names, ["8443", "sctp"]);
    assert_eq!(ports[0].all_endpoints[0].port, 443);
    assert_eq!(ports[1].protocol, Protocol::Sctp);
    // Port 0 is no port (kube-proxy ignores it): no endpoint to DNAT to.
    assert!(!ports[1].has_endpoints, "{:?}", ports[1].all_endpoints);
}

// ---- traffic policies ----

#[test]
fn internal_traffic_policy_local_keeps_cluster_traffic_on_the_node() {
    let svc = service(json!({"spec": {"internalTrafficPolicy": "Local"}}));
    let both = [slice(
        "s1",
        "IPv4",
        json!([ready("10.244.1.2", "node-1"), ready("10.244.2.2", "node-2")]),
    )];
    let p = one(&svc, &both);
    assert!(p.internal_local);
    assert_eq!(ips(&p.cluster_endpoints), ["10.244.1.2"]);
    assert_eq!(ips(&p.all_endpoints), ["10.244.1.2", "10.244.2.2"]);
    // Only remote endpoints: none for cluster traffic here, but the Service
    // has endpoints (kube-proxy drops such traffic rather than reject it).
    let remote = [slice("s1", "IPv4", json!([ready("10.244.2.2", "node-2")]))];
    let p = one(&svc, &remote);
    assert!(p.cluster_endpoints.is_empty());
    assert!(p.has_endpoints);
}

#[test]
fn external_traffic_policy_local_uses_this_nodes_endpoints() {
    let svc = service(
        json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 32000, "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}}),
    );
    let p = one(
        &svc,
        &[slice(
            "s1",
            "IPv4",
            json!([ready("10.244.1.2", "node-1"), ready("10.244.2.2", "node-2")]),
        )],
    );
    assert!(p.external_local && !p.internal_local);
    assert_eq!(ips(&p.local_endpoints), ["10.244.1.2"]);
    // Cluster traffic is not affected by the external policy.
    assert_eq!(ips(&p.cluster_endpoints), ["10.244.1.2", "10.244.2.2"]);
    assert_eq!(p.health_check_node_port, Some(32000));
    assert_eq!(p.node_port, Some(30080));
}

#[test]
fn a_health_check_port_only_for_load_balancers_with_local_policy() {
    let base = json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000}});
    assert_eq!(one(&service(base), &[]).health_check_node_port, None);
    let lb_cluster = json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster", "healthCheckNodePort": 32000}});
    assert_eq!(one(&service(lb_cluster), &[]).health_check_node_port, None);
}

/// kube-proxy's local fallback looks at this node only: with no local
/// endpoint ready, the local ones serving while terminating are used, even
/// though other nodes have ready ones.
#[test]
fn the_local_terminating_fallback_ignores_ready_endpoints_elsewhere() {
    let svc = service(json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Local"}}));
    let p = one(
        &svc,
        &[slice(
            "s1",
            "IPv4",
            json!([
                draining("10.244.1.3", "node-1"),
                ready("10.244.2.2", "node-2")
            ]),
        )],
    );
    assert_eq!(ips(&p.local_endpoints), ["10.244.1.3"]);
    assert_eq!(ips(&p.all_endpoints), ["10.244.2.2"]);
}

#[test]
fn nothing_is_local_to_a_node_without_a_name() {
    let s = [slice("s1", "IPv4", json!([ready("10.244.1.2", "")]))];
    let refs: Vec<&EndpointSlice> = s.iter().collect();
    let nameless = NodeContext {
        node_name: String::new(),
        ..ctx()
    };
    let p = plan_family(&service(json!({})), &refs, &nameless, Family::V4);
    assert!(p[0].local_endpoints.is_empty());
    assert_eq!(ips(&p[0].all_endpoints), ["10.244.1.2"]);
}

// ---- session affinity ----

#[test]
fn client_ip_affinity_has_kubernetes_default_and_bounded_timeouts() {
    let timeout = |extra: Value| one(&service(extra), &[]).affinity_timeout;
    assert_eq!(timeout(json!({})), None);
    assert_eq!(timeout(json!({"spec": {"sessionAffinity": "None"}})), None);
    assert_eq!(
        timeout(json!({"spec": {"sessionAffinity": "ClientIP"}})),
        Some(10800)
    );
    let with = |s: i64| {
        timeout(json!({"spec": {"sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": s}}}}))
    };
    assert_eq!(with(60), Some(60));
    assert_eq!(with(86400), Some(86400));
    // Out of the API's 1..=86400 (not admitted here): held to its bounds.
    assert_eq!(with(0), Some(1));
    assert_eq!(with(1_000_000), Some(86400));
}

// ---- ways in from outside ----

#[test]
fn node_ports_external_ips_and_load_balancer_ips_are_carried() {
    let svc = service(json!({
        "spec": {"type": "LoadBalancer", "externalIPs": ["192.0.2.7", "2001:db8::7", "bogus"],
                 "ports": [{"name": "http", "port": 80, "nodePort": 30080}]},
        "status": {"loadBalancer": {"ingress": [
            {"ip": "198.51.100.1"},
            {"ip": "198.51.100.2", "ipMode": "Proxy"},
            {"ip": "198.51.100.3", "ipMode": "VIP"},
            {"hostname": "lb.example"},
        ]}},
    }));
    let p = one(&svc, &[]);
    assert_eq!(p.node_port, Some(30080));
    assert_eq!(p.external_ips, ["192.0.2.7".parse::<IpAddr>().unwrap()]);
    // ipMode Proxy: the load balancer proxies itself, the node must not
    // intercept its address.
    assert_eq!(
        p.load_balancer_ips,
        [
            "198.51.100.1".parse::<IpAddr>().unwrap(),
            "198.51.100.3".parse().unwrap()
        ]
    );
    assert!(p.has_external());
    assert!(!p.firewall);
    assert!(!one(&service(json!({})), &[]).has_external());
}

#[test]
fn source_ranges_are_merged_and_close_the_load_balancer() {
    let lb = |ranges: Value| {
        service(
            json!({"spec": {"type": "LoadBalancer", "loadBalancerSourceRanges": ranges},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}}),
        )
    };
    let p = one(
        &lb(json!([
            "10.0.0.0/8",
            "10.1.0.0/16",
            " 192.0.2.0/24 ",
            "192.0.2.9/24"
        ])),
        &[],
    );
    assert!(p.firewall);
    let want: Vec<IpNet> = vec![
        "10.0.0.0/8".parse().unwrap(),
        "192.0.2.0/24".parse().unwrap(),
    ];
    assert_eq!(p.source_ranges, want);
    assert!(!p.lb_ips_as_sources);
    // A range holding the node: the LB's own addresses may be sources too.
    let p = one(&lb(json!(["172.18.0.0/16"])), &[]);
    assert!(p.lb_ips_as_sources);
    // Only IPv6 ranges: the IPv4 side accepts nobody rather than everybody.
    // (kube-proxy filters the ranges per family and leaves this side open;
    // strait keeps it closed, on purpose.)
    let p = one(&lb(json!(["2001:db8::/32"])), &[]);
    assert!(p.firewall && p.source_ranges.is_empty());
    // One range that cannot be read: closed, and reported.
    let bad = lb(json!(["10.0.0.0/8", "ten/8"]));
    let p = one(&bad, &[]);
    assert!(p.firewall && p.source_ranges.is_empty());
    let problems = service_problems(&bad);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("spec.loadBalancerSourceRanges[1]"),
        "{problems:?}"
    );
}

#[test]
fn source_ranges_only_count_for_load_balancers() {
    let svc =
        service(json!({"spec": {"type": "NodePort", "loadBalancerSourceRanges": ["10.0.0.0/8"]}}));
    let p = one(&svc, &[]);
    assert!(!p.firewall && p.source_ranges.is_empty());
}

#[test]
fn an_unreadable_ingress_address_closes_the_load_balancer() {
    let svc = service(json!({"spec": {"type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}, {"ip": "not-an-ip"}]}}}));
    let p = one(&svc, &[]);
    assert!(p.firewall && p.source_ranges.is_empty());
    assert_eq!(
        p.load_balancer_ips,
        ["198.51.100.1".parse::<IpAddr>().unwrap()]
    );
    let problems = service_problems(&svc);
    assert!(
        problems[0].contains("status.loadBalancer.ingress[1].ip"),
        "{problems:?}"
    );
}

// ---- families ----

#[test]
fn a_dual_stack_service_is_planned_in_each_family_with_its_own_endpoints() {
    let svc = service(json!({"spec": {
        "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:96::10"],
        "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack",
        "externalIPs": ["192.0.2.7", "2001:db8::7"],
    }}));
    let slices = [
        slice("v4", "IPv4", json!([ready("10.244.1.2", "node-1")])),
        slice("v6", "IPv6", json!([ready("fd00:244::2", "node-1")])),
        // Neither family: ignored.
        slice("fqdn", "FQDN", json!([ready("web.example", "node-1")])),
    ];
    let refs: Vec<&EndpointSlice> = slices.iter().collect();
    let ports = plan_service(&svc, &refs, &ctx());
    assert_eq!(ports.len(), 2);
    let (v4, v6) = (&ports[0], &ports[1]);
    assert_eq!((v4.family, v6.family), (Family::V4, Family::V6));
    assert_eq!(v4.cluster_ip, Some("10.96.0.10".parse().unwrap()));
    assert_eq!(v6.cluster_ip, Some("fd00:96::10".parse().unwrap()));
    assert_eq!(ips(&v4.all_endpoints), ["10.244.1.2"]);
    assert_eq!(ips(&v6.all_endpoints), ["fd00:244::2"]);
    assert_eq!(v6.external_ips, ["2001:db8::7".parse::<IpAddr>().unwrap()]);
}

#[test]
fn a_single_stack_service_is_planned_in_its_family_only() {
    let svc = service(json!({"spec": {"clusterIP": "fd00:96::10", "clusterIPs": ["fd00:96::10"]}}));
    let slices = [slice("v4", "IPv4", json!([ready("10.244.1.2", "node-1")]))];
    let refs: Vec<&EndpointSlice> = slices.iter().collect();
    let ports = plan_service(&svc, &refs, &ctx());
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].family, Family::V6);
    // The IPv4 slice is not the IPv6 port's.
    assert!(!ports[0].has_endpoints);
}

// ---- what is not proxied ----

#[test]
fn headless_external_name_and_foreign_services_are_not_proxied() {
    let cases = [
        ("headless", json!({"spec": {"clusterIP": "None"}})),
        ("no cluster IP yet", json!({"spec": {"clusterIP": ""}})),
        (
            "ExternalName",
            json!({"spec": {"type": "ExternalName", "externalName": "db.example"}}),
        ),
        (
            "another proxy's",
            json!({"metadata": {"labels": {"service.kubernetes.io/service-proxy-name": "other"}}}),
        ),
        (
            "labelled headless",
            json!({"metadata": {"labels": {"service.kubernetes.io/headless": ""}}}),
        ),
    ];
    let slices = [slice("s1", "IPv4", json!([ready("10.244.1.2", "node-1")]))];
    for (what, extra) in cases {
        assert!(plan_v4(&service(extra), &slices).is_empty(), "{what}");
    }
    let mut no_spec = service(json!({}));
    no_spec.spec = None;
    assert!(plan_v4(&no_spec, &slices).is_empty());
    assert!(service_problems(&no_spec).is_empty());
}

// ---- the whole table, through the model's controllers ----

fn state_of(yaml: &str) -> ClusterState {
    let loaded = strait_model::parse_str("test.yaml", yaml, strait_model::Format::Yaml).unwrap();
    let state = ClusterState::from_objects(
        loaded
            .objects
            .into_iter()
            .map(|(o, origin)| (o, Some(origin))),
    )
    .unwrap();
    strait_model::controllers::reconcile(state, None, &Default::default()).unwrap()
}

/// `publishNotReadyAddresses`: the EndpointSlice controller marks every
/// pod ready for such a Service, so the proxy uses a pod that is not.
#[test]
fn publish_not_ready_addresses_puts_unready_pods_behind_the_service() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: peers, namespace: default}
spec:
  clusterIP: 10.96.0.20
  selector: {app: db}
  publishNotReadyAddresses: true
  ports: [{name: p, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: ready-only, namespace: default}
spec:
  clusterIP: 10.96.0.21
  selector: {app: db}
  ports: [{name: p, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: default, labels: {app: db}}
spec: {nodeName: node-1, containers: [{name: c}]}
status:
  phase: Running
  podIP: 10.244.1.7
  conditions: [{type: Ready, status: "False"}]
"#;
    let table = plan(&state_of(yaml), &ctx());
    let by_name = |n: &str| table.ports.iter().find(|p| p.name == n).unwrap();
    assert_eq!(ips(&by_name("peers").all_endpoints), ["10.244.1.7"]);
    assert!(by_name("peers").all_endpoints[0].local);
    assert!(!by_name("ready-only").has_endpoints);
    assert!(table.problems.is_empty(), "{:?}", table.problems);
}

#[test]
fn the_table_is_in_service_order_and_carries_the_nodes_networks() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: b, namespace: default}
spec: {clusterIP: 10.96.0.31, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: default}
spec: {clusterIP: 10.96.0.30, ports: [{name: web, port: 81}, {name: x, port: 82}]}
"#;
    let table = plan(&state_of(yaml), &ctx());
    let names: Vec<String> = table.ports.iter().map(ServicePort::display).collect();
    // `default/kubernetes` is the API server's own, made by the controllers.
    assert_eq!(
        names,
        [
            "default/a:web",
            "default/a:x",
            "default/b:80",
            "default/kubernetes:https"
        ]
    );
    assert_eq!(table.cluster_cidrs, ctx().cluster_cidrs);
    assert_eq!(table.service_cidrs, ctx().service_cidrs);
    // NodePorts answer on the node's own addresses unless told otherwise.
    let primary: Vec<IpNet> = vec![
        "172.18.0.2/32".parse().unwrap(),
        "fd00::2/128".parse().unwrap(),
    ];
    assert_eq!(table.nodeport_networks, primary);
    let told = NodeContext {
        nodeport_addresses: vec!["172.18.0.0/16".parse().unwrap()],
        ..ctx()
    };
    assert_eq!(told.nodeport_networks(), told.nodeport_addresses);
}
