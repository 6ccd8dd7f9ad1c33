//! The RBAC evaluation and token authentication, without the store.

use serde_json::{json, Value};

use super::*;

fn attrs(verb: &str, group: &str, resource: &str, namespace: &str) -> Attributes {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    Attributes {
        verb: verb.into(),
        api_group: group.into(),
        resource: resource.into(),
        subresource: subresource.into(),
        namespace: namespace.into(),
        ..Attributes::default()
    }
}

fn named(mut a: Attributes, name: &str) -> Attributes {
    a.name = name.into();
    a
}

fn path(verb: &str, path: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        path: path.into(),
        ..Attributes::default()
    }
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
           "metadata": {"name": name}, "rules": rules})
}

fn role(ns: &str, name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
           "metadata": {"name": name, "namespace": ns}, "rules": rules})
}

fn crb(name: &str, role: &str, subjects: Value) -> Value {
    json!({"kind": "ClusterRoleBinding", "metadata": {"name": name},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
           "subjects": subjects})
}

fn rb(ns: &str, name: &str, kind: &str, role: &str, subjects: Value) -> Value {
    json!({"kind": "RoleBinding", "metadata": {"name": name, "namespace": ns},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
           "subjects": subjects})
}

fn user(name: &str) -> Value {
    json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name}])
}

/// Owned RBAC objects, lent out as an [`Rbac`].
#[derive(Default)]
struct Objects {
    cluster_roles: Vec<Value>,
    cluster_role_bindings: Vec<Value>,
    roles: Vec<Value>,
    role_bindings: Vec<Value>,
}

impl Objects {
    fn rbac(&self) -> Rbac<'_, Value> {
        Rbac {
            cluster_roles: &self.cluster_roles,
            cluster_role_bindings: &self.cluster_role_bindings,
            roles: &self.roles,
            role_bindings: &self.role_bindings,
        }
    }

    fn allows(&self, who: &UserInfo, a: &Attributes) -> bool {
        allows(&self.rbac(), who, a)
    }

    fn message(&self, who: &UserInfo, a: &Attributes) -> String {
        let e = authorize_with(&self.rbac(), who, a).unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(e.reason, "Forbidden");
        e.message
    }
}

fn bob() -> UserInfo {
    UserInfo::new("bob", &[])
}

// --- authentication ---

fn tokens() -> Tokens {
    Tokens {
        tokens: vec![
            ("admin-token-abc".into(), UserInfo::new("admin", &[MASTERS])),
            (
                "agent-token-xyz".into(),
                UserInfo {
                    name: service_account_user("kube-system", "strait"),
                    groups: vec!["system:serviceaccounts".into()],
                },
            ),
            (String::new(), UserInfo::new("nobody-should-match", &[])),
        ],
    }
}

#[test]
fn bearer_tokens_name_their_user_and_add_authenticated() {
    let t = tokens();
    let admin = t.authenticate(Some("Bearer admin-token-abc")).unwrap();
    assert_eq!(admin.name, "admin");
    assert!(admin.groups.iter().any(|g| g == MASTERS));
    let agent = t.authenticate(Some("  bearer agent-token-xyz ")).unwrap();
    assert_eq!(agent.name, "system:serviceaccount:kube-system:strait");
    // Added although the configured user lacked it, and only once.
    assert_eq!(
        agent.groups,
        ["system:serviceaccounts", "system:authenticated"]
    );
    assert_eq!(
        admin.groups.iter().filter(|g| *g == AUTHENTICATED).count(),
        1
    );
}

#[test]
fn missing_malformed_and_unknown_tokens_are_401() {
    let t = tokens();
    for header in [
        None,
        Some(""),
        Some("Bearer"),
        Some("Bearer "),
        Some("Bearer  admin-token-abc"),
        Some("Basic YWRtaW46cGFzcw=="),
        Some("Token admin-token-abc"),
        Some("Bearer admin-token-ab"),
        Some("Bearer admin-token-abcd"),
        Some("Bearer ADMIN-TOKEN-ABC"),
        Some("Bearer agent-token-xyz\0"),
    ] {
        let e = t.authenticate(header).unwrap_err();
        assert_eq!(e.code, 401, "{header:?}");
        assert_eq!(e.reason, "Unauthorized");
        assert_eq!(e.message, "Unauthorized");
    }
    // kube takes the second word; a third is ignored.
    assert!(t
        .authenticate(Some("Bearer admin-token-abc trailing"))
        .is_ok());
}

