//! `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy, the cluster
//! admin's policy (sig-network-policy-api, 2026-04): one cluster-scoped kind
//! with `tier: Admin | Baseline`, a priority 0–1000 within its tier, a
//! subject (the pods it applies to) and ordered ingress/egress rules whose
//! actions are Accept, Deny or Pass.
//!
//! k8s-openapi has no type for it (it is a CRD), so the types are here,
//! shaped like the API's Go types; they implement k8s-openapi's `Resource`
//! and `Metadata` so that snapshots, manifests and kube-rs treat them as
//! any built-in kind. Admission ([`validate`]) checks what the CRD's schema
//! and CEL rules check, so a policy the API server would refuse is refused
//! here with the field named.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

use crate::selector::Selector;

/// A cluster-wide network policy.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ClusterNetworkPolicySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ClusterNetworkPolicyStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySpec {
    /// `Admin` (before NetworkPolicy) or `Baseline` (after it).
    #[serde(default)]
    pub tier: String,
    /// 0–1000; lower values are evaluated first within the tier.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub subject: ClusterNetworkPolicySubject,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Exactly one field is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySubject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Pods selected by both a namespace selector and a pod selector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    #[serde(default)]
    pub pod_selector: LabelSelector,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub from: Vec<Peer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<ProtocolMatch>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub to: Vec<Peer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<ProtocolMatch>>,
}

/// One peer; exactly one field is set. Ingress peers may only be
/// `namespaces` or `pods`; `nodes`, `networks` and `domainNames` are egress
/// only (`nodes` and `domainNames` are experimental in the API).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_names: Option<Vec<String>>,
}

/// One protocol match; exactly one field is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<PortMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<PortMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<PortMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_named_port: Option<String>,
}

/// The destination port of one protocol: absent means every port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<PortSpec>,
}

/// One port (`number`) or an inclusive range (`range`); exactly one is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<PortRange>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRange {
    #[serde(default)]
    pub start: i32,
    #[serde(default)]
    pub end: i32,
}

/// Written with its `apiVersion` and `kind`, as k8s-openapi writes the
/// built-in kinds: manifests, API bodies and `strait render` need them.
impl Serialize for ClusterNetworkPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Whole<'a> {
            api_version: &'static str,
            kind: &'static str,
            metadata: &'a ObjectMeta,
            spec: &'a ClusterNetworkPolicySpec,
            #[serde(skip_serializing_if = "Option::is_none")]
            status: &'a Option<ClusterNetworkPolicyStatus>,
        }
        Whole {
            api_version: <Self as k8s_openapi::Resource>::API_VERSION,
            kind: <Self as k8s_openapi::Resource>::KIND,
            metadata: &self.metadata,
            spec: &self.spec,
            status: &self.status,
        }
        .serialize(s)
    }
}

impl k8s_openapi::Resource for ClusterNetworkPolicy {
    const API_VERSION: &'static str = "policy.networking.k8s.io/v1alpha2";
    const GROUP: &'static str = "policy.networking.k8s.io";
    const KIND: &'static str = "ClusterNetworkPolicy";
    const VERSION: &'static str = "v1alpha2";
    const URL_PATH_SEGMENT: &'static str = "clusternetworkpolicies";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::ListableResource for ClusterNetworkPolicy {
    const LIST_KIND: &'static str = "ClusterNetworkPolicyList";
}

