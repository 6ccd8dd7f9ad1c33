//! Objects of the kinds strait understands, as one enum over the
//! `k8s-openapi` types.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Metadata;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cnp::ClusterNetworkPolicy;
use crate::gateway::{Gateway, GatewayClass, HTTPRoute, ReferenceGrant};
pub use crate::kind::{Kind, ObjectKey};
use crate::pod::CompactPod;
use crate::validate;

/// A document that reads as any one API type: what [`Object::from_doc`]
/// decodes. The manifest reader's documents are; the trait keeps this module
/// from depending on the reader.
pub(crate) trait TypedDoc {
    /// The document as `T`, or the failing field's path and why.
    fn typed<T: DeserializeOwned>(&self) -> Result<T, (String, String)>;
}

macro_rules! objects {
    ($($kind:ident($stored:ty) => $api:literal, namespaced: $ns:literal;)*) => {
        /// One Kubernetes object of a kind strait understands. Shared, not
        /// copied: a Service is close to 1 KB before its strings, and
        /// snapshots hold the same object for as long as it does not change.
        /// Pods are kept compact (see [`CompactPod`]).
        #[derive(Clone, Debug, PartialEq)]
        pub enum Object { $($kind(Arc<$stored>),)* }

        impl Object {
            pub fn kind(&self) -> Kind {
                match self { $(Object::$kind(_) => Kind::$kind,)* }
            }

            pub fn metadata(&self) -> &ObjectMeta {
                match self { $(Object::$kind(o) => o.metadata(),)* }
            }

            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self { $(Object::$kind(o) => Arc::make_mut(o).metadata_mut(),)* }
            }

            /// Deserialize a document whose `kind` is `kind`, reporting the
            /// failing field as a path (`spec.ports[0].port`).
            pub(crate) fn from_doc(kind: Kind, doc: &impl TypedDoc) -> Result<Object, (String, String)> {
                match kind {
                    $(Kind::$kind => doc
                        .typed::<$kind>()
                        .and_then(<$stored as Stored<$kind>>::from_typed)
                        .map(|o| Object::$kind(Arc::new(o))),)*
                }
            }
        }

        impl Serialize for Object {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self { $(Object::$kind(o) => o.serialize(s),)* }
            }
        }
    };
}

/// How a kind is kept in a snapshot, made from the typed object a manifest
/// gives. Most kinds are kept as they are.
trait Stored<T>: Sized {
    fn from_typed(typed: T) -> Result<Self, (String, String)>;
}

impl<T> Stored<T> for T {
    fn from_typed(typed: T) -> Result<T, (String, String)> {
        Ok(typed)
    }
}

/// A Pod's spec is admitted (defaulted, validated) while it is still typed:
/// once compact it is only read.
impl Stored<Pod> for CompactPod {
    fn from_typed(mut pod: Pod) -> Result<CompactPod, (String, String)> {
        validate::pod(&mut pod)?;
        Ok(CompactPod::new(pod))
    }
}

crate::kind::kind_table!(objects);

impl Object {
    /// Admission: default and validate the object in place, as the API
    /// server does before storing it (see [`crate::validate`]).
    pub(crate) fn admit(&mut self) -> Result<(), (String, String)> {
        let kind = self.kind();
        validate::metadata(kind, self.metadata_mut())?;
        let name = self.metadata().name.clone().unwrap_or_default();
        match self {
            Object::Service(svc) => validate::service(Arc::make_mut(svc)),
            // Checked by `validate::pod` while still typed.
            Object::Pod(_) => Ok(()),
            Object::Deployment(d) => validate::deployment(Arc::make_mut(d)),
            Object::Namespace(ns) => {
                validate::namespace(Arc::make_mut(ns), &name);
                Ok(())
            }
            Object::Endpoints(e) => validate::endpoints(Arc::make_mut(e)),
            Object::EndpointSlice(s) => validate::endpoint_slice(Arc::make_mut(s)),
            Object::NetworkPolicy(np) => validate::network_policy(Arc::make_mut(np)),
            Object::Node(node) => validate::node_pod_cidrs(node),
            Object::Ingress(_) | Object::IngressClass(_) => Ok(()),
            Object::Secret(secret) => validate::secret(Arc::make_mut(secret)),
            Object::ClusterNetworkPolicy(cnp) => crate::cnp::validate(cnp),
            Object::GatewayClass(c) => crate::gateway::admit_gateway_class(Arc::make_mut(c)),
            Object::Gateway(g) => crate::gateway::admit_gateway(Arc::make_mut(g)),
            Object::HTTPRoute(r) => crate::gateway::admit_http_route(Arc::make_mut(r)),
            Object::ReferenceGrant(g) => crate::gateway::admit_reference_grant(g),
        }
    }
}

impl Object {
    /// Admission of one object given as JSON, as an API server runs it on a
    /// write: read as the kind's `k8s-openapi` type, defaulted and
    /// validated. The error is the failing field's path and why. The
    /// namespace is taken as given (the caller has settled it).
    pub fn admit_json(kind: Kind, value: &serde_json::Value) -> Result<Object, (String, String)> {
        let doc = crate::manifest::Doc::Value(value.clone());
        let mut object = Object::from_doc(kind, &doc)?;
        object.admit()?;
        Ok(object)
    }
}

impl ObjectKey {
    pub fn of(object: &Object) -> Self {
        let meta = object.metadata();
        ObjectKey::new(
            object.kind(),
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod admit_json_tests {
    use super::*;

    #[test]
    fn admit_json_defaults_and_names_the_refused_field() {
        let svc = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
        });
        let admitted = Object::admit_json(Kind::Service, &svc).unwrap();
        let back = serde_json::to_value(&admitted).unwrap();
        assert_eq!(back["spec"]["ports"][0]["protocol"], "TCP");
        let mut bad = svc.clone();
        bad["spec"]["ports"][0]["port"] = 0.into();
        let (field, message) = Object::admit_json(Kind::Service, &bad).unwrap_err();
        assert_eq!(field, "spec.ports[0].port", "{message}");
        let mut typed_wrong = svc;
        typed_wrong["spec"]["ports"][0]["port"] = "eighty".into();
        let (field, _) = Object::admit_json(Kind::Service, &typed_wrong).unwrap_err();
        assert_eq!(field, "spec.ports[0].port");
    }
}