#[test]
fn constant_time_eq_is_equality() {
    assert!(constant_time_eq(b"", b""));
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
    assert!(!constant_time_eq(b"ab", b"abc"));
    assert!(!constant_time_eq(b"", b"\0"));
}

#[test]
fn service_account_users_get_kube_groups() {
    let sa = UserInfo::service_account("kube-system", "strait");
    assert_eq!(sa.name, "system:serviceaccount:kube-system:strait");
    assert_eq!(
        sa.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:kube-system",
            "system:authenticated"
        ]
    );
}

// --- built-in policy ---

#[test]
fn masters_may_do_anything() {
    let none = Objects::default();
    let admin = UserInfo::new("admin", &[MASTERS]);
    assert!(none.allows(&admin, &attrs("delete", "", "secrets", "kube-system")));
    assert!(none.allows(
        &admin,
        &attrs("escalate", "rbac.authorization.k8s.io", "clusterroles", "")
    ));
    assert!(none.allows(&admin, &path("post", "/anything")));
}

#[test]
fn every_authenticated_user_may_discover() {
    let none = Objects::default();
    let b = bob();
    for p in [
        "/api",
        "/api/v1",
        "/apis",
        "/apis/apps/v1",
        "/version",
        "/version/",
        "/healthz",
        "/livez",
        "/readyz",
        "/openapi/v2",
        "/openapi/v3",
        "/openapi/v3/api/v1",
    ] {
        assert!(none.allows(&b, &path("get", p)), "{p}");
    }
    assert!(none.allows(
        &b,
        &attrs(
            "create",
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            ""
        )
    ));
    assert!(none.allows(
        &b,
        &attrs(
            "create",
            "authorization.k8s.io",
            "selfsubjectrulesreviews",
            ""
        )
    ));
    assert!(none.allows(
        &b,
        &attrs("create", "authentication.k8s.io", "selfsubjectreviews", "")
    ));
    // Only what the defaults name.
    assert!(!none.allows(&b, &path("post", "/api")));
    assert!(!none.allows(&b, &path("get", "/metrics")));
    assert!(!none.allows(&b, &path("get", "/healthz/etcd")));
    assert!(!none.allows(&b, &path("get", "/apiextra")));
    assert!(!none.allows(
        &b,
        &attrs(
            "list",
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            ""
        )
    ));
    assert!(!none.allows(&b, &attrs("get", "", "pods", "default")));
    // A user without system:authenticated (never made by authenticate) gets nothing.
    let bare = UserInfo {
        name: "x".into(),
        groups: vec![],
    };
    assert!(!none.allows(&bare, &path("get", "/api")));
}

// --- messages ---

#[test]
fn forbidden_messages_read_as_kube_apiserver_writes_them() {
    let none = Objects::default();
    let b = bob();
    assert_eq!(
        none.message(&b, &attrs("list", "", "pods", "default")),
        r#"pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default""#
    );
    assert_eq!(
        none.message(&b, &attrs("list", "", "nodes", "")),
        r#"nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" at the cluster scope"#
    );
    assert_eq!(
        none.message(
            &b,
            &named(attrs("get", "apps", "deployments", "web"), "front")
        ),
        r#"deployments.apps "front" is forbidden: User "bob" cannot get resource "deployments" in API group "apps" in the namespace "web""#
    );
    assert_eq!(
        none.message(
            &b,
            &named(attrs("update", "", "pods/status", "default"), "p")
        ),
        r#"pods "p" is forbidden: User "bob" cannot update resource "pods/status" in API group "" in the namespace "default""#
    );
    assert_eq!(
        none.message(&b, &path("get", "/metrics")),
        r#"forbidden: User "bob" cannot get path "/metrics""#
    );
    let e = authorize_with(
        &none.rbac(),
        &b,
        &named(attrs("get", "apps", "deployments", "web"), "front"),
    )
    .unwrap_err();
    let status = e.status();
    assert_eq!(status["details"]["name"], "front");
    assert_eq!(status["details"]["group"], "apps");
    assert_eq!(status["details"]["kind"], "deployments");
}

