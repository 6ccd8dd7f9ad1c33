//! strait's own admission behind the store: the model's defaults and
//! validation (the same code `strait render` and the lab's manifest reader
//! run) for the kinds the model understands, and the strict decoding check
//! (`fieldValidation=Strict`) for every served kind.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use strait_model::k8s_openapi::api::{
    apps::v1 as apps, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery, networking::v1 as networking, policy::v1 as policy,
    rbac::v1 as rbac,
};
use strait_model::{Kind, Object};

use crate::error::{ApiError, Cause};
use crate::resources::Resource;
use crate::store::Admission;

/// Runs the model's admission on the kinds it knows (`Resource::model_kind`):
/// the object is read as its `k8s-openapi` type, defaulted and validated; a
/// refusal is a 422 naming the model's field; what was admitted is written
/// back as the defaulted object. Pods are only validated: the model keeps
/// them compact, and the compact form is not the object a client wrote.
/// Other kinds pass unchanged.
pub struct ModelAdmission;

impl Admission for ModelAdmission {
    fn admit(
        &self,
        resource: &Resource,
        object: &mut Value,
        _old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let Some(kind) = resource.model_kind() else {
            return Ok(());
        };
        match Object::admit_json(kind, object) {
            Err((field, message)) => {
                let name = object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                Err(ApiError::invalid(
                    resource,
                    name,
                    vec![cause(field, message)],
                ))
            }
            Ok(_) if kind == Kind::Pod => Ok(()),
            Ok(admitted) => {
                *object = serde_json::to_value(&admitted).map_err(|e| {
                    ApiError::internal(format!("admitted object does not serialize: {e}"))
                })?;
                Ok(())
            }
        }
    }
}

/// The model's (field, message) as a `Status` cause, in kube's reasons.
fn cause(field: String, message: String) -> Cause {
    let lower = message.to_ascii_lowercase();
    let reason = if lower.starts_with("missing") || lower.contains("required") {
        "FieldValueRequired"
    } else {
        "FieldValueInvalid"
    };
    Cause {
        reason: reason.into(),
        message,
        field,
    }
}

/// The fields of `object` that the resource's `k8s-openapi` type does not
/// know (`spec.foo`, `spec.containers[0].imagePullPolcy`): read as the
/// type, written back, and every path of the input missing from the
/// result. Empty for kinds without a type, and for objects that do not
/// read as their type at all (that is admission's error to report).
pub fn unknown_fields(resource: &Resource, object: &Value) -> Vec<String> {
    let mut typed = object.clone();
    if let Some(map) = typed.as_object_mut() {
        map.insert("apiVersion".into(), resource.api_version().into());
        map.insert("kind".into(), resource.kind.into());
    } else {
        return Vec::new();
    }
    let back = match (resource.group, resource.kind) {
        ("", "ConfigMap") => round_trip::<core::ConfigMap>(&typed),
        ("", "Endpoints") => round_trip::<core::Endpoints>(&typed),
        ("", "Event") => round_trip::<core::Event>(&typed),
        ("", "Namespace") => round_trip::<core::Namespace>(&typed),
        ("", "Node") => round_trip::<core::Node>(&typed),
        ("", "Pod") => round_trip::<core::Pod>(&typed),
        ("", "Secret") => round_trip::<core::Secret>(&typed),
        ("", "ServiceAccount") => round_trip::<core::ServiceAccount>(&typed),
        ("", "Service") => round_trip::<core::Service>(&typed),
        ("apps", "DaemonSet") => round_trip::<apps::DaemonSet>(&typed),
        ("apps", "Deployment") => round_trip::<apps::Deployment>(&typed),
        ("coordination.k8s.io", "Lease") => round_trip::<coordination::Lease>(&typed),
        ("discovery.k8s.io", "EndpointSlice") => round_trip::<discovery::EndpointSlice>(&typed),
        ("gateway.networking.k8s.io", "GatewayClass") => {
            round_trip::<strait_model::GatewayClass>(&typed)
        }
        ("gateway.networking.k8s.io", "Gateway") => round_trip::<strait_model::Gateway>(&typed),
        ("gateway.networking.k8s.io", "HTTPRoute") => round_trip::<strait_model::HTTPRoute>(&typed),
        ("gateway.networking.k8s.io", "ReferenceGrant") => {
            round_trip::<strait_model::ReferenceGrant>(&typed)
        }
        ("networking.k8s.io", "IngressClass") => round_trip::<networking::IngressClass>(&typed),
        ("networking.k8s.io", "Ingress") => round_trip::<networking::Ingress>(&typed),
        ("networking.k8s.io", "NetworkPolicy") => round_trip::<networking::NetworkPolicy>(&typed),
        ("policy", "PodDisruptionBudget") => round_trip::<policy::PodDisruptionBudget>(&typed),
        ("policy.networking.k8s.io", "ClusterNetworkPolicy") => {
            round_trip::<strait_model::ClusterNetworkPolicy>(&typed)
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            round_trip::<rbac::ClusterRoleBinding>(&typed)
        }
        ("rbac.authorization.k8s.io", "ClusterRole") => round_trip::<rbac::ClusterRole>(&typed),
        ("rbac.authorization.k8s.io", "RoleBinding") => round_trip::<rbac::RoleBinding>(&typed),
        ("rbac.authorization.k8s.io", "Role") => round_trip::<rbac::Role>(&typed),
        _ => None,
    };
    let mut unknown = Vec::new();
    if let Some(back) = back {
        missing(&typed, &back, "", &mut unknown);
    }
    unknown
}

