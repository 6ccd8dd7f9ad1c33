//! Objects of the API through the model's admission, one at a time: the
//! same defaults and checks as manifests get, so that a refused object
//! names its field and hurts only itself.
//!
//! Objects arrive untyped ([`DynamicObject`]: only the metadata is typed):
//! one object with a field of the wrong type must not fail the decoding of
//! the whole list it came in, as it would with the typed list.

use kube::core::{DynamicObject, TypeMeta};
use serde_json::Value;
use strait_model::{Admission, Format, Kind, ObjectKey};

use crate::cache::Admitted;

/// The annotation `kubectl apply` keeps the whole object in: nothing of
/// strait reads it, and it doubles an object's size.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `object` (of `kind`, as the watch of `resource` gave it) admitted, or
/// refused with why.
pub fn admit(kind: Kind, resource: &str, mut object: DynamicObject) -> Admitted {
    let key = ObjectKey::new(
        kind,
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    );
    // List items come without apiVersion and kind; the model reads them.
    object.types = Some(TypeMeta {
        api_version: kind.api_version().to_owned(),
        kind: kind.as_str().to_owned(),
    });
    slim(kind, &mut object);
    let text = match serde_json::to_string(&object) {
        Ok(t) => t,
        Err(e) => {
            return Admitted::Refused {
                message: format!("{key}: cannot be read: {e}"),
                key,
            }
        }
    };
    drop(object);
    let source = format!("the watch of {resource}");
    match strait_model::parse_str_with(&source, &text, Format::Json, Admission::PerObject) {
        Ok(mut loaded) => {
            if let Some(refused) = loaded.refused.pop() {
                return Admitted::Refused {
                    key,
                    message: refused.error.to_string(),
                };
            }
            match loaded.objects.pop() {
                Some((o, _)) if ObjectKey::of(&o) == key => Admitted::Object(o),
                Some((o, _)) => Admitted::Refused {
                    message: format!("{key}: read as {}", ObjectKey::of(&o)),
                    key,
                },
                None => Admitted::Refused {
                    message: format!("{key}: not an object strait reads"),
                    key,
                },
            }
        }
        Err(e) => Admitted::Refused {
            key,
            message: e.to_string(),
        },
    }
}

/// Drop what no part of the node reads before it is kept: the
/// bookkeeping of server-side apply and `kubectl apply` on every kind,
/// and of a Pod everything but what Services, DNS and the proxy read (its
/// node, hostname, subdomain, container names and ports; its phase,
/// addresses and conditions). Pods are most of a cluster's objects: a
/// node of a large cluster keeps them small.
fn slim(kind: Kind, object: &mut DynamicObject) {
    object.metadata.managed_fields = None;
    if let Some(a) = object.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            object.metadata.annotations = None;
        }
    }
    if kind != Kind::Pod {
        return;
    }
    let Value::Object(data) = &mut object.data else {
        return;
    };
    if let Some(Value::Object(spec)) = data.get_mut("spec") {
        spec.retain(|k, _| {
            matches!(
                k.as_str(),
                "nodeName"
                    | "hostname"
                    | "subdomain"
                    | "hostNetwork"
                    | "containers"
                    | "initContainers"
                    | "restartPolicy"
                    | "dnsPolicy"
                    | "setHostnameAsFQDN"
            )
        });
        for group in ["containers", "initContainers"] {
            if let Some(Value::Array(list)) = spec.get_mut(group) {
                for c in list {
                    if let Value::Object(c) = c {
                        c.retain(|k, _| matches!(k.as_str(), "name" | "ports" | "restartPolicy"));
                    }
                }
            }
        }
    }
    if let Some(Value::Object(status)) = data.get_mut("status") {
        status.retain(|k, _| {
            matches!(
                k.as_str(),
                "phase" | "podIP" | "podIPs" | "hostIP" | "hostIPs" | "conditions"
            )
        });
        if let Some(Value::Array(conditions)) = status.get_mut("conditions") {
            conditions.retain(|c| c.get("type").and_then(Value::as_str) == Some("Ready"));
            for c in conditions {
                if let Value::Object(c) = c {
                    c.retain(|k, _| matches!(k.as_str(), "type" | "status"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_service_is_admitted_with_the_model_defaults() {
        let o = dynamic(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7",
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}
        }));
        let Admitted::Object(strait_model::Object::Service(svc)) =
            admit(Kind::Service, "services", o)
        else {
            panic!("not admitted");
        };
        let spec = svc.spec.as_ref().unwrap();
        // Defaulted as the manifests are.
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert!(svc.metadata.managed_fields.is_none());
        assert_eq!(svc.metadata.resource_version.as_deref(), Some("7"));
    }

    #[test]
    fn a_bad_field_refuses_the_object_and_names_the_field() {
        let o = dynamic(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"port": 70000}]}
        }));
        match admit(Kind::Service, "services", o) {
            Admitted::Refused { key, message } => {
                assert_eq!(key, ObjectKey::new(Kind::Service, "default", "web"));
                assert!(message.contains("spec.ports[0].port"), "{message}");
                assert!(message.contains("services"), "{message}");
            }
            other => panic!("admitted: {other:?}"),
        }
        // A field of the wrong type too: refused, not a panic.
        let o = dynamic(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": "eighty"}
        }));
        assert!(matches!(
            admit(Kind::Service, "services", o),
            Admitted::Refused { .. }
        ));
    }

    #[test]
    fn a_pod_keeps_what_the_node_reads() {
        let o = dynamic(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "hostname": "h", "subdomain": "s",
                "volumes": [{"name": "v", "emptyDir": {}}],
                "containers": [{"name": "c", "image": "nginx", "env": [{"name": "A", "value": "B"}],
                    "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}],
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "nginx", "imageID": ""}]}
        }));
        let Admitted::Object(strait_model::Object::Pod(pod)) = admit(Kind::Pod, "pods", o) else {
            panic!("not admitted");
        };
        assert_eq!(pod.node_name(), Some("n1"));
        assert_eq!(pod.hostname(), Some("h"));
        assert_eq!(pod.subdomain(), Some("s"));
        assert!(pod.is_ready());
        assert_eq!(pod.pod_ip(), Some("10.244.1.5"));
        assert_eq!(pod.container_port_by_name("http", "TCP"), Some(8080));
        let full = pod.to_pod().unwrap();
        let spec = full.spec.unwrap();
        assert!(spec.volumes.is_none());
        assert!(spec.containers[0].env.is_none() && spec.containers[0].image.is_none());
        assert!(full.status.unwrap().container_statuses.is_none());
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// How long admission takes per object (debug build): run on purpose.
    #[test]
    #[ignore = "a measurement"]
    fn admission_per_object() {
        let slice = |i: usize| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("s{i}"), "namespace": "default", "resourceVersion": "5", "uid": "x",
                    "labels": {"kubernetes.io/service-name": format!("s{i}")}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": (0..5).map(|e| serde_json::json!({"addresses": [format!("10.244.{}.{e}", i % 250)], "conditions": {"ready": true}, "nodeName": "node-1"})).collect::<Vec<_>>()
            }))
            .unwrap()
        };
        let objects: Vec<DynamicObject> = (0..5000).map(slice).collect();
        let started = std::time::Instant::now();
        for o in objects {
            assert!(matches!(
                admit(Kind::EndpointSlice, "endpointslices", o),
                Admitted::Object(_)
            ));
        }
        println!(
            "admission: {:.1} µs per EndpointSlice",
            started.elapsed().as_secs_f64() * 1e6 / 5000.0
        );
    }
}