#[test]
fn a_binding_to_a_missing_role_is_named_in_the_denial() {
    let mut o = Objects::default();
    o.cluster_role_bindings.push(crb("b", "gone", user("bob")));
    o.role_bindings
        .push(rb("default", "rb", "Role", "also-gone", user("bob")));
    assert_eq!(
        o.message(&bob(), &attrs("list", "", "pods", "default")),
        r#"pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default": RBAC: [clusterrole.rbac.authorization.k8s.io "gone" not found, role.rbac.authorization.k8s.io "also-gone" not found]"#
    );
    assert_eq!(
        o.message(&bob(), &attrs("list", "", "nodes", "")),
        r#"nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found"#
    );
}

// --- bindings and scopes ---

#[test]
fn cluster_role_bindings_grant_everywhere_role_bindings_only_in_their_namespace() {
    let mut o = Objects::default();
    o.cluster_roles.push(cluster_role(
        "pod-reader",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]),
    ));
    o.roles.push(role(
        "team",
        "svc-editor",
        json!([{"apiGroups": [""], "resources": ["services"], "verbs": ["*"]}]),
    ));
    o.cluster_role_bindings
        .push(crb("alice-reads", "pod-reader", user("alice")));
    o.role_bindings
        .push(rb("team", "bob-edits", "Role", "svc-editor", user("bob")));
    o.role_bindings.push(rb(
        "team",
        "bob-reads",
        "ClusterRole",
        "pod-reader",
        user("bob"),
    ));
    let alice = UserInfo::new("alice", &[]);
    let b = bob();

    for ns in ["default", "team", ""] {
        assert!(o.allows(&alice, &attrs("list", "", "pods", ns)), "{ns}");
        assert!(o.allows(&alice, &attrs("watch", "", "pods", ns)), "{ns}");
    }
    assert!(!o.allows(&alice, &attrs("delete", "", "pods", "default")));
    assert!(!o.allows(&alice, &attrs("list", "", "services", "team")));
    assert!(!o.allows(&alice, &attrs("list", "apps", "pods", "default")));

    assert!(o.allows(&b, &attrs("delete", "", "services", "team")));
    assert!(o.allows(&b, &attrs("list", "", "pods", "team")));
    assert!(!o.allows(&b, &attrs("delete", "", "services", "default")));
    assert!(!o.allows(&b, &attrs("list", "", "pods", "default")));
    // A RoleBinding never grants across all namespaces.
    assert!(!o.allows(&b, &attrs("list", "", "pods", "")));
    assert!(!o.allows(&b, &attrs("list", "", "services", "")));
}

#[test]
fn role_bindings_use_only_their_own_namespaces_role() {
    let mut o = Objects::default();
    // A Role of the same name, but in another namespace.
    o.roles.push(role(
        "other",
        "editor",
        json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
    ));
    o.role_bindings
        .push(rb("team", "b", "Role", "editor", user("bob")));
    assert!(!o.allows(&bob(), &attrs("get", "", "pods", "team")));
    assert!(!o.allows(&bob(), &attrs("get", "", "pods", "other")));
    // A binding whose metadata says another namespace grants nothing here.
    let mut o = Objects::default();
    o.roles.push(role(
        "team",
        "editor",
        json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
    ));
    o.role_bindings
        .push(rb("elsewhere", "b", "Role", "editor", user("bob")));
    assert!(!o.allows(&bob(), &attrs("get", "", "pods", "team")));
}

#[test]
fn a_cluster_role_binding_to_a_role_grants_nothing() {
    let mut o = Objects::default();
    o.roles.push(role(
        "default",
        "r",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
    ));
    let mut binding = crb("b", "r", user("bob"));
    binding["roleRef"]["kind"] = "Role".into();
    o.cluster_role_bindings.push(binding);
    assert!(!o.allows(&bob(), &attrs("get", "", "pods", "default")));
}

// --- rule matching ---