fn round_trip<T: DeserializeOwned + Serialize>(object: &Value) -> Option<Value> {
    let typed = T::deserialize(object).ok()?;
    serde_json::to_value(typed).ok()
}

/// Paths present (and not null) in `input` but absent from `output`.
fn missing(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                let at = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    None => out.push(at),
                    Some(w) => missing(v, w, &at, out),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                missing(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::RESOURCES;
    use serde_json::json;

    fn resource(plural: &str) -> &'static Resource {
        RESOURCES.iter().find(|r| r.plural == plural).unwrap()
    }

    #[test]
    fn a_refused_service_names_the_models_field() {
        let svc = resource("services");
        let mut object = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {"ports": [{"port": 0}]}
        });
        let e = ModelAdmission.admit(svc, &mut object, None).unwrap_err();
        assert_eq!(e.code, 422);
        let causes = &e.details.as_ref().unwrap().causes;
        assert_eq!(causes[0].field, "spec.ports[0].port");
        assert_eq!(causes[0].reason, "FieldValueInvalid");
        assert!(e
            .message
            .starts_with("Service \"web\" is invalid: spec.ports[0].port"));
    }

    #[test]
    fn an_admitted_service_is_written_back_defaulted() {
        let svc = resource("services");
        let mut object = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
        });
        ModelAdmission.admit(svc, &mut object, None).unwrap();
        assert_eq!(object["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(object["metadata"]["uid"], "u");
    }

    #[test]
    fn pods_are_validated_not_rewritten() {
        let pods = resource("pods");
        let written = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}]}]}
        });
        let mut object = written.clone();
        ModelAdmission.admit(pods, &mut object, None).unwrap();
        assert_eq!(object, written);
        let mut bad = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
        });
        let e = ModelAdmission.admit(pods, &mut bad, None).unwrap_err();
        assert_eq!(e.code, 422);
        let cause = &e.details.as_ref().unwrap().causes[0];
        assert_eq!(cause.field, "spec");
        assert_eq!(cause.reason, "FieldValueRequired");
    }

    #[test]
    fn kinds_the_model_does_not_know_pass_unchanged() {
        let cm = resource("configmaps");
        let written = json!({"metadata": {"name": "x"}, "data": {"a": "b"}, "whatever": 1});
        let mut object = written.clone();
        ModelAdmission.admit(cm, &mut object, None).unwrap();
        assert_eq!(object, written);
    }

    #[test]
    fn unknown_fields_are_found_by_path() {
        let deploy = resource("deployments");
        let object = json!({
            "metadata": {"name": "web", "labels": {"a": "b"}, "bogus": 1},
            "spec": {
                "foo": true,
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [
                        {"name": "c", "image": "i"},
                        {"name": "d", "image": "i", "imagePullPolcy": "Always"}
                    ]}
                }
            },
            "status": null
        });
        let mut found = unknown_fields(deploy, &object);
        found.sort();
        assert_eq!(
            found,
            vec![
                "metadata.bogus",
                "spec.foo",
                "spec.template.spec.containers[1].imagePullPolcy"
            ]
        );
        let clean = json!({"metadata": {"name": "x"}, "data": {"k": "v"}});
        assert!(unknown_fields(resource("configmaps"), &clean).is_empty());
        // Every served kind has its type: an unknown top-level field is found.
        for r in RESOURCES {
            let object = json!({"metadata": {"name": "x"}, "surplus": 1});
            assert_eq!(unknown_fields(r, &object), vec!["surplus"], "{}", r.kind);
        }
    }
}
