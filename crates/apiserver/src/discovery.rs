//! Discovery documents, made from [`crate::RESOURCES`]: legacy (`/api`,
//! `/apis`, `/api/v1`, `/apis/G/V`) and aggregated (`apidiscovery.k8s.io`
//! v2 and v2beta1, what a current kubectl asks for first).
//!
//! Shapes follow kube-apiserver's: `metav1.APIVersions`, `APIGroupList`,
//! `APIResourceList` and `apidiscovery/v2.APIGroupDiscoveryList` (the same
//! JSON for v2beta1). client-go drops an aggregated resource without a
//! `responseKind` silently, so every resource and subresource carries one.

use serde_json::{json, Map, Value};

use crate::resources::{groups, Resource, Subresource, RESOURCES, VERBS};

/// The API group of the aggregated discovery types.
pub const DISCOVERY_GROUP: &str = "apidiscovery.k8s.io";
/// The kind both aggregated discovery versions answer with.
pub const DISCOVERY_KIND: &str = "APIGroupDiscoveryList";

/// Which aggregated discovery version a client accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregated {
    V2,
    V2Beta1,
}

impl Aggregated {
    /// `v2`, `v2beta1`.
    pub fn version(self) -> &'static str {
        match self {
            Aggregated::V2 => "v2",
            Aggregated::V2Beta1 => "v2beta1",
        }
    }

    /// The `Content-Type` of the answer. client-go decides by it (not by
    /// the body) whether `/api` and `/apis` answered aggregated discovery:
    /// a plain `application/json` makes it read the body as the legacy
    /// `APIVersions`/`APIGroupList` and find no resources in it.
    pub fn content_type(self) -> &'static str {
        match self {
            Aggregated::V2 => {
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            }
            Aggregated::V2Beta1 => {
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            }
        }
    }

    fn from_version(v: &str) -> Option<Aggregated> {
        match v {
            "v2" => Some(Aggregated::V2),
            "v2beta1" => Some(Aggregated::V2Beta1),
            _ => None,
        }
    }
}

/// Which discovery form an `Accept` header asks for at `/api` and `/apis`:
/// `Some` aggregated version, or `None` for the legacy JSON documents (also
/// when nothing in the header is acceptable; the caller may answer 406 for
/// a header that does not accept JSON at all, as [`accepts_json`] tells).
///
/// The header is a comma-separated list of media ranges, each with
/// parameters (`g`, `v`, `as`, `profile`, `q`). The list is split first and
/// each range judged on its own parameters: matching the whole header as
/// one media type would read `v=` from the wrong range. Ranges are taken
/// in order of falling `q` (1 when absent), ties in the client's order, as
/// kube-apiserver's negotiation does; `q=0` means "not acceptable".
pub fn negotiate(accept: &str) -> Option<Aggregated> {
    for range in ranked(accept) {
        match range.discovery() {
            Choice::Aggregated(version) => return Some(version),
            Choice::Legacy => return None,
            Choice::Skip => {}
        }
    }
    None
}

/// Whether `accept` lets the server answer with some JSON document at all
/// (an empty header accepts anything).
pub fn accepts_json(accept: &str) -> bool {
    if accept.trim().is_empty() {
        return true;
    }
    ranked(accept).iter().any(|r| r.json_type())
}

/// One media range of an `Accept` header.
struct MediaRange<'a> {
    /// `application/json`, lower-cased.
    essence: String,
    /// Parameters other than `q`, names lower-cased, values unquoted.
    params: Vec<(String, &'a str)>,
    /// Quality in thousandths (`q=0.5` is 500).
    q: u16,
}

enum Choice {
    Aggregated(Aggregated),
    Legacy,
    Skip,
}