impl k8s_openapi::Metadata for ClusterNetworkPolicy {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The limits the CRD's schema sets.
const MAX_RULES: usize = 25;
const MAX_PEERS: usize = 25;
const MAX_PROTOCOLS: usize = 25;
const MAX_NETWORKS: usize = 25;
const MAX_RULE_NAME: usize = 100;

type Check = Result<(), (String, String)>;

fn bad(field: impl Into<String>, why: impl Into<String>) -> Check {
    Err((field.into(), why.into()))
}

/// Admission of a ClusterNetworkPolicy: what the CRD's OpenAPI schema and
/// its CEL rules refuse.
pub(crate) fn validate(cnp: &ClusterNetworkPolicy) -> Check {
    let spec = &cnp.spec;
    match spec.tier.as_str() {
        "Admin" | "Baseline" => {}
        "" => return bad("spec.tier", "Required value"),
        other => {
            return bad(
                "spec.tier",
                format!("Unsupported value: {other:?}: supported values: \"Admin\", \"Baseline\""),
            )
        }
    }
    if !(0..=1000).contains(&spec.priority) {
        return bad(
            "spec.priority",
            format!(
                "Invalid value: {}: must be between 0 and 1000",
                spec.priority
            ),
        );
    }
    let subject = &spec.subject;
    match (&subject.namespaces, &subject.pods) {
        (Some(ns), None) => selector("spec.subject.namespaces", ns)?,
        (None, Some(pods)) => namespaced_pod("spec.subject.pods", pods)?,
        _ => {
            return bad(
                "spec.subject",
                "exactly one of namespaces or pods must be set",
            )
        }
    }
    if spec.ingress.len() > MAX_RULES {
        return bad(
            "spec.ingress",
            format!(
                "Too many: {}: must have at most {MAX_RULES} items",
                spec.ingress.len()
            ),
        );
    }
    if spec.egress.len() > MAX_RULES {
        return bad(
            "spec.egress",
            format!(
                "Too many: {}: must have at most {MAX_RULES} items",
                spec.egress.len()
            ),
        );
    }
    for (i, rule) in spec.ingress.iter().enumerate() {
        let at = format!("spec.ingress[{i}]");
        rule_head(&at, &rule.name, &rule.action)?;
        peers(&at, "from", &rule.from, false)?;
        protocols(&at, rule.protocols.as_deref())?;
    }
    for (i, rule) in spec.egress.iter().enumerate() {
        let at = format!("spec.egress[{i}]");
        rule_head(&at, &rule.name, &rule.action)?;
        peers(&at, "to", &rule.to, true)?;
        protocols(&at, rule.protocols.as_deref())?;
        let named = rule
            .protocols
            .iter()
            .flatten()
            .any(|p| p.destination_named_port.is_some());
        let not_pods = rule
            .to
            .iter()
            .any(|p| p.networks.is_some() || p.nodes.is_some() || p.domain_names.is_some());
        if named && not_pods {
            return bad(
                &at,
                "networks/nodes/domainNames peer cannot be set with namedPorts since there are no namedPorts for networks/nodes/domainNames",
            );
        }
        if rule.action != "Accept" && rule.to.iter().any(|p| p.domain_names.is_some()) {
            return bad(
                format!("{at}.action"),
                "domainNames peers are only supported for Accept rules",
            );
        }
    }
    Ok(())
}

fn rule_head(at: &str, name: &str, action: &str) -> Check {
    if name.len() > MAX_RULE_NAME {
        return bad(
            format!("{at}.name"),
            format!("Too long: may not be more than {MAX_RULE_NAME} bytes"),
        );
    }
    match action {
        "Accept" | "Deny" | "Pass" => Ok(()),
        "" => bad(format!("{at}.action"), "Required value"),
        other => bad(
            format!("{at}.action"),
            format!(
                "Unsupported value: {other:?}: supported values: \"Accept\", \"Deny\", \"Pass\""
            ),
        ),
    }
}

fn peers(at: &str, field: &str, list: &[Peer], egress: bool) -> Check {
    if list.is_empty() {
        return bad(format!("{at}.{field}"), "Required value: at least one peer");
    }
    if list.len() > MAX_PEERS {
        return bad(
            format!("{at}.{field}"),
            format!(
                "Too many: {}: must have at most {MAX_PEERS} items",
                list.len()
            ),
        );
    }
    for (j, peer) in list.iter().enumerate() {
        let at = format!("{at}.{field}[{j}]");
        let set = [
            peer.namespaces.is_some(),
            peer.pods.is_some(),
            peer.nodes.is_some(),
            peer.networks.is_some(),
            peer.domain_names.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            return bad(&at, "exactly one peer field must be set");
        }
        if !egress
            && (peer.nodes.is_some() || peer.networks.is_some() || peer.domain_names.is_some())
        {
            return bad(&at, "ingress peers may only be namespaces or pods");
        }
        if let Some(ns) = &peer.namespaces {
            selector(&format!("{at}.namespaces"), ns)?;
        }
        if let Some(pods) = &peer.pods {
            namespaced_pod(&format!("{at}.pods"), pods)?;
        }
        if let Some(nodes) = &peer.nodes {
            selector(&format!("{at}.nodes"), nodes)?;
        }
        if let Some(networks) = &peer.networks {
            if networks.is_empty() || networks.len() > MAX_NETWORKS {
                return bad(
                    format!("{at}.networks"),
                    format!("must have 1 to {MAX_NETWORKS} items"),
                );
            }
            for (k, cidr) in networks.iter().enumerate() {
                if cidr.parse::<ipnet::IpNet>().is_err() {
                    return bad(
                        format!("{at}.networks[{k}]"),
                        format!("Invalid value: {cidr:?}: must be a CIDR (10.0.0.0/8, fd00::/8)"),
                    );
                }
            }
        }
        if let Some(names) = &peer.domain_names {
            if names.is_empty() || names.len() > MAX_NETWORKS {
                return bad(
                    format!("{at}.domainNames"),
                    format!("must have 1 to {MAX_NETWORKS} items"),
                );
            }
        }
    }
    Ok(())
}

fn protocols(at: &str, list: Option<&[ProtocolMatch]>) -> Check {
    let Some(list) = list else { return Ok(()) };
    if list.is_empty() || list.len() > MAX_PROTOCOLS {
        return bad(
            format!("{at}.protocols"),
            format!("must have 1 to {MAX_PROTOCOLS} items"),
        );
    }
    for (j, p) in list.iter().enumerate() {
        let at = format!("{at}.protocols[{j}]");
        let set = [
            p.tcp.is_some(),
            p.udp.is_some(),
            p.sctp.is_some(),
            p.destination_named_port.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            return bad(
                &at,
                "exactly one of tcp, udp, sctp or destinationNamedPort must be set",
            );
        }
        for (name, m) in [("tcp", &p.tcp), ("udp", &p.udp), ("sctp", &p.sctp)] {
            let Some(port) = m.as_ref().and_then(|m| m.destination_port.as_ref()) else {
                continue;
            };
            let at = format!("{at}.{name}.destinationPort");
            match (port.number, &port.range) {
                (Some(n), None) => port_number(&format!("{at}.number"), n)?,
                (None, Some(r)) => {
                    port_number(&format!("{at}.range.start"), r.start)?;
                    port_number(&format!("{at}.range.end"), r.end)?;
                    if r.start > r.end {
                        return bad(
                            format!("{at}.range"),
                            "Invalid value: start port must be smaller than or equal to end port",
                        );
                    }
                }
                _ => return bad(&at, "exactly one of number or range must be set"),
            }
        }
        if let Some(name) = &p.destination_named_port {
            if name.is_empty() {
                return bad(format!("{at}.destinationNamedPort"), "must not be empty");
            }
        }
    }
    Ok(())
}

fn port_number(field: &str, port: i32) -> Check {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        bad(
            field,
            format!("Invalid value: {port}: must be between 1 and 65535"),
        )
    }
}