#[test]
fn subresources_match_only_their_own_form() {
    let mut o = Objects::default();
    o.cluster_roles.push(cluster_role(
        "r",
        json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "update"]},
            {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
            {"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["update"]},
        ]),
    ));
    o.cluster_role_bindings.push(crb("b", "r", user("bob")));
    let b = bob();
    assert!(o.allows(&b, &attrs("update", "", "pods", "default")));
    assert!(!o.allows(&b, &attrs("update", "", "pods/status", "default")));
    assert!(!o.allows(&b, &attrs("get", "", "pods/log", "default")));
    assert!(o.allows(&b, &attrs("patch", "", "nodes/status", "")));
    assert!(!o.allows(&b, &attrs("patch", "", "nodes", "")));
    assert!(o.allows(&b, &attrs("update", "apps", "deployments/scale", "default")));
    assert!(o.allows(
        &b,
        &attrs("update", "apps", "statefulsets/scale", "default")
    ));
    assert!(!o.allows(&b, &attrs("update", "apps", "deployments", "default")));
    assert!(!o.allows(
        &b,
        &attrs("update", "apps", "deployments/status", "default")
    ));

    let mut all = Objects::default();
    all.cluster_roles.push(cluster_role(
        "r",
        json!([{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]),
    ));
    all.cluster_role_bindings.push(crb("b", "r", user("bob")));
    assert!(all.allows(&b, &attrs("get", "", "pods/log", "default")));
    assert!(all.allows(&b, &attrs("get", "", "secrets", "default")));
    assert!(!all.allows(&b, &attrs("get", "apps", "deployments", "default")));
}

#[test]
fn wildcards_in_verbs_and_groups() {
    let mut o = Objects::default();
    o.cluster_roles.push(cluster_role(
        "r",
        json!([{"apiGroups": ["*"], "resources": ["configmaps", "deployments"], "verbs": ["*"]}]),
    ));
    o.cluster_role_bindings.push(crb("b", "r", user("bob")));
    let b = bob();
    assert!(o.allows(&b, &attrs("deletecollection", "", "configmaps", "x")));
    assert!(o.allows(&b, &attrs("patch", "apps", "deployments", "x")));
    assert!(o.allows(&b, &attrs("patch", "example.com", "deployments", "x")));
    assert!(!o.allows(&b, &attrs("get", "", "secrets", "x")));
}

#[test]
fn resource_names_need_a_name_in_the_request() {
    let mut o = Objects::default();
    o.cluster_roles.push(cluster_role(
        "r",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["strait"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]}]),
    ));
    o.cluster_role_bindings.push(crb("b", "r", user("bob")));
    let b = bob();
    for verb in ["get", "update", "patch", "delete"] {
        assert!(
            o.allows(&b, &named(attrs(verb, "", "configmaps", "ks"), "strait")),
            "{verb}"
        );
        assert!(
            !o.allows(&b, &named(attrs(verb, "", "configmaps", "ks"), "other")),
            "{verb}"
        );
    }
    // No name: a rule with resourceNames does not grant them (kube).
    for verb in ["list", "watch", "create", "deletecollection"] {
        assert!(
            !o.allows(&b, &attrs(verb, "", "configmaps", "ks")),
            "{verb}"
        );
    }
    // list/watch with a metadata.name field selector carry the name.
    assert!(o.allows(&b, &named(attrs("watch", "", "configmaps", "ks"), "strait")));
}

