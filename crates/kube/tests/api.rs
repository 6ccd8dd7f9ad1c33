//! KubeSource against the lab's API server, in process on 127.0.0.1:0 (no
//! root needed): the first update holds what was created, it plans the
//! same rules as the same objects read from manifests, a change arrives
//! as a change set of just that object (timed), a refused object hurts
//! only itself, and a client the server refuses is said clearly.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;
use strait_agent::Changes;
use strait_apiserver::auth::{Tokens, UserInfo};
use strait_apiserver::server::{Server, ServerConfig};
use strait_apiserver::store::AdmitAll;
use strait_apiserver::tls::Pki;
use strait_kube::{ClientConfig, KubeSource, Options};
use strait_model::{Change, ClusterState, Kind, ObjectKey};
use strait_proxy::{plan, render, render_full, Family, NodeContext};

const WAIT: Duration = Duration::from_secs(20);

struct Cluster {
    runtime: tokio::runtime::Runtime,
    server: Option<Server>,
    client: Client,
}

impl Cluster {
    fn start(tokens: Tokens) -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let pki = Pki::create(&["127.0.0.1".into()]).expect("pki");
        let server = runtime
            .block_on(Server::start(ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                pki,
                tokens,
                // The agent's own admission is what is tested: the server stores as given.
                admission: Box::new(AdmitAll),
                history: 10_000,
                extra_listeners: Vec::new(),
            }))
            .expect("server starts");
        let kubeconfig = server.admin_kubeconfig();
        let client = runtime.block_on(async {
            let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            Client::try_from(config).unwrap()
        });
        Cluster {
            runtime,
            server: Some(server),
            client,
        }
    }

    fn kubeconfig(&self) -> String {
        self.server.as_ref().unwrap().admin_kubeconfig()
    }

    fn create<K>(&self, namespace: Option<&str>, object: serde_json::Value)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let o: K = serde_json::from_value(object).unwrap();
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace.unwrap_or("default"));
        self.runtime
            .block_on(api.create(&PostParams::default(), &o))
            .expect("created");
    }

    fn create_cluster<K>(&self, object: serde_json::Value)
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let o: K = serde_json::from_value(object).unwrap();
        let api: Api<K> = Api::all(self.client.clone());
        self.runtime
            .block_on(api.create(&PostParams::default(), &o))
            .expect("created");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

fn namespace(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn node() -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
        "spec": {"podCIDRs": ["10.244.1.0/24"], "podCIDR": "10.244.1.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.50.11"}]}})
}

fn service(name: &str, cluster_ip: &str, port: i64) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "NodePort", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
            "selector": {"app": name},
            "ports": [{"name": "http", "port": port, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}]}})
}

fn slice(service: &str, addresses: &[&str]) -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> = addresses
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}, "nodeName": "node-1"}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-1"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints})
}