impl MediaRange<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    fn json_type(&self) -> bool {
        matches!(
            self.essence.as_str(),
            "application/json" | "application/*" | "*/*"
        )
    }

    fn discovery(&self) -> Choice {
        if !self.json_type() {
            return Choice::Skip;
        }
        let (g, v, kind) = (self.param("g"), self.param("v"), self.param("as"));
        if g.is_none() && v.is_none() && kind.is_none() {
            return Choice::Legacy;
        }
        // A range naming another kind (a `Table`, `PartialObjectMetadata`)
        // cannot be served at `/api`: judge the next one.
        if g != Some(DISCOVERY_GROUP) || kind != Some(DISCOVERY_KIND) {
            return Choice::Skip;
        }
        // `profile=nopeer` asks for this server's own resources only; a
        // lab server has no peers, so its document is the same.
        match self.param("profile") {
            None | Some("nopeer") => {}
            Some(_) => return Choice::Skip,
        }
        match v.and_then(Aggregated::from_version) {
            Some(version) => Choice::Aggregated(version),
            None => Choice::Skip,
        }
    }
}

/// The media ranges of `accept`, best first; unparsable ranges and `q=0`
/// are left out.
fn ranked(accept: &str) -> Vec<MediaRange<'_>> {
    let mut ranges: Vec<MediaRange<'_>> = accept.split(',').filter_map(parse_range).collect();
    // Stable: equal qualities keep the client's order.
    ranges.sort_by_key(|r| std::cmp::Reverse(r.q));
    ranges
}

fn parse_range(text: &str) -> Option<MediaRange<'_>> {
    let mut parts = text.split(';');
    let essence = parts.next()?.trim();
    let (kind, sub) = essence.split_once('/')?;
    if kind.is_empty() || sub.is_empty() || kind.contains(char::is_whitespace) {
        return None;
    }
    let mut params = Vec::new();
    let mut q = 1000;
    for part in parts {
        let Some((name, value)) = part.split_once('=') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if name == "q" {
            q = parse_quality(value)?;
        } else {
            params.push((name, value));
        }
    }
    if q == 0 {
        return None;
    }
    Some(MediaRange {
        essence: essence.to_ascii_lowercase(),
        params,
        q,
    })
}

/// `1`, `0.8`, `0.125` as thousandths; `None` for anything else (the range
/// is then dropped, as a malformed one is).
fn parse_quality(value: &str) -> Option<u16> {
    let (whole, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u16 = match whole {
        "0" => 0,
        "1" => 1,
        _ => return None,
    };
    let mut thousandths = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    let q = whole * 1000 + thousandths;
    (q <= 1000).then_some(q)
}

/// `GET /api` (legacy): `APIVersions`. `serverAddressByClientCIDRs` is
/// required in the Go type (no `omitempty`) and in k8s-openapi's, so it is
/// always present; without a known address it is empty. Prefer
/// [`api_versions_at`] where the server knows the address clients reach.
pub fn api_versions() -> Value {
    api_versions_doc(Vec::new())
}

/// `GET /api` (legacy), naming `server_address` (`10.0.0.1:6443`) for every
/// client, as kube-apiserver does with its advertised address.
pub fn api_versions_at(server_address: &str) -> Value {
    api_versions_doc(vec![json!({
        "clientCIDR": "0.0.0.0/0",
        "serverAddress": server_address,
    })])
}

fn api_versions_doc(addresses: Vec<Value>) -> Value {
    let versions: Vec<&str> = groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty())
        .map(|(_, v)| v)
        .collect();
    json!({
        "kind": "APIVersions",
        "versions": versions,
        "serverAddressByClientCIDRs": addresses,
    })
}

/// `GET /apis` (legacy): `APIGroupList`, every named group with its
/// versions; the first listed (the newest) is the preferred one.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = grouped()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(group, versions)| {
            let gvs: Vec<Value> = versions
                .iter()
                .map(|version| {
                    json!({
                        "groupVersion": format!("{group}/{version}"),
                        "version": version,
                    })
                })
                .collect();
            json!({
                "name": group,
                "preferredVersion": gvs[0].clone(),
                "versions": gvs,
            })
        })
        .collect();
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups,
    })
}

