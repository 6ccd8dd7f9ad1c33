//! The upstream Kubernetes e2e NetworkPolicy cases
//! (kubernetes/kubernetes `test/e2e/network/netpol/network_policy.go`) as
//! data — our own code, their topology, policies and expected truth
//! tables — shared by the rootless suite (`tests/e2e.rs`: the reference
//! reading and the traced plan) and the lab's (`strait lab policy matrix`
//! against real connections, in the `strait` crate's tests).
//!
//! The topology is upstream's model: namespaces x, y, z labelled
//! `ns=<name>` (plus `kubernetes.io/metadata.name`), each with pods a, b,
//! c labelled `pod=<name>`, serving ports 80 and 81 over TCP, UDP and SCTP
//! with ports named `serve-<port>-<protocol>`. Expected reachability is
//! written the upstream way: a default for every pair, then `expect`,
//! `expect_all_ingress`, `expect_all_egress` and `expect_peer` overrides,
//! in order.

use std::collections::BTreeMap;

use crate::Protocol;
use Protocol::{Sctp, Tcp, Udp};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
pub const PORTS: [u16; 2] = [80, 81];
pub const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

/// A NetworkPolicy named `name` in `ns` with `spec` (YAML, one field a line).
pub fn np(ns: &str, name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: \"{ns}\"\nspec:\n{spec}"
    )
}

// ---------------------------------------------------------------------------
// Expected reachability, the upstream way

/// Matches pods by namespace and/or name; empty fields match every pod.
#[derive(Clone, Copy)]
pub struct Peer {
    pub namespace: Option<&'static str>,
    pub pod: Option<&'static str>,
}

pub fn any() -> Peer {
    Peer {
        namespace: None,
        pod: None,
    }
}

pub fn ns(namespace: &'static str) -> Peer {
    Peer {
        namespace: Some(namespace),
        pod: None,
    }
}

pub fn pod(namespace: &'static str, pod: &'static str) -> Peer {
    Peer {
        namespace: Some(namespace),
        pod: Some(pod),
    }
}

impl Peer {
    pub fn matches(&self, pod: &str) -> bool {
        let (ns, name) = pod.split_once('/').unwrap_or_default();
        self.namespace.is_none_or(|n| n == ns) && self.pod.is_none_or(|p| p == name)
    }
}

pub fn all_pods() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect()
}

/// The expected truth table for one probe (port, protocol).
#[derive(Clone)]
pub struct Reach {
    pub expected: BTreeMap<(String, String), bool>,
}

impl Reach {
    pub fn new(default: bool) -> Reach {
        let pods = all_pods();
        let expected = pods
            .iter()
            .flat_map(|f| pods.iter().map(move |t| ((f.clone(), t.clone()), default)))
            .collect();
        Reach { expected }
    }

    pub fn expect(mut self, from: &str, to: &str, allowed: bool) -> Reach {
        self.expected
            .insert((from.to_owned(), to.to_owned()), allowed);
        self
    }

    /// Every connection *to* `to`.
    pub fn expect_all_ingress(self, to: &str, allowed: bool) -> Reach {
        let (n, p) = to.split_once('/').unwrap();
        let to = Peer {
            namespace: Some(known(n)),
            pod: Some(known(p)),
        };
        self.expect_peer(any(), to, allowed)
    }

    /// Every connection *from* `from`.
    pub fn expect_all_egress(self, from: &str, allowed: bool) -> Reach {
        let (n, p) = from.split_once('/').unwrap();
        let from = Peer {
            namespace: Some(known(n)),
            pod: Some(known(p)),
        };
        self.expect_peer(from, any(), allowed)
    }

    pub fn expect_peer(mut self, from: Peer, to: Peer, allowed: bool) -> Reach {
        for ((f, t), v) in self.expected.iter_mut() {
            if from.matches(f) && to.matches(t) {
                *v = allowed;
            }
        }
        self
    }
}

/// The topology's own spelling of a namespace or pod name.
pub fn known(s: &str) -> &'static str {
    match (NAMESPACES.iter().chain(PODS.iter())).find(|x| **x == s) {
        Some(x) => x,
        None => panic!("{s:?} is not in the topology"),
    }
}