/// The objects as manifests, through the file path's reader and admission.
fn from_manifests(objects: &[serde_json::Value]) -> ClusterState {
    let text: String = objects
        .iter()
        .map(|o| serde_json::to_string(o).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let loaded = strait_model::parse_str("objects.json", &text, strait_model::Format::Json)
        .expect("manifests read");
    ClusterState::from_objects(
        loaded
            .objects
            .into_iter()
            .map(|(o, origin)| (o, Some(origin))),
    )
    .expect("no duplicates")
}

fn ruleset(state: &ClusterState) -> String {
    let ctx = NodeContext {
        node_name: "node-1".into(),
        node_ips: vec!["192.168.50.11".parse().unwrap()],
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
        ..NodeContext::default()
    };
    let table = plan(state, &ctx);
    assert!(!table.ports.is_empty(), "something is planned");
    render_full(&render(&table, Family::V4))
}

fn start_source(cluster: &Cluster) -> KubeSource {
    KubeSource::start(
        ClientConfig::KubeconfigYaml(cluster.kubeconfig()),
        Options::default(),
    )
    .expect("source starts")
}

fn set(update: &strait_agent::Update) -> Vec<Change> {
    match &update.changes {
        Changes::Set(s) => s.changes.clone(),
        Changes::Everything => panic!("a change set was expected, got everything"),
    }
}

#[test]
fn the_first_update_plans_as_the_manifests_and_changes_arrive_alone() {
    let cluster = Cluster::start(Tokens::default());
    let objects = vec![
        namespace("default"),
        node(),
        service("web", "10.96.0.50", 80),
        slice("web", &["10.244.1.5", "10.244.1.6"]),
        service("db", "10.96.0.51", 5432),
        slice("db", &["10.244.1.7"]),
    ];
    // The server makes `default` itself, as kube-apiserver does.
    cluster.create_cluster::<Node>(objects[1].clone());
    for o in &objects[2..] {
        if o["kind"] == "Service" {
            cluster.create::<Service>(None, o.clone());
        } else {
            cluster.create::<EndpointSlice>(None, o.clone());
        }
    }

    let mut source = start_source(&cluster);
    let first = source
        .next_timeout(Some(WAIT))
        .expect("source works")
        .expect("a first update after every kind is listed");
    assert!(matches!(first.changes, Changes::Everything));
    let files = from_manifests(&objects);
    assert_eq!(first.state.services.len(), 2);
    assert_eq!(first.state.endpoint_slices.len(), 2);
    assert_eq!(first.state.nodes.len(), 1);
    assert!(first.state.namespaces.get("", "default").is_some());
    // The rules the agent would program are those of `strait proxy` for
    // the same objects read from manifests.
    assert_eq!(ruleset(&first.state), ruleset(&files));
    // Nothing more until something changes.
    assert!(source
        .next_timeout(Some(Duration::from_millis(300)))
        .unwrap()
        .is_none());

    // Each change through the API: an update with that object alone.
    let api: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), "default");
    let key = ObjectKey::new(Kind::EndpointSlice, "default", "web-1");
    let mut took = Vec::new();
    for i in 0..15 {
        let mut s: EndpointSlice = cluster
            .runtime
            .block_on(api.get("web-1"))
            .expect("get the slice");
        let addresses = [format!("10.244.1.{}", 10 + i), "10.244.1.5".to_owned()];
        s.endpoints = addresses
            .iter()
            .map(|a| {
                serde_json::from_value(
                    json!({"addresses": [a], "conditions": {"ready": true}, "nodeName": "node-1"}),
                )
                .unwrap()
            })
            .collect();
        let started = Instant::now();
        cluster
            .runtime
            .block_on(api.replace("web-1", &PostParams::default(), &s))
            .expect("replaced");
        let update = source
            .next_timeout(Some(WAIT))
            .unwrap()
            .expect("the change arrives");
        took.push(started.elapsed());
        assert_eq!(set(&update), vec![Change::Modified(key.clone())]);
        let got = update
            .state
            .endpoint_slices
            .get("default", "web-1")
            .unwrap();
        assert_eq!(got.endpoints[0].addresses[0], addresses[0]);
    }
    took.sort();
    let median = took[took.len() / 2];
    println!(
        "API change → KubeSource update: median {:.2} ms, max {:.2} ms over {} changes (target < 50 ms)",
        median.as_secs_f64() * 1e3,
        took.last().unwrap().as_secs_f64() * 1e3,
        took.len()
    );

    // A deletion: just that key.
    let services: Api<Service> = Api::namespaced(cluster.client.clone(), "default");
    cluster
        .runtime
        .block_on(services.delete("db", &Default::default()))
        .expect("deleted");
    let update = source
        .next_timeout(Some(WAIT))
        .unwrap()
        .expect("the deletion arrives");
    assert_eq!(
        set(&update),
        vec![Change::Deleted(ObjectKey::new(
            Kind::Service,
            "default",
            "db"
        ))]
    );
}

#[test]
fn a_refused_object_hurts_only_itself() {
    let cluster = Cluster::start(Tokens::default());
    cluster.create::<Service>(None, service("web", "10.96.0.50", 80));
    let mut source = start_source(&cluster);
    let first = source
        .next_timeout(Some(WAIT))
        .unwrap()
        .expect("first update");
    assert_eq!(first.state.services.len(), 1);
    // The server stores it as given (AdmitAll); the agent's admission refuses it.
    let mut bad = service("bad", "10.96.0.52", 80);
    bad["spec"]["ports"][0]["port"] = json!(70000);
    cluster.create::<Service>(None, bad);
    cluster.create::<Service>(None, service("good", "10.96.0.53", 80));
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !seen.contains(&Change::Added(ObjectKey::new(
        Kind::Service,
        "default",
        "good",
    ))) {
        assert!(Instant::now() < deadline, "the good Service never came");
        if let Some(u) = source.next_timeout(Some(WAIT)).unwrap() {
            seen.extend(set(&u));
            assert!(u.state.services.get("default", "bad").is_none());
        }
    }
    assert!(!seen.iter().any(|c| c.key().name == "bad"), "{seen:?}");
    assert_eq!(source.refused(), 1);
}