#[test]
fn non_resource_urls_exact_and_by_prefix_from_cluster_roles_only() {
    let mut o = Objects::default();
    o.cluster_roles.push(cluster_role(
        "metrics",
        json!([{"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]}]),
    ));
    o.cluster_role_bindings
        .push(crb("b", "metrics", user("bob")));
    o.cluster_roles.push(cluster_role(
        "paths-in-a-role-binding",
        json!([{"nonResourceURLs": ["*"], "verbs": ["*"]}]),
    ));
    o.role_bindings.push(rb(
        "default",
        "rb",
        "ClusterRole",
        "paths-in-a-role-binding",
        user("carol"),
    ));
    let b = bob();
    assert!(o.allows(&b, &path("get", "/metrics")));
    assert!(!o.allows(&b, &path("get", "/metrics/cadvisor")));
    assert!(o.allows(&b, &path("get", "/debug/pprof/heap")));
    assert!(o.allows(&b, &path("get", "/debug/")));
    assert!(!o.allows(&b, &path("get", "/debug")));
    assert!(!o.allows(&b, &path("post", "/metrics")));
    // A resource rule never grants a path, nor a path rule a resource.
    assert!(!o.allows(&b, &attrs("get", "", "metrics", "")));
    let carol = UserInfo::new("carol", &[]);
    assert!(!o.allows(&carol, &path("get", "/metrics")));
}

#[test]
fn subjects_users_groups_and_service_accounts() {
    let mut o = Objects::default();
    o.cluster_roles.push(cluster_role(
        "nodes",
        json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]),
    ));
    o.cluster_role_bindings.push(crb(
        "sa",
        "nodes",
        json!([{"kind": "ServiceAccount", "name": "strait", "namespace": "kube-system"}]),
    ));
    o.cluster_role_bindings.push(crb(
        "group",
        "nodes",
        json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "ops"}]),
    ));
    // A ServiceAccount subject with no namespace in a ClusterRoleBinding
    // names nobody.
    o.cluster_role_bindings.push(crb(
        "sa-no-ns",
        "nodes",
        json!([{"kind": "ServiceAccount", "name": "ghost"}]),
    ));
    let list_nodes = attrs("list", "", "nodes", "");
    assert!(o.allows(
        &UserInfo::service_account("kube-system", "strait"),
        &list_nodes
    ));
    assert!(!o.allows(&UserInfo::service_account("default", "strait"), &list_nodes));
    assert!(!o.allows(
        &UserInfo::service_account("kube-system", "other"),
        &list_nodes
    ));
    // A user merely NAMED like the SA's namespace-less form does not match.
    assert!(!o.allows(&UserInfo::new("strait", &[]), &list_nodes));
    assert!(!o.allows(&UserInfo::service_account("", "ghost"), &list_nodes));
    assert!(o.allows(&UserInfo::new("dave", &["ops"]), &list_nodes));
    assert!(!o.allows(&UserInfo::new("ops", &[]), &list_nodes));

    // In a RoleBinding the SA subject's namespace defaults to the binding's.
    let mut o = Objects::default();
    o.roles.push(role(
        "apps",
        "r",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
    ));
    o.role_bindings.push(rb(
        "apps",
        "b",
        "Role",
        "r",
        json!([{"kind": "ServiceAccount", "name": "builder"}]),
    ));
    o.role_bindings.push(rb(
        "apps",
        "g",
        "Role",
        "r",
        json!([{"kind": "Group", "name": "system:serviceaccounts:ci"}]),
    ));
    let get = attrs("get", "", "pods", "apps");
    assert!(o.allows(&UserInfo::service_account("apps", "builder"), &get));
    assert!(!o.allows(&UserInfo::service_account("other", "builder"), &get));
    assert!(o.allows(&UserInfo::service_account("ci", "anyone"), &get));
}

#[test]
fn malformed_rules_grant_nothing() {
    let mut o = Objects::default();
    o.cluster_roles.push(cluster_role(
        "r",
        json!([
            {"apiGroups": "", "resources": "pods", "verbs": "*"},
            {"apiGroups": [""], "resources": ["pods"]},
            {"apiGroups": [""], "resources": [7, null], "verbs": ["*"]},
            "not a rule",
        ]),
    ));
    o.cluster_roles
        .push(json!({"metadata": {"name": "no-rules"}, "rules": "all"}));
    o.cluster_role_bindings.push(crb("b", "r", user("bob")));
    o.cluster_role_bindings
        .push(crb("c", "no-rules", user("bob")));
    o.cluster_role_bindings
        .push(json!({"metadata": {"name": "d"}, "roleRef": "r", "subjects": "bob"}));
    o.cluster_role_bindings
        .push(crb("e", "r", json!([{"kind": "User", "name": ""}])));
    assert!(!o.allows(&bob(), &attrs("get", "", "pods", "default")));
    assert!(!o.allows(
        &UserInfo::new("", &[]),
        &attrs("get", "", "pods", "default")
    ));
}

