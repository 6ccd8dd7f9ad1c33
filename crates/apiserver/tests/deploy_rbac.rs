//! Least privilege of deploy/, held by a test: the ClusterRoles and
//! bindings in the repository's deploy/ directory, evaluated with the
//! lab's RBAC authorizer (kube's rule matching), grant the agent's and the
//! DNS server's ServiceAccounts exactly what they need — every other verb
//! on every served resource (and subresource) is refused.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use strait_apiserver::auth::{authorize_with, Attributes, Rbac, UserInfo};
use strait_apiserver::resources::VERBS;
use strait_apiserver::RESOURCES;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Every document of every deploy/*.yaml, as JSON.
fn documents() -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ exists at the repository root")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/");
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        docs.extend(parsed.into_iter().filter(|d| !d.is_null()));
    }
    docs
}

fn of_kind(docs: &[Value], kind: &str) -> Vec<Value> {
    docs.iter().filter(|d| d["kind"] == kind).cloned().collect()
}

struct Deploy {
    cluster_roles: Vec<Value>,
    cluster_role_bindings: Vec<Value>,
    roles: Vec<Value>,
    role_bindings: Vec<Value>,
    docs: Vec<Value>,
}

impl Deploy {
    fn load() -> Deploy {
        let docs = documents();
        Deploy {
            cluster_roles: of_kind(&docs, "ClusterRole"),
            cluster_role_bindings: of_kind(&docs, "ClusterRoleBinding"),
            roles: of_kind(&docs, "Role"),
            role_bindings: of_kind(&docs, "RoleBinding"),
            docs,
        }
    }

    fn rbac(&self) -> Rbac<'_, Value> {
        Rbac {
            cluster_roles: &self.cluster_roles,
            cluster_role_bindings: &self.cluster_role_bindings,
            roles: &self.roles,
            role_bindings: &self.role_bindings,
        }
    }

    /// Every (group, resource[/subresource], verb) `user` may use, over
    /// every served resource and a few that are not served by the lab but
    /// exist in a real cluster, in every scope the resource has.
    fn granted(&self, user: &UserInfo) -> BTreeSet<(String, String, String)> {
        let mut targets: Vec<(String, String, bool)> = Vec::new();
        for r in RESOURCES {
            targets.push((r.group.into(), r.plural.into(), r.namespaced));
            for sub in r.subresources {
                targets.push((
                    r.group.into(),
                    format!("{}/{}", r.plural, sub.name()),
                    r.namespaced,
                ));
            }
        }
        for (group, resource, namespaced) in [
            ("events.k8s.io", "events", true),
            ("", "pods/exec", true),
            ("", "pods/eviction", true),
            ("", "nodes/status", false),
            ("", "nodes/proxy", false),
            ("", "serviceaccounts/token", true),
            ("certificates.k8s.io", "certificatesigningrequests", false),
        ] {
            targets.push((group.into(), resource.into(), namespaced));
        }
        let extra_verbs = ["impersonate", "escalate", "bind", "approve"];
        let mut granted = BTreeSet::new();
        for (group, resource, namespaced) in &targets {
            let (plural, subresource) = resource.split_once('/').unwrap_or((resource, ""));
            let scopes: &[&str] = if *namespaced {
                &["", "kube-system", "default"]
            } else {
                &[""]
            };
            for verb in VERBS.iter().chain(&extra_verbs) {
                for ns in scopes {
                    for name in ["", "node-1"] {
                        let a = Attributes {
                            verb: (*verb).into(),
                            api_group: group.clone(),
                            resource: plural.into(),
                            subresource: subresource.into(),
                            namespace: (*ns).into(),
                            name: name.into(),
                            path: String::new(),
                        };
                        if authorize_with(&self.rbac(), user, &a).is_ok() {
                            granted.insert((group.clone(), resource.clone(), (*verb).into()));
                        }
                    }
                }
            }
        }
        granted
    }
}

fn set(items: &[(&str, &str, &[&str])]) -> BTreeSet<(String, String, String)> {
    let mut s = BTreeSet::new();
    for (group, resource, verbs) in items {
        for verb in *verbs {
            s.insert(((*group).into(), (*resource).into(), (*verb).into()));
        }
    }
    s
}

/// What every authenticated user gets in the matrix by kube's default
/// policy (built in): nothing — its resources (selfsubject*reviews) are
/// not in the matrix, and its paths are not resources.
fn defaults() -> BTreeSet<(String, String, String)> {
    BTreeSet::new()
}

#[test]
fn the_agent_may_do_exactly_what_it_needs() {
    let deploy = Deploy::load();
    let agent = UserInfo::service_account("kube-system", "strait");
    let watch: &[&str] = &["list", "watch"];
    let mut expected = set(&[
        ("", "services", watch),
        ("", "namespaces", watch),
        ("", "pods", watch),
        ("discovery.k8s.io", "endpointslices", watch),
        ("networking.k8s.io", "networkpolicies", watch),
        ("networking.k8s.io", "ingresses", watch),
        ("networking.k8s.io", "ingressclasses", watch),
        ("policy.networking.k8s.io", "clusternetworkpolicies", watch),
        ("", "nodes", &["get", "list", "watch", "patch"]),
        ("", "events", &["create", "patch"]),
        ("events.k8s.io", "events", &["create", "patch"]),
    ]);
    expected.extend(defaults());
    let granted = deploy.granted(&agent);
    let extra: Vec<_> = granted.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&granted).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "more than needed: {extra:?}\nless than needed: {missing:?}"
    );
}

#[test]
fn the_dns_server_may_only_read_what_it_answers_from() {
    let deploy = Deploy::load();
    let dns = UserInfo::service_account("kube-system", "strait-dns");
    let watch: &[&str] = &["list", "watch"];
    let expected = set(&[
        ("", "services", watch),
        ("", "namespaces", watch),
        ("", "pods", watch),
        ("discovery.k8s.io", "endpointslices", watch),
    ]);
    assert_eq!(deploy.granted(&dns), expected);
}

#[test]
fn the_ingress_controller_reads_what_it_routes_and_writes_only_status() {
    let deploy = Deploy::load();
    let ingress = UserInfo::service_account("kube-system", "strait-ingress");
    let watch: &[&str] = &["list", "watch"];
    let expected = set(&[
        ("", "services", watch),
        ("", "secrets", watch),
        ("discovery.k8s.io", "endpointslices", watch),
        ("networking.k8s.io", "ingresses", watch),
        ("networking.k8s.io", "ingressclasses", watch),
        ("networking.k8s.io", "ingresses/status", &["patch"]),
        ("", "namespaces", watch),
        ("gateway.networking.k8s.io", "gatewayclasses", watch),
        ("gateway.networking.k8s.io", "gateways", watch),
        ("gateway.networking.k8s.io", "httproutes", watch),
        ("gateway.networking.k8s.io", "referencegrants", watch),
        (
            "gateway.networking.k8s.io",
            "gatewayclasses/status",
            &["patch"],
        ),
        ("gateway.networking.k8s.io", "gateways/status", &["patch"]),
        ("gateway.networking.k8s.io", "httproutes/status", &["patch"]),
    ]);
    assert_eq!(deploy.granted(&ingress), expected);
}

#[test]
fn others_get_nothing_from_deploy() {
    let deploy = Deploy::load();
    for user in [
        UserInfo::service_account("kube-system", "default"),
        UserInfo::service_account("default", "strait"),
        UserInfo::new("strait", &[]),
        UserInfo::new("system:serviceaccount:kube-system:strait-dnsx", &[]),
    ] {
        assert_eq!(deploy.granted(&user), defaults(), "{}", user.name);
    }
}

#[test]
fn denials_read_as_kube_apiserver_writes_them() {
    let deploy = Deploy::load();
    let agent = UserInfo::service_account("kube-system", "strait");
    let list_secrets = Attributes {
        verb: "list".into(),
        resource: "secrets".into(),
        ..Attributes::default()
    };
    let e = authorize_with(&deploy.rbac(), &agent, &list_secrets).unwrap_err();
    assert_eq!(e.code, 403);
    assert_eq!(
        e.message,
        r#"secrets is forbidden: User "system:serviceaccount:kube-system:strait" cannot list resource "secrets" in API group "" at the cluster scope"#
    );
    let delete_pod = Attributes {
        verb: "delete".into(),
        resource: "pods".into(),
        namespace: "default".into(),
        name: "web".into(),
        ..Attributes::default()
    };
    let e = authorize_with(&deploy.rbac(), &agent, &delete_pod).unwrap_err();
    assert_eq!(
        e.message,
        r#"pods "web" is forbidden: User "system:serviceaccount:kube-system:strait" cannot delete resource "pods" in API group "" in the namespace "default""#
    );
}

#[test]
fn bindings_and_workloads_name_the_same_service_accounts() {
    let deploy = Deploy::load();
    let accounts: BTreeSet<(String, String)> = of_kind(&deploy.docs, "ServiceAccount")
        .iter()
        .map(|sa| {
            (
                sa["metadata"]["namespace"].as_str().unwrap().to_owned(),
                sa["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // Every binding's subjects are ServiceAccounts deploy/ creates, and
    // every binding's role is one deploy/ defines.
    for binding in &deploy.cluster_role_bindings {
        let role = binding["roleRef"]["name"].as_str().unwrap();
        assert!(
            deploy
                .cluster_roles
                .iter()
                .any(|r| r["metadata"]["name"] == role),
            "{role}"
        );
        for subject in binding["subjects"].as_array().unwrap() {
            assert_eq!(subject["kind"], "ServiceAccount");
            let key = (
                subject["namespace"].as_str().unwrap().to_owned(),
                subject["name"].as_str().unwrap().to_owned(),
            );
            assert!(accounts.contains(&key), "{key:?}");
        }
    }
    let workload_account = |kind: &str, name: &str| -> String {
        let w = deploy
            .docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} in deploy/"));
        w["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(workload_account("DaemonSet", "strait"), "strait");
    assert_eq!(workload_account("Deployment", "strait-dns"), "strait-dns");
    assert_eq!(
        workload_account("DaemonSet", "strait-ingress"),
        "strait-ingress"
    );
}

#[test]
fn the_agent_is_not_privileged_and_adds_only_net_admin() {
    let deploy = Deploy::load();
    let ds = deploy
        .docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet" && d["metadata"]["name"] == "strait")
        .unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    for c in pod["containers"].as_array().unwrap() {
        let sc = &c["securityContext"];
        assert_ne!(sc["privileged"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(sc["capabilities"]["add"], serde_json::json!(["NET_ADMIN"]));
    }
    let dns = deploy
        .docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "kube-dns")
        .unwrap();
    assert_eq!(dns["spec"]["clusterIP"], "10.96.0.10");
    assert_eq!(dns["spec"]["selector"]["k8s-app"], "strait-dns");
}

#[test]
fn the_ingress_controller_is_not_root_and_adds_only_net_bind_service() {
    let deploy = Deploy::load();
    let ds = deploy
        .docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet" && d["metadata"]["name"] == "strait-ingress")
        .unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    for c in pod["containers"].as_array().unwrap() {
        let sc = &c["securityContext"];
        assert_ne!(sc["privileged"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["runAsNonRoot"], true);
        assert_ne!(sc["runAsUser"], 0);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(
            sc["capabilities"]["add"],
            serde_json::json!(["NET_BIND_SERVICE"])
        );
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        assert!(args.starts_with(&["ingress", "--kubernetes"]), "{args:?}");
    }
}