#[test]
fn a_client_the_server_refuses_is_said_with_the_resource_and_verb() {
    let tokens = Tokens {
        tokens: vec![(
            "no-rights-token".into(),
            UserInfo {
                name: "system:serviceaccount:kube-system:nobody".into(),
                groups: vec!["system:serviceaccounts".into()],
            },
        )],
    };
    let cluster = Cluster::start(tokens);
    let kubeconfig = cluster
        .server
        .as_ref()
        .unwrap()
        .kubeconfig("nobody", "no-rights-token");
    let mut source =
        KubeSource::start(ClientConfig::KubeconfigYaml(kubeconfig), Options::default())
            .expect("source starts");
    // No update: nothing can be listed.
    assert!(source
        .next_timeout(Some(Duration::from_secs(2)))
        .unwrap()
        .is_none());
    let report = source.health().report();
    assert!(report.last_updated.is_none());
    let services = report
        .failing
        .iter()
        .find(|(k, _, _)| *k == Kind::Service)
        .expect("the Services' list fails");
    assert!(
        services
            .2
            .contains("forbids us to list services (403 Forbidden)"),
        "{}",
        services.2
    );
}

/// A watch from a version compacted away is one `ERROR` event with a 410
/// Status (HTTP 200), as kube-apiserver sends it; a source that missed
/// changes while the server was away lists again on it and hands out
/// exactly what differs.
#[test]
fn a_compacted_version_is_an_error_event_and_the_source_relists() {
    let mut cluster = Cluster::start(Tokens::default());
    cluster.create::<Service>(None, service("web", "10.96.0.50", 80));
    let mut source = start_source(&cluster);
    let first = source
        .next_timeout(Some(WAIT))
        .unwrap()
        .expect("first update");
    assert_eq!(first.state.services.len(), 1);
    let old = cluster
        .server
        .as_ref()
        .unwrap()
        .store()
        .resource_version()
        .to_string();

    // Away: changes taken meanwhile (by another API server, say), then compacted.
    let mut server = cluster.server.take().unwrap();
    cluster.runtime.block_on(server.stop_serving());
    let services = strait_apiserver::Resource::by_plural("", "v1", "services").unwrap();
    server
        .with_write_context(|ctx| {
            server
                .store()
                .create(services, "default", service("db", "10.96.0.51", 5432), ctx)
        })
        .unwrap();
    server.store().compact();
    cluster.runtime.block_on(server.serve_again()).unwrap();
    cluster.server = Some(server);

    let api: Api<Service> = Api::all(cluster.client.clone());
    let first_event = cluster.runtime.block_on(async {
        use futures_util::StreamExt;
        let params = kube::api::WatchParams::default();
        // The client's pooled connection may be one the restart closed:
        // that send fails before any request is made; the next opens anew.
        let mut tries = 0;
        let stream = loop {
            match api.watch(&params, &old).await {
                Ok(stream) => break stream,
                Err(kube::Error::HyperError(_) | kube::Error::Service(_)) if tries < 3 => {
                    tries += 1
                }
                Err(e) => panic!("HTTP 200: {e:?}"),
            }
        };
        let mut stream = std::pin::pin!(stream);
        stream.next().await
    });
    match first_event {
        Some(Ok(kube::api::WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected an ERROR 410 event, got {other:?}"),
    }

    let deadline = Instant::now() + WAIT;
    let update = loop {
        assert!(Instant::now() < deadline, "no relist after 410");
        if let Some(u) = source.next_timeout(Some(WAIT)).unwrap() {
            break u;
        }
    };
    assert_eq!(
        set(&update),
        vec![Change::Added(ObjectKey::new(
            Kind::Service,
            "default",
            "db"
        ))]
    );
    assert!(source.full_lists(Kind::Service) >= 2);
}

fn cluster_policy(name: &str, action: &str) -> serde_json::Value {
    json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "tier": "Admin",
            "priority": 5,
            "subject": {"namespaces": {}},
            "ingress": [{"action": action, "from": [{"namespaces": {}}]}],
        },
    })
}