#[test]
fn empty_rbac_is_usable() {
    let rbac: Rbac<'_, Value> = Rbac::empty();
    assert!(!allows(&rbac, &bob(), &attrs("get", "", "pods", "default")));
    assert!(allows(&rbac, &bob(), &path("get", "/api")));
}

#[test]
fn authorize_reads_the_store_only_when_it_must() {
    use crate::store::{AdmitAll, Store};
    // Today's store lists nothing (an error): masters and the built-in
    // defaults are decided without it; anything else is refused (closed),
    // never allowed.
    let store = Store::new(Box::new(AdmitAll), 16);
    let admin = UserInfo::new("admin", &[MASTERS]);
    assert!(authorize(&store, &admin, &attrs("delete", "", "pods", "default")).is_ok());
    assert!(authorize(&store, &bob(), &path("get", "/apis")).is_ok());
    assert!(authorize(&store, &bob(), &attrs("list", "", "pods", "default")).is_err());
    assert!(authorize(&store, &bob(), &path("get", "/metrics")).is_err());
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    const VERBS: &[&str] = &[
        "get", "list", "watch", "create", "update", "patch", "delete", "*",
    ];
    const GROUPS: &[&str] = &["", "apps", "*"];
    const RESOURCES: &[&str] = &[
        "pods",
        "pods/status",
        "services",
        "*",
        "*/status",
        "deployments",
    ];
    const NAMESPACES: &[&str] = &["", "a", "b"];
    const USERS: &[&str] = &["bob", "carol"];

    fn pick(from: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
        prop::sample::select(from)
    }

    fn rule() -> impl Strategy<Value = Value> {
        (
            prop::collection::vec(pick(VERBS), 1..3),
            prop::collection::vec(pick(GROUPS), 1..2),
            prop::collection::vec(pick(RESOURCES), 1..3),
            prop::option::of(prop::collection::vec(pick(&["x", "y"]), 1..2)),
        )
            .prop_map(|(verbs, groups, resources, names)| {
                let mut r = json!({"verbs": verbs, "apiGroups": groups, "resources": resources});
                if let Some(names) = names {
                    r["resourceNames"] = json!(names);
                }
                r
            })
    }

    fn request() -> impl Strategy<Value = Attributes> {
        (
            pick(&[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ]),
            pick(&["", "apps"]),
            pick(&[
                "pods",
                "pods/status",
                "services",
                "deployments",
                "deployments/scale",
            ]),
            pick(NAMESPACES),
            pick(&["", "x", "z"]),
        )
            .prop_map(|(verb, group, resource, ns, name)| {
                named(attrs(verb, group, resource, ns), name)
            })
    }

    proptest! {
        /// A RoleBinding never grants outside its namespace, and adding a
        /// binding never takes a permission away.
        #[test]
        fn role_bindings_stay_in_their_namespace_and_grants_only_add(
            rules in prop::collection::vec(rule(), 1..4),
            binding_ns in pick(&["a", "b"]),
            who in pick(USERS),
            request in request(),
        ) {
            let mut o = Objects::default();
            o.roles.push(role(binding_ns, "r", json!(rules.clone())));
            o.role_bindings.push(rb(binding_ns, "rb", "Role", "r", user(who)));
            let u = UserInfo::new(who, &[]);
            if request.namespace != binding_ns {
                prop_assert!(!o.allows(&u, &request));
            }
            let before = o.allows(&u, &request);
            o.cluster_roles.push(cluster_role("c", json!(rules)));
            o.cluster_role_bindings.push(crb("c", "c", user(who)));
            prop_assert!(!before || o.allows(&u, &request));
            // The same rules cluster-wide grant at least what the Role did
            // in its namespace.
            if request.namespace == binding_ns && before {
                let cluster_only = Objects {
                    cluster_roles: o.cluster_roles.clone(),
                    cluster_role_bindings: o.cluster_role_bindings.clone(),
                    ..Objects::default()
                };
                prop_assert!(cluster_only.allows(&u, &request));
            }
            // Someone else gains nothing from either binding.
            let other = UserInfo::new(if who == "bob" { "carol" } else { "bob" }, &[]);
            prop_assert!(!o.allows(&other, &request));
        }
    }
}