/// [`groups`] with the versions of one group together (Gateway API serves
/// v1 and, for ReferenceGrant, v1beta1), in discovery order.
fn grouped() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for (group, version) in groups() {
        match out.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) => versions.push(version),
            None => out.push((group, vec![version])),
        }
    }
    out
}

/// `GET /apis/GROUP` (legacy): the `APIGroup`, or `None` for a group not
/// served (the core group has none: it is `/api`).
pub fn api_group(group: &str) -> Option<Value> {
    let mut found = api_group_list()["groups"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == group)?
        .clone();
    let entry = found.as_object_mut()?;
    entry.insert("kind".into(), "APIGroup".into());
    entry.insert("apiVersion".into(), "v1".into());
    Some(found)
}

/// What a subresource answers with, and the verbs it takes.
struct SubresourceInfo {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    verbs: &'static [&'static str],
}

fn subresource_info(resource: &Resource, sub: Subresource) -> SubresourceInfo {
    match sub {
        // The whole object, of which only `.status` is written.
        Subresource::Status => SubresourceInfo {
            group: resource.group,
            version: resource.version,
            kind: resource.kind,
            verbs: &["get", "patch", "update"],
        },
        Subresource::Scale => SubresourceInfo {
            group: "autoscaling",
            version: "v1",
            kind: "Scale",
            verbs: &["get", "patch", "update"],
        },
        // kube-apiserver names the parent kind for `pods/log`, whose answer
        // is really plain text.
        Subresource::Log => SubresourceInfo {
            group: resource.group,
            version: resource.version,
            kind: resource.kind,
            verbs: &["get"],
        },
    }
}

/// A resource's subresources sorted by name, as kube-apiserver lists them.
fn sorted_subresources(resource: &Resource) -> Vec<Subresource> {
    let mut subs = resource.subresources.to_vec();
    subs.sort_by_key(|s| s.name());
    subs
}

/// A group version's resources sorted by plural (kube-apiserver's order).
fn served(group: &str, version: &str) -> Vec<&'static Resource> {
    let mut list: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    list.sort_by_key(|r| r.plural);
    list
}

/// `GET /api/v1`, `GET /apis/GROUP/VERSION`: `APIResourceList`, or `None`
/// for a group version not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let list = served(group, version);
    if list.is_empty() {
        return None;
    }
    let mut entries = Vec::new();
    for r in &list {
        let mut entry = Map::new();
        entry.insert("name".into(), r.plural.into());
        entry.insert("singularName".into(), r.singular.into());
        entry.insert("namespaced".into(), r.namespaced.into());
        entry.insert("kind".into(), r.kind.into());
        entry.insert("verbs".into(), json!(VERBS));
        if !r.short_names.is_empty() {
            entry.insert("shortNames".into(), json!(r.short_names));
        }
        if !r.categories.is_empty() {
            entry.insert("categories".into(), json!(r.categories));
        }
        entries.push(Value::Object(entry));
        for sub in sorted_subresources(r) {
            let info = subresource_info(r, sub);
            let mut entry = Map::new();
            entry.insert("name".into(), format!("{}/{}", r.plural, sub.name()).into());
            // Empty for subresources, as kube-apiserver sends it; the field
            // itself is required by k8s-openapi's `APIResource`.
            entry.insert("singularName".into(), "".into());
            entry.insert("namespaced".into(), r.namespaced.into());
            // `group`/`version` only where they differ from the list's.
            if info.group != r.group || info.version != r.version {
                entry.insert("group".into(), info.group.into());
                entry.insert("version".into(), info.version.into());
            }
            entry.insert("kind".into(), info.kind.into());
            entry.insert("verbs".into(), json!(info.verbs));
            entries.push(Value::Object(entry));
        }
    }
    let group_version = list[0].api_version();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }))
}

