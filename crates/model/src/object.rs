//! The kinds strait understands, as one enum over the `k8s-openapi` types.

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Metadata;
use serde::Serialize;

use crate::pod::CompactPod;

macro_rules! kinds {
    ($($kind:ident($stored:ty) => $api:literal, namespaced: $ns:literal;)*) => {
        /// A kind of object strait reads. Order here is the order of
        /// `strait render` output (alphabetical, like `kubectl get`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kind { $($kind,)* }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$kind,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Kind::$kind => stringify!($kind),)* }
            }

            /// The `apiVersion` strait reads and writes for this kind.
            pub fn api_version(self) -> &'static str {
                match self { $(Kind::$kind => $api,)* }
            }

            /// Cluster-scoped kinds (Namespace, Node, IngressClass) have no namespace.
            pub fn is_namespaced(self) -> bool {
                match self { $(Kind::$kind => $ns,)* }
            }

            pub fn from_name(kind: &str) -> Option<Kind> {
                match kind { $(stringify!($kind) => Some(Kind::$kind),)* _ => None }
            }
        }

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
            pub(crate) fn from_doc(kind: Kind, doc: &crate::manifest::Doc<'_>) -> Result<Object, (String, String)> {
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
        crate::validate::pod(&mut pod)?;
        Ok(CompactPod::new(pod))
    }
}

kinds! {
    Deployment(Deployment) => "apps/v1", namespaced: true;
    EndpointSlice(EndpointSlice) => "discovery.k8s.io/v1", namespaced: true;
    Endpoints(Endpoints) => "v1", namespaced: true;
    Ingress(Ingress) => "networking.k8s.io/v1", namespaced: true;
    IngressClass(IngressClass) => "networking.k8s.io/v1", namespaced: false;
    Namespace(Namespace) => "v1", namespaced: false;
    NetworkPolicy(NetworkPolicy) => "networking.k8s.io/v1", namespaced: true;
    Node(Node) => "v1", namespaced: false;
    Pod(CompactPod) => "v1", namespaced: true;
    Service(Service) => "v1", namespaced: true;
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies an object: kind, namespace (empty for cluster-scoped kinds), name.
/// Orders the way `strait render` prints: kind, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of(object: &Object) -> Self {
        let meta = object.metadata();
        ObjectKey::new(
            object.kind(),
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

/// `Service default/web`, `Node node-1` — the way errors and logs name objects.
/// Names that admission would refuse are printed quoted and escaped: the
/// error that refuses them must not carry a terminal escape or a newline.
impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.kind)?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", Printable(&self.namespace))?;
        }
        write!(f, "{}", Printable(&self.name))
    }
}

/// A name as it is when it is one (letters, digits, `-`, `.`, `_`),
/// otherwise quoted with Rust's escapes.
struct Printable<'a>(&'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn names_that_are_not_names_are_printed_escaped() {
        let plain = ObjectKey::new(Kind::Service, "default", "web-1");
        assert_eq!(plain.to_string(), "Service default/web-1");
        let hostile = ObjectKey::new(Kind::Service, "a\x1b[2Jb", "x\ny");
        let shown = hostile.to_string();
        assert!(!shown.contains('\x1b') && !shown.contains('\n'), "{shown}");
        assert_eq!(shown, "Service \"a\\u{1b}[2Jb\"/\"x\\ny\"");
    }
}