// ---------------------------------------------------------------------------
// Cases

/// What a step of a case does to the cluster.
pub enum Action {
    /// Create or replace a NetworkPolicy (YAML).
    Apply(String),
    /// Delete every NetworkPolicy.
    DeletePolicies,
    /// Add a label to a namespace.
    LabelNamespace(&'static str, &'static str, &'static str),
    /// Add labels to a pod.
    LabelPod(
        &'static str,
        &'static str,
        Vec<(&'static str, &'static str)>,
    ),
}

pub enum Event {
    Act(Action),
    Probe(u16, Protocol, Reach),
}

pub struct Case {
    /// The upstream `It(...)` title, with its suite for the UDP/SCTP ones.
    pub name: String,
    pub events: Vec<Event>,
}

impl Case {
    pub fn new(name: impl Into<String>) -> Case {
        Case {
            name: name.into(),
            events: Vec::new(),
        }
    }

    pub fn apply(mut self, policy: String) -> Case {
        self.events.push(Event::Act(Action::Apply(policy)));
        self
    }

    pub fn act(mut self, action: Action) -> Case {
        self.events.push(Event::Act(action));
        self
    }

    pub fn probe(mut self, port: u16, protocol: Protocol, reach: Reach) -> Case {
        self.events.push(Event::Probe(port, protocol, reach));
        self
    }
}

pub fn t() -> Reach {
    Reach::new(true)
}

/// The cases, in upstream's order; `ip` gives a pod's (`ns/pod`) address,
/// which the ipBlock cases name.
pub fn cases(ip: &dyn Fn(&str) -> String) -> Vec<Case> {
    let ns_y = "namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: \"y\"}}";
    let mut v = vec![
        Case::new("should support a 'default-deny-ingress' policy")
            .apply(np("x", "deny-ingress", "podSelector: {}\npolicyTypes: [Ingress]\ningress: []"))
            .probe(80, Tcp, t().expect_peer(any(), ns("x"), false)),
        Case::new("should support a 'default-deny-all' policy")
            .apply(np("x", "deny-all", "podSelector: {}\npolicyTypes: [Ingress, Egress]\ningress: []\negress: []"))
            .probe(80, Tcp, t().expect_peer(any(), ns("x"), false).expect_peer(ns("x"), any(), false)),
        Case::new("should enforce policy to allow traffic from pods within server namespace based on PodSelector")
            .apply(np("x", "x-a-allows-x-b", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]"))
            .probe(80, Tcp, t().expect_all_ingress("x/a", false).expect("x/b", "x/a", true)),
        Case::new("should enforce policy to allow ingress traffic for a target")
            .apply(np("x", "deny-all", "podSelector: {}\npolicyTypes: [Ingress]\ningress: []"))
            .apply(np("x", "allow-all-to-a", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{from: [{podSelector: {}, namespaceSelector: {}}]}]"))
            .probe(80, Tcp, t().expect_all_ingress("x/a", true).expect_all_ingress("x/b", false).expect_all_ingress("x/c", false)),
        Case::new("should enforce policy to allow ingress traffic from pods in all namespaces")
            .apply(np("x", "allow-from-another-ns", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{from: [{namespaceSelector: {matchLabels: {}}}]}]"))
            .probe(80, Tcp, t()),
        Case::new("should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector")
            .apply(np("x", "allow-client-a-via-ns-selector", &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Ingress]\ningress: [{{from: [{{{ns_y}}}]}}]")))
            .probe(80, Tcp, t().expect_peer(ns("x"), pod("x", "a"), false).expect_peer(ns("z"), pod("x", "a"), false)),
        Case::new("should enforce policy based on PodSelector with MatchExpressions")
            .apply(np("x", "x-a-allows-x-b", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{from: [{podSelector: {matchExpressions: [{key: pod, operator: In, values: [b]}]}}]}]"))
            .probe(80, Tcp, t().expect_all_ingress("x/a", false).expect("x/b", "x/a", true)),
        Case::new("should enforce policy based on NamespaceSelector with MatchExpressions")
            .apply(np("x", "allow-ns-y-match-selector", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [\"y\"]}]}}]}]"))
            .probe(80, Tcp, t().expect_peer(ns("x"), pod("x", "a"), false).expect_peer(ns("z"), pod("x", "a"), false)),
        Case::new("should enforce policy based on PodSelector or NamespaceSelector")
            .apply(np("x", "allow-ns-y-match-selector", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]}}, {podSelector: {matchLabels: {pod: b}}}]}]"))
            .probe(80, Tcp, t().expect("x/a", "x/a", false).expect("x/c", "x/a", false)),
        Case::new("should enforce policy based on PodSelector and NamespaceSelector")
            .apply(np("x", "allow-ns-y-podselector-and-nsselector", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]}, podSelector: {matchLabels: {pod: b}}}]}]"))
            .probe(80, Tcp, t().expect_all_ingress("x/a", false).expect("y/b", "x/a", true).expect("z/b", "x/a", true)),
        Case::new("should enforce policy based on Multiple PodSelectors and NamespaceSelectors")
            .apply(np("x", "allow-ns-y-z-pod-b-c", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]}, podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}}]}]"))
            .probe(80, Tcp, t().expect_peer(ns("x"), pod("x", "a"), false).expect("y/a", "x/a", false).expect("z/a", "x/a", false)),
        Case::new("should enforce policy based on any PodSelectors")
            .apply(np("x", "allow-ns-x-pod-b-c", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{from: [{podSelector: {matchLabels: {pod: b}}}, {podSelector: {matchLabels: {pod: c}}}]}]"))
            .probe(80, Tcp, t().expect_all_ingress("x/a", false).expect("x/b", "x/a", true).expect("x/c", "x/a", true)),
        Case::new("should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector")
            .apply(np("x", "allow-ns-y-pod-a-via-namespace-pod-selector", &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Ingress]\ningress: [{{from: [{{{ns_y}, podSelector: {{matchLabels: {{pod: a}}}}}}]}}]")))
            .probe(80, Tcp, t().expect_all_ingress("x/a", false).expect("y/a", "x/a", true)),
        Case::new("should enforce policy based on Ports")
            .apply(np("x", "allow-client-a-via-ns-selector", &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Ingress]\ningress: [{{from: [{{{ns_y}}}], ports: [{{port: 81, protocol: TCP}}]}}]")))
            .probe(81, Tcp, t().expect_peer(ns("x"), pod("x", "a"), false).expect_peer(ns("y"), pod("x", "a"), true).expect_peer(ns("z"), pod("x", "a"), false)),
    ];
    // Stacked policies: one probe set, the policy added, the same again.
    let allow81 = t()
        .expect_peer(ns("x"), pod("x", "a"), false)
        .expect_peer(ns("y"), pod("x", "a"), true)
        .expect_peer(ns("z"), pod("x", "a"), false);
    v.push(
        Case::new("should enforce multiple, stacked policies with overlapping podSelectors")
            .apply(np("x", "allow-client-a-via-ns-selector", &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Ingress]\ningress: [{{from: [{{{ns_y}}}], ports: [{{port: 81, protocol: TCP}}]}}]")))
            .probe(81, Tcp, allow81.clone())
            .probe(80, Tcp, t().expect_all_ingress("x/a", false))
            .apply(np("x", "allow-client-a-via-ns-selector-80", &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Ingress]\ningress: [{{from: [{{{ns_y}}}], ports: [{{port: 80, protocol: TCP}}]}}]")))
            .probe(80, Tcp, allow81),
    );
    v.extend([
        Case::new("should support allow-all policy")
            .apply(np("x", "allow-all", "podSelector: {matchLabels: {}}\npolicyTypes: [Ingress]\ningress: [{}]"))
            .probe(80, Tcp, t())
            .probe(81, Tcp, t()),
        Case::new("should allow ingress access on one named port")
            .apply(np("x", "allow-all", "podSelector: {matchLabels: {}}\npolicyTypes: [Ingress]\ningress: [{ports: [{port: serve-81-tcp}]}]"))
            .probe(81, Tcp, t())
            .probe(80, Tcp, t().expect_peer(any(), ns("x"), false)),
        Case::new("should allow ingress access from namespace on one named port")
            .apply(np("x", "allow-client-a-via-ns-selector-80", &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Ingress]\ningress: [{{from: [{{{ns_y}}}], ports: [{{port: serve-80-tcp, protocol: TCP}}]}}]")))
            .probe(80, Tcp, t().expect_peer(ns("x"), pod("x", "a"), false).expect_peer(ns("z"), pod("x", "a"), false))
            .probe(81, Tcp, t().expect_all_ingress("x/a", false)),
        Case::new("should allow egress access on one named port")
            .apply(np("x", "allow-egress", "podSelector: {matchLabels: {}}\npolicyTypes: [Egress]\negress: [{ports: [{port: serve-80-tcp}]}]"))
            .probe(80, Tcp, t())
            .probe(81, Tcp, t().expect_peer(ns("x"), any(), false)),
        Case::new("should enforce updated policy")
            .apply(np("x", "allow-all-mutate-to-deny-all", "podSelector: {matchLabels: {}}\npolicyTypes: [Ingress]\ningress: [{}]"))
            .probe(81, Tcp, t())
            .apply(np("x", "allow-all-mutate-to-deny-all", "podSelector: {matchLabels: {}}\npolicyTypes: [Ingress]\ningress: []"))
            .probe(81, Tcp, t().expect_peer(any(), ns("x"), false)),
        Case::new("should allow ingress access from updated namespace")
            .apply(np("x", "allow-client-a-via-ns-selector", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{from: [{namespaceSelector: {matchLabels: {ns2: updated}}}]}]"))
            .probe(80, Tcp, t().expect_all_ingress("x/a", false))
            .act(Action::LabelNamespace("y", "ns2", "updated"))
            .probe(80, Tcp, t().expect_all_ingress("x/a", false).expect_peer(ns("y"), any(), true)),
        Case::new("should allow ingress access from updated pod")
            .apply(np("x", "allow-client-a-via-pod-selector", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{from: [{podSelector: {matchLabels: {pod: b, pod2: updated}}}]}]"))
            .probe(80, Tcp, t().expect_all_ingress("x/a", false))
            .act(Action::LabelPod("x", "b", vec![("pod", "b"), ("pod2", "updated")]))
            .probe(80, Tcp, t().expect_all_ingress("x/a", false).expect("x/b", "x/a", true)),
        Case::new("should deny ingress from pods on other namespaces")
            .apply(np("x", "deny-empty-policy", "podSelector: {}\npolicyTypes: [Ingress]\ningress: [{from: [{podSelector: {matchLabels: {}}}]}]"))
            .probe(80, Tcp, t().expect_peer(ns("y"), ns("x"), false).expect_peer(ns("z"), ns("x"), false)),
        Case::new("should deny ingress access to updated pod")
            .apply(np("x", "deny-ingress-via-label-selector", "podSelector: {matchLabels: {target: isolated}}\npolicyTypes: [Ingress]\ningress: []"))
            .probe(80, Tcp, t())
            .act(Action::LabelPod("x", "a", vec![("target", "isolated")]))
            .probe(80, Tcp, t().expect_all_ingress("x/a", false)),
        Case::new("should deny egress from pods based on PodSelector")
            .apply(np("x", "deny-egress-pod-a", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress: []"))
            .probe(80, Tcp, t().expect_all_egress("x/a", false)),
        Case::new("should deny egress from all pods in a namespace")
            .apply(np("x", "deny-egress-ns-x", "podSelector: {}\npolicyTypes: [Egress]\negress: []"))
            .probe(80, Tcp, t().expect_peer(ns("x"), any(), false)),
        Case::new("should work with Ingress, Egress specified together")
            .apply(np("x", "allow-client-a-via-pod-selector", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress, Ingress]\ningress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]\negress: [{ports: [{port: 80}]}]"))
            .probe(80, Tcp, t().expect_all_ingress("x/a", false).expect("x/b", "x/a", true))
            .probe(81, Tcp, t().expect_all_ingress("x/a", false).expect_all_egress("x/a", false).expect("x/b", "x/a", true)),
        Case::new("should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)")
            .apply(np("x", "allow-to-ns-y-pod-a", &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Egress]\negress: [{{to: [{{{ns_y}, podSelector: {{matchLabels: {{pod: a}}}}}}]}}]")))
            .apply(np("y", "allow-from-xa-on-ya-match-selector", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}, podSelector: {matchLabels: {pod: a}}}]}]"))
            .apply(np("y", "allow-from-xa-on-yb-match-selector", "podSelector: {matchLabels: {pod: b}}\npolicyTypes: [Ingress]\ningress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}, podSelector: {matchLabels: {pod: a}}}]}]"))
            .probe(80, Tcp, t()
                .expect_peer(pod("x", "a"), any(), false)
                .expect_peer(any(), pod("y", "a"), false)
                .expect_peer(pod("x", "a"), pod("y", "a"), true)
                .expect_peer(any(), pod("y", "b"), false)),
        Case::new("should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector")
            .apply(np("x", "allow-to-ns-y-pod-a", &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Egress]\negress: [{{to: [{{{ns_y}, podSelector: {{matchLabels: {{pod: a}}}}}}]}}]")))
            .probe(80, Tcp, t().expect_all_egress("x/a", false).expect("x/a", "y/a", true)),
        Case::new("should enforce ingress policy allowing any port traffic to a server on a specific protocol")
            .apply(np("x", "allow-ingress-by-proto", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{ports: [{protocol: TCP}]}]"))
            .probe(80, Tcp, t())
            .probe(80, Udp, t().expect_peer(any(), pod("x", "a"), false)),
        Case::new("should enforce multiple ingress policies with ingress allow-all policy taking precedence")
            .apply(np("x", "allow-ingress-port-80", "podSelector: {matchLabels: {}}\npolicyTypes: [Ingress]\ningress: [{ports: [{port: 80}]}]"))
            .probe(81, Tcp, t().expect_peer(any(), ns("x"), false))
            .apply(np("x", "allow-ingress", "podSelector: {matchLabels: {}}\npolicyTypes: [Ingress]\ningress: [{}]"))
            .probe(81, Tcp, t()),
        Case::new("should enforce multiple egress policies with egress allow-all policy taking precedence")
            .apply(np("x", "allow-egress-port-80", "podSelector: {matchLabels: {}}\npolicyTypes: [Egress]\negress: [{ports: [{port: 80}]}]"))
            .probe(81, Tcp, t().expect_peer(ns("x"), any(), false))
            .apply(np("x", "allow-egress", "podSelector: {matchLabels: {}}\npolicyTypes: [Egress]\negress: [{}]"))
            .probe(81, Tcp, t()),
        Case::new("should stop enforcing policies after they are deleted")
            .apply(np("x", "deny-all", "podSelector: {}\npolicyTypes: [Ingress, Egress]\ningress: []\negress: []"))
            .probe(80, Tcp, t().expect_peer(ns("x"), any(), false).expect_peer(any(), ns("x"), false))
            .act(Action::DeletePolicies)
            .probe(80, Tcp, t()),
        // ipBlock on pod addresses: implementation-defined in the API, expected by upstream.
        Case::new("should allow egress access to server in CIDR block")
            .apply(np("x", "allow-client-a-via-cidr-egress-rule", &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Egress]\negress: [{{to: [{{ipBlock: {{cidr: {}/32}}}}]}}]", ip("y/b"))))
            .probe(80, Tcp, t().expect_all_egress("x/a", false).expect("x/a", "y/b", true)),
        Case::new("should enforce except clause while egress access to server in CIDR block")
            .apply(np("x", "allow-client-a-via-cidr-egress-rule", &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Egress]\negress: [{{to: [{{ipBlock: {{cidr: {}, except: [{}/32]}}}}]}}]", large_cidr(&ip("x/b")), ip("x/b"))))
            .probe(80, Tcp, t().expect("x/a", "x/b", false)),
        Case::new("should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed")
            .apply(np("x", "allow-client-a-via-cidr-egress-rule", &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Egress]\negress: [{{to: [{{ipBlock: {{cidr: {}, except: [{}/32]}}}}]}}]", large_cidr(&ip("x/b")), ip("x/b"))))
            .probe(80, Tcp, t().expect("x/a", "x/b", false))
            // Upstream updates the policy of the same name: it replaces the first.
            .apply(np("x", "allow-client-a-via-cidr-egress-rule", &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Egress]\negress: [{{to: [{{ipBlock: {{cidr: {}/32}}}}]}}]", ip("x/b"))))
            .probe(80, Tcp, t().expect_all_egress("x/a", false).expect("x/a", "x/b", true)),
        Case::new("should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector")
            .apply(np("x", "allow-egress-for-target", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress: [{}]"))
            .probe(80, Tcp, t())
            .apply(np("x", "deny-ingress-via-label-selector", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: []"))
            .probe(80, Tcp, t().expect_all_ingress("x/a", false)),
        Case::new("should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP")
            .apply(np("x", "deny-ingress", "podSelector: {}\npolicyTypes: [Ingress]\ningress: []"))
            .apply(np("x", "allow-only-sctp-ingress-on-port-81", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{ports: [{port: 81, protocol: SCTP}]}]"))
            .probe(81, Tcp, t().expect_peer(any(), ns("x"), false)),
        Case::new("should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP")
            .apply(np("x", "allow-only-sctp-ingress-on-port-80", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{ports: [{port: 80, protocol: SCTP}]}]"))
            .probe(81, Tcp, t().expect_all_ingress("x/a", false)),
        Case::new("should not allow access by TCP when a policy specifies only UDP")
            .apply(np("x", "allow-only-udp-ingress-on-port-81", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{ports: [{port: 81, protocol: UDP}]}]"))
            .probe(81, Tcp, t().expect_all_ingress("x/a", false)),
        Case::new("should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label")
            .apply(np("x", "allow-client-a-via-ns-selector-for-immutable-ns-label", &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Ingress]\ningress: [{{from: [{{{ns_y}}}]}}]")))
            .probe(80, Tcp, t().expect_peer(ns("x"), pod("x", "a"), false).expect_peer(ns("z"), pod("x", "a"), false)),
        Case::new("should enforce policy based on NamespaceSelector with MatchExpressions using default ns label")
            .apply(np("x", "allow-ns-y-match-selector-for-immutable-ns-label", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress: [{to: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [\"y\"]}]}}]}]"))
            .probe(80, Tcp, t().expect_peer(pod("x", "a"), ns("y"), false)),
    ]);
    // The same three scenarios over UDP, then over SCTP.
    for (protocol, suite) in [(Udp, "UDP"), (Sctp, "SCTP")] {
        let p = protocol.as_str();
        let name = |title: &str| format!("{suite}: {title}");
        v.extend([
            Case::new(name("should support a 'default-deny-ingress' policy"))
                .apply(np("x", "deny-all", "podSelector: {}\npolicyTypes: [Ingress]\ningress: []"))
                .probe(80, protocol, t().expect_peer(any(), ns("x"), false)),
            Case::new(name("should enforce policy based on Ports"))
                .apply(np("x", "allow-ingress-on-port-81-ns-x", &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Ingress]\ningress: [{{from: [{{{ns_y}}}], ports: [{{port: 81, protocol: {p}}}]}}]")))
                .probe(81, protocol, t().expect_peer(ns("x"), pod("x", "a"), false).expect_peer(ns("z"), pod("x", "a"), false)),
            Case::new(name("should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector"))
                .apply(np("x", "allow-ns-y-pod-a-via-namespace-pod-selector", &format!("podSelector: {{matchLabels: {{pod: a}}}}\npolicyTypes: [Ingress]\ningress: [{{from: [{{{ns_y}, podSelector: {{matchLabels: {{pod: a}}}}}}]}}]")))
                .probe(80, protocol, t().expect_all_ingress("x/a", false).expect("y/a", "x/a", true)),
        ]);
    }
    v
}

/// Upstream's `makeLargeCIDRForIP`: the /4 holding the address.
pub fn large_cidr(ip: &str) -> String {
    let ip: std::net::Ipv4Addr = ip.parse().expect("IPv4");
    let net = ipnet::Ipv4Net::new(ip, 4).expect("prefix").trunc();
    net.to_string()
}