/// `GET /api` (`core: true`) or `/apis` with aggregated discovery:
/// `APIGroupDiscoveryList`.
pub fn aggregated(core: bool, version: Aggregated) -> Value {
    let items: Vec<Value> = grouped()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(group, versions)| group_discovery(group, &versions))
        .collect();
    json!({
        "kind": DISCOVERY_KIND,
        "apiVersion": format!("{DISCOVERY_GROUP}/{}", version.version()),
        "metadata": {},
        "items": items,
    })
}

fn group_discovery(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|version| {
            let resources: Vec<Value> = served(group, version)
                .into_iter()
                .map(resource_discovery)
                .collect();
            json!({
                "version": version,
                "resources": resources,
                "freshness": "Current",
            })
        })
        .collect();
    // The core group's name is empty, which Go's `omitempty` leaves out.
    let metadata = if group.is_empty() {
        json!({})
    } else {
        json!({ "name": group })
    };
    json!({
        "metadata": metadata,
        "versions": versions,
    })
}

fn resource_discovery(r: &Resource) -> Value {
    let mut entry = Map::new();
    entry.insert("resource".into(), r.plural.into());
    entry.insert(
        "responseKind".into(),
        json!({ "group": r.group, "version": r.version, "kind": r.kind }),
    );
    entry.insert(
        "scope".into(),
        if r.namespaced {
            "Namespaced"
        } else {
            "Cluster"
        }
        .into(),
    );
    entry.insert("singularResource".into(), r.singular.into());
    entry.insert("verbs".into(), json!(VERBS));
    if !r.short_names.is_empty() {
        entry.insert("shortNames".into(), json!(r.short_names));
    }
    if !r.categories.is_empty() {
        entry.insert("categories".into(), json!(r.categories));
    }
    let subs: Vec<Value> = sorted_subresources(r)
        .into_iter()
        .map(|sub| {
            let info = subresource_info(r, sub);
            json!({
                "subresource": sub.name(),
                "responseKind": { "group": info.group, "version": info.version, "kind": info.kind },
                "verbs": info.verbs,
            })
        })
        .collect();
    if !subs.is_empty() {
        entry.insert("subresources".into(), Value::Array(subs));
    }
    Value::Object(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

    // client-go's Accept values (discovery_client.go): the aggregated
    // forms first, then plain JSON; `nopeer` first when asked for.
    const CLIENT_GO: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    const CLIENT_GO_NOPEER: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    // kube-rs 4.2 (kube-core ACCEPT_AGGREGATED_DISCOVERY_V2): the same list.
    const KUBE_RS: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    // client-go 1.26-1.29 asked for v2beta1 only.
    const CLIENT_GO_V2BETA1: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    // kubectl get's Table request, which must not be read as discovery.
    const KUBECTL_TABLE: &str =
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    #[test]
    fn negotiate_the_accept_values_clients_send() {
        assert_eq!(negotiate(CLIENT_GO), Some(Aggregated::V2));
        assert_eq!(negotiate(CLIENT_GO_NOPEER), Some(Aggregated::V2));
        assert_eq!(negotiate(KUBE_RS), Some(Aggregated::V2));
        assert_eq!(negotiate(CLIENT_GO_V2BETA1), Some(Aggregated::V2Beta1));
        assert_eq!(negotiate("application/json"), None);
        assert_eq!(negotiate(""), None);
        assert_eq!(negotiate("*/*"), None);
        assert_eq!(negotiate(KUBECTL_TABLE), None);
    }

    #[test]
    fn negotiate_honours_quality_and_parameter_order() {
        // Parameters in any order, spaces, quoted values.
        assert_eq!(
            negotiate(
                "application/json; as=APIGroupDiscoveryList; v=\"v2beta1\"; g=apidiscovery.k8s.io"
            ),
            Some(Aggregated::V2Beta1)
        );
        // A lower q loses to plain JSON listed later.
        assert_eq!(
            negotiate("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0.5,application/json"),
            None
        );
        // q=0 refuses the range.
        assert_eq!(
            negotiate("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"),
            Some(Aggregated::V2Beta1)
        );
        // Unknown versions, groups and profiles are skipped, not guessed.
        assert_eq!(
            negotiate("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
            Some(Aggregated::V2)
        );
        assert_eq!(
            negotiate("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=other"),
            None
        );
        // Protobuf is not served.
        assert_eq!(
            negotiate("application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
            None
        );
        assert!(!accepts_json("application/vnd.kubernetes.protobuf"));
        assert!(accepts_json(CLIENT_GO));
        assert!(accepts_json(""));
        // Garbage in any amount: no panic, legacy answer.
        assert_eq!(negotiate(";;,,=,/;q=2,a/b;q=x,\u{1F600}/\u{1F600}"), None);
        assert_eq!(negotiate(&"application/json;q=0.1,".repeat(10_000)), None);
    }

    #[test]
    fn content_types_carry_the_gvk_client_go_matches() {
        for v in [Aggregated::V2, Aggregated::V2Beta1] {
            // client-go's ContentTypeIsGVK: base type and g, v, as params.
            let range = parse_range(v.content_type()).unwrap();
            assert_eq!(range.essence, "application/json");
            assert_eq!(range.param("g"), Some(DISCOVERY_GROUP));
            assert_eq!(range.param("v"), Some(v.version()));
            assert_eq!(range.param("as"), Some(DISCOVERY_KIND));
            assert_eq!(negotiate(v.content_type()), Some(v));
        }
    }

    fn verbs_of(sub: Subresource) -> Vec<String> {
        match sub {
            Subresource::Log => vec!["get".into()],
            _ => vec!["get".into(), "patch".into(), "update".into()],
        }
    }

    #[test]
    fn legacy_documents_parse_as_k8s_openapi_types() {
        let versions: meta::APIVersions = serde_json::from_value(api_versions()).unwrap();
        assert_eq!(versions.versions, vec!["v1".to_string()]);
        let at: meta::APIVersions =
            serde_json::from_value(api_versions_at("10.0.0.1:6443")).unwrap();
        assert_eq!(
            at.server_address_by_client_cidrs[0].server_address,
            "10.0.0.1:6443"
        );

        let list: meta::APIGroupList = serde_json::from_value(api_group_list()).unwrap();
        let named: Vec<_> = grouped()
            .into_iter()
            .filter(|(g, _)| !g.is_empty())
            .collect();
        assert_eq!(list.groups.len(), named.len());
        for (group, (name, versions)) in list.groups.iter().zip(&named) {
            assert_eq!(group.name, *name);
            let preferred = group.preferred_version.as_ref().unwrap();
            assert_eq!(preferred.version, versions[0]);
            assert_eq!(preferred.group_version, format!("{name}/{}", versions[0]));
            assert_eq!(group.versions.len(), versions.len());
        }
        let named: Vec<_> = named.into_iter().map(|(g, v)| (g, v[0])).collect();
        assert!(!list.groups.iter().any(|g| g.name.is_empty()));

        for (name, version) in named {
            let group: meta::APIGroup = serde_json::from_value(api_group(name).unwrap()).unwrap();
            assert_eq!(group.name, name);
            assert_eq!(group.preferred_version.unwrap().version, version);
        }
        assert!(api_group("").is_none());
        assert!(api_group("apps/v1").is_none());
    }

    #[test]
    fn every_resource_is_in_its_legacy_resource_list() {
        for (group, version) in groups() {
            let doc = resource_list(group, version).unwrap();
            let list: meta::APIResourceList = serde_json::from_value(doc).unwrap();
            let want = if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            };
            assert_eq!(list.group_version, want);
            for r in RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == version)
            {
                let entry = list
                    .resources
                    .iter()
                    .find(|e| e.name == r.plural)
                    .unwrap_or_else(|| panic!("{} missing", r.plural));
                assert_eq!(entry.kind, r.kind);
                assert_eq!(entry.singular_name, r.singular);
                assert_eq!(entry.namespaced, r.namespaced);
                assert_eq!(entry.verbs, VERBS);
                assert_eq!(entry.short_names.clone().unwrap_or_default(), r.short_names);
                assert_eq!(entry.categories.clone().unwrap_or_default(), r.categories);
                assert!(entry.group.is_none() && entry.version.is_none());
                for sub in r.subresources {
                    let name = format!("{}/{}", r.plural, sub.name());
                    let e = list.resources.iter().find(|e| e.name == name).unwrap();
                    assert_eq!(e.namespaced, r.namespaced, "{name}");
                    assert_eq!(e.verbs, verbs_of(*sub), "{name}");
                }
            }
            // Nothing else: every entry is a resource or one of its
            // subresources.
            let expected: usize = RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .map(|r| 1 + r.subresources.len())
                .sum();
            assert_eq!(list.resources.len(), expected);
        }
        assert!(resource_list("", "v2").is_none());
        assert!(resource_list("apps", "v1beta1").is_none());
        assert!(resource_list("nope", "v1").is_none());
    }

    #[test]
    fn subresource_kinds_are_kube_apiservers() {
        let apps: meta::APIResourceList =
            serde_json::from_value(resource_list("apps", "v1").unwrap()).unwrap();
        let scale = apps
            .resources
            .iter()
            .find(|e| e.name == "deployments/scale")
            .unwrap();
        assert_eq!(scale.group.as_deref(), Some("autoscaling"));
        assert_eq!(scale.version.as_deref(), Some("v1"));
        assert_eq!(scale.kind, "Scale");
        let core: meta::APIResourceList =
            serde_json::from_value(resource_list("", "v1").unwrap()).unwrap();
        let log = core
            .resources
            .iter()
            .find(|e| e.name == "pods/log")
            .unwrap();
        assert_eq!(
            (log.kind.as_str(), log.verbs.clone()),
            ("Pod", vec!["get".to_string()])
        );
        let status = core
            .resources
            .iter()
            .find(|e| e.name == "pods/status")
            .unwrap();
        assert_eq!(status.kind, "Pod");
        assert!(status.group.is_none());
    }

    // apidiscovery/v2 types.go, field for field. `deny_unknown_fields`
    // catches a misspelt name, which client-go would ignore silently;
    // fields without `default` are the ones Go always writes.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct GroupDiscoveryList {
        kind: String,
        #[serde(rename = "apiVersion")]
        api_version: String,
        #[serde(default)]
        metadata: Option<meta::ListMeta>,
        items: Vec<GroupDiscovery>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct GroupDiscovery {
        #[serde(default)]
        metadata: Option<meta::ObjectMeta>,
        versions: Vec<VersionDiscovery>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct VersionDiscovery {
        version: String,
        resources: Vec<ResourceDiscovery>,
        freshness: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct ResourceDiscovery {
        resource: String,
        response_kind: Gvk,
        scope: String,
        singular_resource: String,
        verbs: Vec<String>,
        #[serde(default)]
        short_names: Vec<String>,
        #[serde(default)]
        categories: Vec<String>,
        #[serde(default)]
        subresources: Vec<SubresourceDiscovery>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct SubresourceDiscovery {
        subresource: String,
        response_kind: Gvk,
        verbs: Vec<String>,
    }

    #[derive(Deserialize, PartialEq, Debug)]
    #[serde(deny_unknown_fields)]
    struct Gvk {
        group: String,
        version: String,
        kind: String,
    }

    #[test]
    fn every_resource_is_in_aggregated_discovery() {
        for version in [Aggregated::V2, Aggregated::V2Beta1] {
            let mut seen = 0;
            for core in [true, false] {
                let doc: GroupDiscoveryList =
                    serde_json::from_value(aggregated(core, version)).unwrap();
                assert_eq!(doc.kind, "APIGroupDiscoveryList");
                assert_eq!(
                    doc.api_version,
                    format!("apidiscovery.k8s.io/{}", version.version())
                );
                assert!(!doc.items.is_empty());
                for item in &doc.items {
                    let group = item
                        .metadata
                        .as_ref()
                        .and_then(|m| m.name.clone())
                        .unwrap_or_default();
                    assert_eq!(group.is_empty(), core, "core only at /api");
                    let versions: Vec<&str> = crate::resources::groups()
                        .into_iter()
                        .filter(|(g, _)| *g == group)
                        .map(|(_, v)| v)
                        .collect();
                    assert_eq!(item.versions.len(), versions.len());
                    for v in &item.versions {
                        assert_eq!(v.freshness, "Current");
                        for d in &v.resources {
                            let r = Resource::by_plural(&group, &v.version, &d.resource)
                                .unwrap_or_else(|| panic!("{group}/{} not served", d.resource));
                            seen += 1;
                            assert_eq!(
                                d.response_kind,
                                Gvk {
                                    group: r.group.into(),
                                    version: r.version.into(),
                                    kind: r.kind.into()
                                }
                            );
                            let scope = if r.namespaced {
                                "Namespaced"
                            } else {
                                "Cluster"
                            };
                            assert_eq!(d.scope, scope);
                            assert_eq!(d.singular_resource, r.singular);
                            assert_eq!(d.verbs, VERBS);
                            assert_eq!(d.short_names, r.short_names);
                            assert_eq!(d.categories, r.categories);
                            assert_eq!(d.subresources.len(), r.subresources.len());
                            for s in &d.subresources {
                                let sub = r
                                    .subresources
                                    .iter()
                                    .find(|x| x.name() == s.subresource)
                                    .unwrap();
                                assert_eq!(s.verbs, verbs_of(*sub));
                                assert!(!s.response_kind.kind.is_empty());
                                if *sub == Subresource::Scale {
                                    assert_eq!(
                                        s.response_kind,
                                        Gvk {
                                            group: "autoscaling".into(),
                                            version: "v1".into(),
                                            kind: "Scale".into()
                                        }
                                    );
                                }
                            }
                        }
                    }
                }
            }
            assert_eq!(seen, RESOURCES.len(), "every resource exactly once");
        }
    }

    #[test]
    fn legacy_and_aggregated_agree() {
        // What client-go builds from the aggregated form (SplitGroupsAndResources)
        // equals the legacy resource lists: same names, kinds, scopes, verbs.
        for (group, version) in groups() {
            let legacy: meta::APIResourceList =
                serde_json::from_value(resource_list(group, version).unwrap()).unwrap();
            let agg: GroupDiscoveryList =
                serde_json::from_value(aggregated(group.is_empty(), Aggregated::V2)).unwrap();
            let item = agg
                .items
                .iter()
                .find(|i| {
                    i.metadata
                        .as_ref()
                        .and_then(|m| m.name.clone())
                        .unwrap_or_default()
                        == group
                })
                .unwrap();
            let mut converted = Vec::new();
            let item_version = item.versions.iter().find(|v| v.version == version).unwrap();
            for d in &item_version.resources {
                converted.push((
                    d.resource.clone(),
                    d.response_kind.kind.clone(),
                    d.scope == "Namespaced",
                    d.verbs.clone(),
                ));
                for s in &d.subresources {
                    converted.push((
                        format!("{}/{}", d.resource, s.subresource),
                        s.response_kind.kind.clone(),
                        d.scope == "Namespaced",
                        s.verbs.clone(),
                    ));
                }
            }
            let flat: Vec<_> = legacy
                .resources
                .iter()
                .map(|e| {
                    (
                        e.name.clone(),
                        e.kind.clone(),
                        e.namespaced,
                        e.verbs.clone(),
                    )
                })
                .collect();
            assert_eq!(converted, flat, "{group}/{version}");
        }
    }
}
