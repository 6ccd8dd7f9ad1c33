//! Gateway API status as the API should hold it, and the patches that
//! bring it there: what the planner decided ([`GatewayStatuses`]) against
//! what the objects carry now. Pure (the clock is the caller's), so that
//! "patch only what differs" is tested without an API server.
//!
//! Conditions are compared without their `lastTransitionTime`: a
//! condition whose status did not change keeps the time the API holds
//! (the spec's meaning of the field), and controllers on several nodes
//! that planned the same snapshot agree at once — whichever wrote first,
//! the others find nothing to write.

use std::net::IpAddr;

use serde_json::{json, Value};
use strait_model::gateway::{GatewayAddress, ListenerStatus, ParentReference, RouteParentStatus};
use strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use strait_model::{ClusterState, Kind, ObjectKey};

use crate::gateway::{Cond, GatewayStatuses};

/// One write to a `status` subresource: a JSON merge patch.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusPatch {
    pub kind: Kind,
    /// Empty for a cluster-scoped kind (GatewayClass).
    pub namespace: String,
    pub name: String,
    pub patch: Value,
}

impl StatusPatch {
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(self.kind, &self.namespace, &self.name)
    }
}

/// What the status writer is: the controller name it writes
/// `status.parents[].controllerName` as, the addresses it publishes in a
/// Gateway's `status.addresses`, and (with `--gateway`) the Gateways it
/// answers for — another process answers for the others.
#[derive(Clone, Debug, Default)]
pub struct StatusScope<'a> {
    pub controller: &'a str,
    pub addresses: &'a [IpAddr],
    pub only: Option<&'a [ObjectKey]>,
}

impl StatusScope<'_> {
    fn answers_for(&self, gateway: &ObjectKey) -> bool {
        self.only.is_none_or(|only| only.contains(gateway))
    }
}

/// Equal but for `lastTransitionTime`.
fn same_condition(a: &Condition, b: &Condition) -> bool {
    a.type_ == b.type_
        && a.status == b.status
        && a.reason == b.reason
        && a.message == b.message
        && a.observed_generation == b.observed_generation
}

fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_condition(a, b))
}

