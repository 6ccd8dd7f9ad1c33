//! The kinds strait understands and the key that names one object: below
//! everything else in the model (pods, admission, objects all name kinds).

use std::fmt;

/// The kinds, each with the type a snapshot keeps it as, its `apiVersion`
/// and its scope: one table, read by [`Kind`] here and by
/// [`crate::Object`], so that the two cannot disagree.
macro_rules! kind_table {
    ($then:ident) => {
        $then! {
            ClusterNetworkPolicy(ClusterNetworkPolicy) => "policy.networking.k8s.io/v1alpha2", namespaced: false;
            Deployment(Deployment) => "apps/v1", namespaced: true;
            EndpointSlice(EndpointSlice) => "discovery.k8s.io/v1", namespaced: true;
            Endpoints(Endpoints) => "v1", namespaced: true;
            Gateway(Gateway) => "gateway.networking.k8s.io/v1", namespaced: true;
            GatewayClass(GatewayClass) => "gateway.networking.k8s.io/v1", namespaced: false;
            HTTPRoute(HTTPRoute) => "gateway.networking.k8s.io/v1", namespaced: true;
            Ingress(Ingress) => "networking.k8s.io/v1", namespaced: true;
            IngressClass(IngressClass) => "networking.k8s.io/v1", namespaced: false;
            Namespace(Namespace) => "v1", namespaced: false;
            NetworkPolicy(NetworkPolicy) => "networking.k8s.io/v1", namespaced: true;
            Node(Node) => "v1", namespaced: false;
            Pod(CompactPod) => "v1", namespaced: true;
            ReferenceGrant(ReferenceGrant) => "gateway.networking.k8s.io/v1beta1", namespaced: true;
            Secret(Secret) => "v1", namespaced: true;
            Service(Service) => "v1", namespaced: true;
        }
    };
}
pub(crate) use kind_table;

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
    };
}

kind_table!(kinds);

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