fn selector(field: &str, s: &LabelSelector) -> Check {
    Selector::from_label_selector(s)
        .map(|_| ())
        .map_err(|e| (field.to_owned(), e.to_string()))
}

fn namespaced_pod(field: &str, p: &NamespacedPod) -> Check {
    selector(&format!("{field}.namespaceSelector"), &p.namespace_selector)?;
    selector(&format!("{field}.podSelector"), &p.pod_selector)
}

#[cfg(test)]
mod tests {
    fn admit(yaml: &str) -> Result<crate::Object, (String, String)> {
        let value: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        crate::Object::admit_json(crate::Kind::ClusterNetworkPolicy, &value)
    }

    const GOOD: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: deny-monitoring}
spec:
  tier: Admin
  priority: 10
  subject:
    namespaces: {matchLabels: {team: a}}
  ingress:
  - name: deny-from-b
    action: Deny
    from:
    - pods:
        namespaceSelector: {matchLabels: {team: b}}
        podSelector: {}
    protocols:
    - tcp: {destinationPort: {number: 80}}
    - udp: {destinationPort: {range: {start: 5000, end: 5100}}}
  egress:
  - action: Accept
    to:
    - networks: [10.0.0.0/8, "fd00::/8"]
"#;

    #[test]
    fn a_policy_written_as_the_api_documents_it_is_admitted_and_round_trips() {
        let object = admit(GOOD).expect("admitted");
        let back = serde_json::to_value(&object).unwrap();
        assert_eq!(back["apiVersion"], "policy.networking.k8s.io/v1alpha2");
        assert_eq!(back["kind"], "ClusterNetworkPolicy");
        assert_eq!(back["spec"]["tier"], "Admin");
        assert_eq!(
            back["spec"]["ingress"][0]["protocols"][1]["udp"]["destinationPort"]["range"]["end"],
            5100
        );
        assert_eq!(
            back["spec"]["egress"][0]["to"][0]["networks"][1],
            "fd00::/8"
        );
    }

    #[test]
    fn what_the_crd_refuses_is_refused_with_the_field_named() {
        let cases = [
            ("tier: Admin", "tier: Platform", "spec.tier"),
            ("priority: 10", "priority: 1001", "spec.priority"),
            ("action: Deny", "action: Allow", "spec.ingress[0].action"),
            ("namespaces: {matchLabels: {team: a}}", "{}", "spec.subject"),
            (
                "{number: 80}",
                "{number: 0}",
                "spec.ingress[0].protocols[0].tcp.destinationPort.number",
            ),
            (
                "{start: 5000, end: 5100}",
                "{start: 5100, end: 5000}",
                "spec.ingress[0].protocols[1].udp.destinationPort.range",
            ),
            (
                "[10.0.0.0/8, \"fd00::/8\"]",
                "[10.0.0.0/33]",
                "spec.egress[0].to[0].networks[0]",
            ),
            (
                "- networks:",
                "- networks: []\n      nodes: {}\n    - networks:",
                "spec.egress[0].to[0]",
            ),
        ];
        for (from, to, field) in cases {
            assert!(GOOD.contains(from), "{from}");
            let yaml = GOOD.replacen(from, to, 1);
            let (got, why) = admit(&yaml).expect_err(&yaml);
            assert_eq!(got, field, "{why}\n{yaml}");
        }
    }

    #[test]
    fn ingress_peers_are_pods_or_namespaces_only() {
        let yaml = GOOD.replacen(
            "- pods:\n        namespaceSelector: {matchLabels: {team: b}}\n        podSelector: {}",
            "- networks: [10.0.0.0/8]",
            1,
        );
        assert_ne!(yaml, GOOD);
        let (field, why) = admit(&yaml).unwrap_err();
        assert_eq!(field, "spec.ingress[0].from[0]", "{why}");
    }

    #[test]
    fn named_ports_cannot_go_with_networks() {
        let yaml = GOOD.replacen(
            "    - networks: [10.0.0.0/8, \"fd00::/8\"]\n",
            "    - networks: [10.0.0.0/8, \"fd00::/8\"]\n    protocols:\n    - destinationNamedPort: http\n",
            1,
        );
        assert_ne!(yaml, GOOD);
        let (field, why) = admit(&yaml).unwrap_err();
        assert_eq!(field, "spec.egress[0]", "{why}");
    }
}