/// The planned conditions, each with the time the API holds for its type
/// if its status is unchanged, else `now`.
fn conditions(planned: &[Cond], current: &[Condition], now: &Time) -> Vec<Condition> {
    planned
        .iter()
        .map(|c| {
            let mut out = c.to_condition(now);
            if let Some(old) = current
                .iter()
                .find(|o| o.type_ == out.type_ && o.status == out.status)
            {
                out.last_transition_time = old.last_transition_time.clone();
            }
            out
        })
        .collect()
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    // The model's status types are plain data: serializing cannot fail.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The patches that bring the status of the Gateway API objects of
/// strait's classes to what the planner decided, none for an object that
/// already holds it.
pub fn status_patches(
    state: &ClusterState,
    statuses: &GatewayStatuses,
    scope: &StatusScope<'_>,
    now: &Time,
) -> Vec<StatusPatch> {
    let mut patches = Vec::new();
    for class in state.gateway_classes.iter() {
        let name = class.metadata.name.clone().unwrap_or_default();
        let Some(planned) = statuses.classes.get(&name) else {
            continue;
        };
        let current = class
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let wanted = conditions(planned, current, now);
        if !same_conditions(current, &wanted) {
            patches.push(StatusPatch {
                kind: Kind::GatewayClass,
                namespace: String::new(),
                name,
                patch: json!({"status": {"conditions": to_json(&wanted)}}),
            });
        }
    }

    let addresses: Vec<GatewayAddress> = scope
        .addresses
        .iter()
        .map(|ip| GatewayAddress {
            type_: Some("IPAddress".into()),
            value: ip.to_string(),
        })
        .collect();
    for gateway in state.gateways.iter() {
        let meta = &gateway.metadata;
        let key = ObjectKey::new(
            Kind::Gateway,
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        );
        let Some(report) = statuses.gateways.get(&key) else {
            continue;
        };
        if !scope.answers_for(&key) {
            continue;
        }
        let current = gateway.status.clone().unwrap_or_default();
        let wanted_conditions = conditions(&report.conditions, &current.conditions, now);
        let wanted_listeners: Vec<ListenerStatus> = report
            .listeners
            .iter()
            .map(|l| {
                let old = current
                    .listeners
                    .iter()
                    .find(|o| o.name == l.name)
                    .map(|o| o.conditions.as_slice())
                    .unwrap_or_default();
                ListenerStatus {
                    name: l.name.clone(),
                    supported_kinds: l.supported_kinds.clone(),
                    attached_routes: l.attached_routes,
                    conditions: conditions(&l.conditions, old, now),
                }
            })
            .collect();
        let listeners_same = current.listeners.len() == wanted_listeners.len()
            && current
                .listeners
                .iter()
                .zip(&wanted_listeners)
                .all(|(a, b)| {
                    a.name == b.name
                        && a.supported_kinds == b.supported_kinds
                        && a.attached_routes == b.attached_routes
                        && same_conditions(&a.conditions, &b.conditions)
                });
        if listeners_same
            && current.addresses == addresses
            && same_conditions(&current.conditions, &wanted_conditions)
        {
            continue;
        }
        patches.push(StatusPatch {
            kind: Kind::Gateway,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            // Every list whole (a merge patch replaces lists): an address
            // or listener gone goes with it.
            patch: json!({"status": {
                "addresses": to_json(&addresses),
                "conditions": to_json(&wanted_conditions),
                "listeners": to_json(&wanted_listeners),
            }}),
        });
    }

    for route in state.http_routes.iter() {
        let meta = &route.metadata;
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        let key = ObjectKey::new(
            Kind::HTTPRoute,
            namespace,
            meta.name.as_deref().unwrap_or_default(),
        );
        let gateway_of = |p: &ParentReference| {
            ObjectKey::new(
                Kind::Gateway,
                p.namespace.as_deref().unwrap_or(namespace),
                &p.name,
            )
        };
        // strait's entries: its controller name, for a Gateway this
        // process answers for. Everything else is another's to keep.
        let ours = |p: &RouteParentStatus| {
            p.controller_name == scope.controller && scope.answers_for(&gateway_of(&p.parent_ref))
        };
        let current: &[RouteParentStatus] = route
            .status
            .as_ref()
            .map(|s| s.parents.as_slice())
            .unwrap_or_default();
        let current_ours: Vec<&RouteParentStatus> = current.iter().filter(|p| ours(p)).collect();
        let wanted: Vec<RouteParentStatus> = statuses
            .routes
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|p| scope.answers_for(&gateway_of(&p.parent_ref)))
            .map(|p| {
                let old = current_ours
                    .iter()
                    .find(|o| o.parent_ref == p.parent_ref)
                    .map(|o| o.conditions.as_slice())
                    .unwrap_or_default();
                RouteParentStatus {
                    parent_ref: p.parent_ref.clone(),
                    controller_name: scope.controller.to_owned(),
                    conditions: conditions(&p.conditions, old, now),
                }
            })
            .collect();
        let same = current_ours.len() == wanted.len()
            && current_ours.iter().zip(&wanted).all(|(a, b)| {
                a.parent_ref == b.parent_ref
                    && a.controller_name == b.controller_name
                    && same_conditions(&a.conditions, &b.conditions)
            });
        if same {
            continue;
        }
        let mut parents: Vec<Value> = current.iter().filter(|p| !ours(p)).map(to_json).collect();
        parents.extend(wanted.iter().map(to_json));
        let mut patch = json!({"status": {"parents": parents}});
        // `status.parents` is shared with other controllers and replaced
        // whole: written only over the version read (else 409, and the
        // next update tries again with theirs).
        if let Some(rv) = meta.resource_version.as_deref() {
            patch["metadata"] = json!({"resourceVersion": rv});
        }
        patches.push(StatusPatch {
            kind: Kind::HTTPRoute,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            patch,
        });
    }
    patches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::plan_gateways;
    use crate::GATEWAY_CONTROLLER;
    use strait_model::{parse_str, Format};

    const BASE: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: strait, generation: 1}
spec: {controllerName: strait.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: default, generation: 3}
spec:
  gatewayClassName: strait
  listeners:
  - {name: http, port: 80, protocol: HTTP}
