//! Who is asking (bearer tokens) and whether they may (RBAC, evaluated
//! over the Roles and Bindings in the store, as kube-apiserver's RBAC
//! authorizer does; `system:masters` may do anything).
//!
//! The evaluation is [`authorize_with`], a pure function over the RBAC
//! objects (JSON, as stored); [`authorize`] only reads them from the
//! store. Rules are matched as kube's `rbac/validation` matches them:
//!
//! - a ClusterRoleBinding grants its ClusterRole everywhere; a RoleBinding
//!   grants its Role (of its own namespace) or ClusterRole only in the
//!   binding's namespace, and never for cluster-scoped or non-resource
//!   requests;
//! - `verbs`, `apiGroups`, `resources` match exactly or by `*`; a
//!   subresource request (`pods/status`) matches only `pods/status`,
//!   `*/status` or `*` — never plain `pods`;
//! - `resourceNames`, when present, must contain the request's name: a
//!   request without one (create, list and watch without a
//!   `metadata.name` field selector, deletecollection) is therefore not
//!   granted by a rule that names resources — kube's "cannot restrict
//!   create or deletecollection by name";
//! - `nonResourceURLs` match exactly, `*`, or by prefix when ending in `*`.
//!
//! What kube's bootstrap policy gives every authenticated user
//! (`system:discovery`, `system:basic-user`, `system:public-info-viewer`)
//! is built in rather than read from the store, so a fresh lab's store
//! needs no RBAC objects for kubectl's discovery to work.

use std::borrow::Borrow;
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::error::{ApiError, Details};
use crate::resources::Resource;
use crate::store::{ListOptions, Store};

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group that may do anything (kube's privileged group).
pub const MASTERS: &str = "system:masters";

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The authenticated user of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// `admin`, `system:serviceaccount:kube-system:strait`
    pub name: String,
    /// `system:masters`, `system:serviceaccounts`,
    /// `system:serviceaccounts:kube-system`, `system:authenticated`
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A user in `groups` (and `system:authenticated`).
    pub fn new(name: &str, groups: &[&str]) -> UserInfo {
        let mut user = UserInfo {
            name: name.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        };
        user.add_group(AUTHENTICATED);
        user
    }

    /// The user a ServiceAccount's token authenticates as, with the
    /// groups kube gives it: `system:serviceaccount:NS:NAME` in
    /// `system:serviceaccounts` and `system:serviceaccounts:NS`.
    pub fn service_account(namespace: &str, name: &str) -> UserInfo {
        UserInfo::new(
            &service_account_user(namespace, name),
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{namespace}"),
            ],
        )
    }

    fn add_group(&mut self, group: &str) {
        if !self.groups.iter().any(|g| g == group) {
            self.groups.push(group.to_owned());
        }
    }
}

/// `system:serviceaccount:NS:NAME`, the user name of a ServiceAccount.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The bearer tokens the server accepts, each naming a user.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    pub tokens: Vec<(String, UserInfo)>,
}

impl Tokens {
    /// The user of `Authorization: Bearer TOKEN`, compared in constant time.
    ///
    /// The header is read as kube's bearer-token authenticator reads it:
    /// trimmed, the scheme case-insensitive, the token the second
    /// space-separated word; an empty token is no token. Every known token
    /// is compared, each in time independent of where it differs, so the
    /// answer's timing does not tell which bytes of a guess were right.
    /// The user always gets `system:authenticated`.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<UserInfo, ApiError> {
        let token = authorization
            .map(str::trim)
            .and_then(bearer_token)
            .ok_or_else(ApiError::unauthorized)?;
        let mut found: Option<&UserInfo> = None;
        for (known, user) in &self.tokens {
            // An empty configured token must never match anything.
            let equal = !known.is_empty() & constant_time_eq(known.as_bytes(), token.as_bytes());
            if equal && found.is_none() {
                found = Some(user);
            }
        }
        let mut user = found.cloned().ok_or_else(ApiError::unauthorized)?;
        user.add_group(AUTHENTICATED);
        Ok(user)
    }
}

/// The token of `Bearer TOKEN` (scheme case-insensitive), if any.
fn bearer_token(header: &str) -> Option<&str> {
    let mut parts = header.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Equality in time that depends only on the lengths, not on where the
/// bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// What a request does, in RBAC's terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; for non-resource paths the HTTP verb in lower case.
    pub verb: String,
    pub api_group: String,
    /// The plural (`pods`); empty for a non-resource request.
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    /// The object's name: from the URL, or for list/watch the value of a
    /// `metadata.name=` field selector, as kube-apiserver fills it (a rule
    /// with `resourceNames` grants list/watch only that way).
    pub name: String,
    /// `/api`, `/openapi/v3`, `/healthz`: set for non-resource requests.
    pub path: String,
}

impl Attributes {
    fn is_resource_request(&self) -> bool {
        !self.resource.is_empty()
    }
}

/// The RBAC objects a decision is made over, as JSON (as stored).
#[derive(Clone, Copy, Debug)]
pub struct Rbac<'a, V> {
    pub cluster_roles: &'a [V],
    pub cluster_role_bindings: &'a [V],
    pub roles: &'a [V],
    pub role_bindings: &'a [V],
}