/// The lab's API server serves ClusterNetworkPolicy (discovery says so):
/// the agent's source watches it, its objects come in the first update and
/// a new one arrives as a change of that object alone; one the agent's
/// admission refuses stays out.
#[test]
fn cluster_network_policies_are_watched_when_the_server_serves_them() {
    let cluster = Cluster::start(Tokens::default());
    cluster.create_cluster::<strait_model::ClusterNetworkPolicy>(cluster_policy("first", "Deny"));
    let mut source = start_source(&cluster);
    let first = source
        .next_timeout(Some(WAIT))
        .unwrap()
        .expect("a first update once every kind, CNPs included, is listed");
    assert_eq!(first.state.cluster_network_policies.len(), 1);
    let got = first
        .state
        .cluster_network_policies
        .get("", "first")
        .expect("the policy");
    assert_eq!(got.spec.ingress[0].action, "Deny");

    // The server stores what it is given (AdmitAll): the agent refuses it.
    cluster.create_cluster::<strait_model::ClusterNetworkPolicy>(cluster_policy("bad", "Allow"));
    cluster.create_cluster::<strait_model::ClusterNetworkPolicy>(cluster_policy("second", "Pass"));
    let key = ObjectKey::new(Kind::ClusterNetworkPolicy, "", "second");
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while !seen.contains(&Change::Added(key.clone())) {
        assert!(Instant::now() < deadline, "the second policy never came");
        if let Some(u) = source.next_timeout(Some(WAIT)).unwrap() {
            seen.extend(set(&u));
            assert!(u.state.cluster_network_policies.get("", "bad").is_none());
        }
    }
    assert!(!seen.iter().any(|c| c.key().name == "bad"), "{seen:?}");
    assert_eq!(source.refused(), 1);
}

/// The Ingress controller's source: the Gateway API's kinds are watched
/// (optional kinds the lab serves), and `patch_status` writes a
/// cluster-scoped GatewayClass's status and refuses to overwrite a route
/// whose resourceVersion moved on (409), which the controller relies on
/// to keep other controllers' `status.parents`.
#[test]
fn the_ingress_controller_watches_gateway_api_and_writes_its_status() {
    let cluster = Cluster::start(Tokens::default());
    cluster.create_cluster::<strait_model::GatewayClass>(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": "strait"},
        "spec": {"controllerName": "strait.dev/gateway-controller"}
    }));
    cluster.create::<strait_model::HTTPRoute>(
        None,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gw"}]}
        }),
    );
    let mut source = KubeSource::start(
        ClientConfig::KubeconfigYaml(cluster.kubeconfig()),
        Options {
            kinds: strait_kube::INGRESS_KINDS.to_vec(),
            optional: strait_kube::INGRESS_OPTIONAL_KINDS.to_vec(),
            ..Options::default()
        },
    )
    .expect("source starts");
    let first = source
        .next_timeout(Some(WAIT))
        .unwrap()
        .expect("a first update once every kind is listed");
    assert_eq!(first.state.gateway_classes.len(), 1);
    let route = first.state.http_routes.get("default", "r").expect("route");
    let stale = route.metadata.resource_version.clone().expect("version");

    let condition = json!({"type": "Accepted", "status": "True", "reason": "Accepted",
        "message": "", "observedGeneration": 1, "lastTransitionTime": "2026-12-01T00:00:00Z"});
    source
        .patch_status(
            Kind::GatewayClass,
            "",
            "strait",
            &json!({"status": {"conditions": [condition.clone()]}}),
        )
        .expect("the class's status is written");
    let parents = |controller: &str| {
        json!({"metadata": {"resourceVersion": stale}, "status": {"parents": [
            {"parentRef": {"name": "gw"}, "controllerName": controller, "conditions": [condition.clone()]}
        ]}})
    };
    source
        .patch_status(Kind::HTTPRoute, "default", "r", &parents("a.example/one"))
        .expect("written over the version read");
    // The same version again: the route moved on (the first write), 409.
    let e = source
        .patch_status(Kind::HTTPRoute, "default", "r", &parents("b.example/two"))
        .expect_err("a stale resourceVersion is refused");
    assert!(e.to_string().contains("Conflict"), "{e}");
    assert!(
        e.to_string().contains("HTTPRoute default/r"),
        "the error names the object: {e}"
    );

    // Both writes that went through come back through the watches.
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "the status never came back");
        let Some(u) = source.next_timeout(Some(WAIT)).unwrap() else {
            continue;
        };
        let class = u.state.gateway_classes.get("", "strait").unwrap();
        let route = u.state.http_routes.get("default", "r").unwrap();
        let class_ok = class
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.len() == 1 && s.conditions[0].reason == "Accepted");
        let route_ok = route.status.as_ref().is_some_and(|s| {
            s.parents.len() == 1 && s.parents[0].controller_name == "a.example/one"
        });
        if class_ok && route_ok {
            break;
        }
    }
}