---
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: default}
spec:
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: good, namespace: default, generation: 2, resourceVersion: '17'}
spec:
  parentRefs: [{name: web}]
  rules: [{backendRefs: [{name: shop, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad, namespace: default, generation: 1}
spec:
  parentRefs: [{name: web}]
  hostnames: [bad.example]
  rules: [{backendRefs: [{name: missing, port: 80}]}]
";

    fn state(text: &str) -> ClusterState {
        let loaded = parse_str("test.yaml", text, Format::Yaml).expect("manifests");
        ClusterState::from_objects(
            loaded
                .objects
                .into_iter()
                .map(|(o, origin)| (o, Some(origin))),
        )
        .expect("snapshot")
    }

    fn time(second: i64) -> Time {
        Time(strait_model::k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
    }

    /// The state after the API applied `patches` (merge patches of status
    /// only: the lists and objects they set replace the old ones).
    fn applied(text: &str, patches: &[StatusPatch]) -> ClusterState {
        let loaded = parse_str("test.yaml", text, Format::Yaml).expect("manifests");
        let mut docs = Vec::new();
        for (o, _) in loaded.objects {
            let mut v = serde_json::to_value(&o).expect("json");
            let key = ObjectKey::of(&o);
            for p in patches.iter().filter(|p| p.key() == key) {
                let status = v
                    .as_object_mut()
                    .unwrap()
                    .entry("status")
                    .or_insert(json!({}));
                for (k, val) in p.patch["status"].as_object().unwrap() {
                    status[k] = val.clone();
                }
            }
            docs.push(serde_json::to_string(&v).unwrap());
        }
        state(&docs.join("\n---\n"))
    }

    #[test]
    fn status_is_written_once_then_left_alone() {
        let before = state(BASE);
        let plan = plan_gateways(&before, GATEWAY_CONTROLLER, None);
        let addresses: Vec<IpAddr> = vec!["172.18.0.2".parse().unwrap()];
        let scope = StatusScope {
            controller: GATEWAY_CONTROLLER,
            addresses: &addresses,
            only: None,
        };
        let patches = status_patches(&before, &plan.status, &scope, &time(100));
        let kinds: Vec<String> = patches.iter().map(|p| p.key().to_string()).collect();
        assert_eq!(patches.len(), 4, "{kinds:?}");
        let gw = &patches
            .iter()
            .find(|p| p.kind == Kind::Gateway)
            .unwrap()
            .patch["status"];
        assert_eq!(
            gw["addresses"],
            json!([{"type": "IPAddress", "value": "172.18.0.2"}])
        );
        assert_eq!(gw["conditions"][0]["type"], "Accepted");
        assert_eq!(gw["conditions"][0]["observedGeneration"], 3);
        assert_eq!(gw["listeners"][0]["attachedRoutes"], 2);
        let good = patches
            .iter()
            .find(|p| p.name == "good")
            .unwrap()
            .patch
            .clone();
        assert_eq!(good["metadata"]["resourceVersion"], "17");
        let parent = &good["status"]["parents"][0];
        assert_eq!(parent["controllerName"], GATEWAY_CONTROLLER);
        assert_eq!(parent["parentRef"]["name"], "web");
        assert_eq!(parent["conditions"][0]["observedGeneration"], 2);
        let bad = &patches.iter().find(|p| p.name == "bad").unwrap().patch["status"]["parents"][0];
        let resolved = bad["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "ResolvedRefs")
            .unwrap();
        assert_eq!(
            (&resolved["status"], &resolved["reason"]),
            (&json!("False"), &json!("BackendNotFound"))
        );

        // Applied, the same plan (later) writes nothing; the times stay.
        let after = applied(BASE, &patches);
        let plan2 = plan_gateways(&after, GATEWAY_CONTROLLER, None);
        assert!(status_patches(&after, &plan2.status, &scope, &time(200)).is_empty());

        // Another address: only the Gateway is written, and its conditions
        // keep their first transition time.
        let more: Vec<IpAddr> = vec!["172.18.0.2".parse().unwrap(), "172.18.0.3".parse().unwrap()];
        let scope2 = StatusScope {
            addresses: &more,
            ..scope.clone()
        };
        let again = status_patches(&after, &plan2.status, &scope2, &time(300));
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(again[0].kind, Kind::Gateway);
        assert_eq!(
            again[0].patch["status"]["conditions"][0]["lastTransitionTime"],
            json!("1970-01-01T00:01:40Z")
        );
    }

    #[test]
    fn other_controllers_parents_are_kept() {
        let other = "
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shared, namespace: default, generation: 1}
spec:
  parentRefs: [{name: web}, {name: theirs}]
  rules: [{backendRefs: [{name: shop, port: 80}]}]
status:
  parents:
  - parentRef: {group: gateway.networking.k8s.io, kind: Gateway, name: theirs}
    controllerName: example.com/other
    conditions:
    - {type: Accepted, status: 'True', reason: Accepted, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}
";
        let text = format!("{BASE}{other}");
        let st = state(&text);
        let plan = plan_gateways(&st, GATEWAY_CONTROLLER, None);
        let scope = StatusScope {
            controller: GATEWAY_CONTROLLER,
            addresses: &[],
            only: None,
        };
        let patches = status_patches(&st, &plan.status, &scope, &time(100));
        let shared = &patches.iter().find(|p| p.name == "shared").unwrap().patch;
        let parents = shared["status"]["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 2, "{parents:?}");
        assert_eq!(parents[0]["controllerName"], "example.com/other");
        assert_eq!(parents[1]["controllerName"], GATEWAY_CONTROLLER);
        assert_eq!(parents[1]["parentRef"]["name"], "web");

        // Limited to another Gateway (`--gateway`): nothing of web's.
        let only = [ObjectKey::new(Kind::Gateway, "default", "elsewhere")];
        let scope = StatusScope {
            only: Some(&only),
            ..scope
        };
        let patches = status_patches(&st, &plan.status, &scope, &time(100));
        assert!(
            patches.iter().all(|p| p.kind == Kind::GatewayClass),
            "{patches:?}"
        );
    }
}