impl<'a, V> Rbac<'a, V> {
    /// No RBAC objects at all (only the built-in defaults apply).
    pub fn empty() -> Rbac<'a, V> {
        Rbac {
            cluster_roles: &[],
            cluster_role_bindings: &[],
            roles: &[],
            role_bindings: &[],
        }
    }
}

/// Allowed, or 403 with kube-apiserver's message.
pub fn authorize(store: &Store, user: &UserInfo, attributes: &Attributes) -> Result<(), ApiError> {
    // Decided without the store when it can be: the privileged group and
    // the built-in defaults.
    if allowed_without_objects(user, attributes) {
        return Ok(());
    }
    let list = |plural: &str, namespace: Option<&str>| -> Result<Vec<_>, ApiError> {
        let resource = Resource::by_plural(RBAC_GROUP, "v1", plural).ok_or_else(|| {
            ApiError::internal(format!("rbac: {plural} missing from the resource table"))
        })?;
        let options = ListOptions {
            namespace: namespace.map(str::to_owned),
            ..ListOptions::default()
        };
        Ok(store.list(resource, &options)?.items)
    };
    let cluster_roles = list("clusterroles", None)?;
    let cluster_role_bindings = list("clusterrolebindings", None)?;
    // Roles and RoleBindings only ever grant inside their own namespace.
    let (roles, role_bindings) =
        if attributes.is_resource_request() && !attributes.namespace.is_empty() {
            let ns = Some(attributes.namespace.as_str());
            (list("roles", ns)?, list("rolebindings", ns)?)
        } else {
            (Vec::new(), Vec::new())
        };
    authorize_with(
        &Rbac {
            cluster_roles: &cluster_roles,
            cluster_role_bindings: &cluster_role_bindings,
            roles: &roles,
            role_bindings: &role_bindings,
        },
        user,
        attributes,
    )
}

/// The decision over `rbac`: allowed, or 403 with kube-apiserver's
/// message (and, as kube appends them, the RBAC errors met on the way,
/// e.g. a binding whose role does not exist).
pub fn authorize_with<V: Borrow<Value>>(
    rbac: &Rbac<'_, V>,
    user: &UserInfo,
    attributes: &Attributes,
) -> Result<(), ApiError> {
    if allowed_without_objects(user, attributes) {
        return Ok(());
    }
    let mut errors = Vec::new();
    if allowed_by(rbac, user, attributes, &mut errors) {
        return Ok(());
    }
    Err(forbidden(user, attributes, &errors))
}

/// `true` when `authorize_with` would allow (for tests and callers that
/// only need the answer).
pub fn allows<V: Borrow<Value>>(
    rbac: &Rbac<'_, V>,
    user: &UserInfo,
    attributes: &Attributes,
) -> bool {
    authorize_with(rbac, user, attributes).is_ok()
}

fn allowed_without_objects(user: &UserInfo, attributes: &Attributes) -> bool {
    if user.groups.iter().any(|g| g == MASTERS) {
        return true;
    }
    user.groups.iter().any(|g| g == AUTHENTICATED)
        && builtin_rules()
            .iter()
            .any(|rule| rule_allows(rule, attributes))
}

/// What kube's bootstrap policy binds to `system:authenticated`:
/// `system:discovery`, `system:public-info-viewer` and `system:basic-user`.
fn builtin_rules() -> &'static [Value] {
    static RULES: OnceLock<Vec<Value>> = OnceLock::new();
    RULES.get_or_init(|| {
        vec![
            // system:discovery
            json!({"verbs": ["get"], "nonResourceURLs": [
                "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                "/openapi", "/openapi/*", "/readyz", "/version", "/version/"
            ]}),
            // system:public-info-viewer
            json!({"verbs": ["get"], "nonResourceURLs": [
                "/healthz", "/livez", "/readyz", "/version", "/version/"
            ]}),
            // system:basic-user
            json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
                   "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}),
            json!({"verbs": ["create"], "apiGroups": ["authentication.k8s.io"],
                   "resources": ["selfsubjectreviews"]}),
        ]
    })
}

/// kube's `VisitRulesFor`: ClusterRoleBindings first, then (for a
/// namespaced resource request) the RoleBindings of that namespace.
fn allowed_by<V: Borrow<Value>>(
    rbac: &Rbac<'_, V>,
    user: &UserInfo,
    attributes: &Attributes,
    errors: &mut Vec<String>,
) -> bool {
    for binding in rbac.cluster_role_bindings {
        let binding = binding.borrow();
        if !applies_to(user, binding, "") {
            continue;
        }
        let role_ref = &binding["roleRef"];
        if str_of(&role_ref["kind"]) != "ClusterRole" {
            continue;
        }
        let name = str_of(&role_ref["name"]);
        match find(rbac.cluster_roles, "", name) {
            Some(role) if rules_allow(role, attributes) => return true,
            Some(_) => {}
            None => errors.push(format!("clusterrole.{RBAC_GROUP} \"{name}\" not found")),
        }
    }
    // Role bindings grant nothing cluster-scoped nor any path.
    if !attributes.is_resource_request() || attributes.namespace.is_empty() {
        return false;
    }
    let namespace = attributes.namespace.as_str();
    for binding in rbac.role_bindings {
        let binding = binding.borrow();
        if namespace_of(binding) != namespace || !applies_to(user, binding, namespace) {
            continue;
        }
        let role_ref = &binding["roleRef"];
        let name = str_of(&role_ref["name"]);
        let (role, what) = match str_of(&role_ref["kind"]) {
            "Role" => (find(rbac.roles, namespace, name), "role"),
            "ClusterRole" => (find(rbac.cluster_roles, "", name), "clusterrole"),
            _ => continue,
        };
        match role {
            Some(role) if rules_allow(role, attributes) => return true,
            Some(_) => {}
            None => errors.push(format!("{what}.{RBAC_GROUP} \"{name}\" not found")),
        }
    }
    false
}

/// The (Cluster)Role named `name` (in `namespace`, for a Role).
fn find<'v, V: Borrow<Value>>(objects: &'v [V], namespace: &str, name: &str) -> Option<&'v Value> {
    objects
        .iter()
        .map(Borrow::borrow)
        .find(|o| str_of(&o["metadata"]["name"]) == name && namespace_of(o) == namespace)
}

fn namespace_of(object: &Value) -> &str {
    str_of(&object["metadata"]["namespace"])
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The strings of a JSON array (anything else in it is ignored: a
/// malformed rule grants less, never more).
fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array()
        .map(|a| a.as_slice())
        .unwrap_or(&[])
        .iter()
        .filter_map(Value::as_str)
}

/// kube's `appliesTo`: one of the binding's subjects is this user.
fn applies_to(user: &UserInfo, binding: &Value, binding_namespace: &str) -> bool {
    strings_of_subjects(binding).any(|subject| {
        let name = str_of(&subject["name"]);
        match str_of(&subject["kind"]) {
            "User" => !name.is_empty() && user.name == name,
            "Group" => !name.is_empty() && user.groups.iter().any(|g| g == name),
            "ServiceAccount" => {
                // The subject's namespace, else the binding's (kube
                // defaults it so for RoleBindings).
                let ns = match str_of(&subject["namespace"]) {
                    "" => binding_namespace,
                    ns => ns,
                };
                !ns.is_empty() && !name.is_empty() && user.name == service_account_user(ns, name)
            }
            _ => false,
        }
    })
}

fn strings_of_subjects(binding: &Value) -> impl Iterator<Item = &Value> {
    binding["subjects"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or(&[])
        .iter()
}

fn rules_allow(role: &Value, attributes: &Attributes) -> bool {
    role["rules"]
        .as_array()
        .is_some_and(|rules| rules.iter().any(|rule| rule_allows(rule, attributes)))
}

/// kube's `RuleAllows`.
fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if !strings(&rule["verbs"]).any(|v| v == "*" || v == a.verb) {
        return false;
    }
    if !a.is_resource_request() {
        return strings(&rule["nonResourceURLs"]).any(|url| non_resource_url_matches(url, &a.path));
    }
    strings(&rule["apiGroups"]).any(|g| g == "*" || g == a.api_group)
        && resource_matches(rule, a)
        && resource_name_matches(rule, &a.name)
}

fn resource_matches(rule: &Value, a: &Attributes) -> bool {
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    strings(&rule["resources"]).any(|r| {
        r == "*"
            || r == combined
            || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(a.subresource.as_str()))
    })
}

fn resource_name_matches(rule: &Value, name: &str) -> bool {
    let mut names = strings(&rule["resourceNames"]).peekable();
    if names.peek().is_none() {
        return true;
    }
    names.any(|n| n == name)
}

fn non_resource_url_matches(rule_url: &str, path: &str) -> bool {
    if rule_url == "*" || rule_url == path {
        return true;
    }
    rule_url
        .strip_suffix('*')
        .is_some_and(|prefix| path.starts_with(prefix))
}

/// The 403 as kube-apiserver words it (`responsewriters.forbiddenMessage`
/// wrapped by `apierrors.NewForbidden`).
fn forbidden(user: &UserInfo, a: &Attributes, errors: &[String]) -> ApiError {
    let mut why = if !a.is_resource_request() {
        format!("User {:?} cannot {} path {:?}", user.name, a.verb, a.path)
    } else {
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace {:?}", a.namespace)
        };
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} {scope}",
            user.name, a.verb, resource, a.api_group
        )
    };
    match errors {
        [] => {}
        [one] => why = format!("{why}: RBAC: {one}"),
        many => why = format!("{why}: RBAC: [{}]", many.join(", ")),
    }
    if !a.is_resource_request() {
        return ApiError::forbidden(format!("forbidden: {why}"));
    }
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let message = if a.name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} {:?} is forbidden: {why}", a.name)
    };
    let mut e = ApiError::forbidden(message);
    e.details = Some(Box::new(Details {
        name: a.name.clone(),
        group: a.api_group.clone(),
        kind: a.resource.clone(),
        causes: Vec::new(),
    }));
    e
}

#[cfg(test)]
mod tests;
