//! Pods as a snapshot keeps them: the metadata typed, the spec and status as
//! compact JSON, and the few fields the controllers read decoded once.
//!
//! Why: clusters have far more Pods than anything else, and a typed `Pod`
//! with one container is about 6 KB on the heap (`PodSpec` and `Container`
//! reserve room for every field Kubernetes has). `strait render` of a
//! hundred thousand pods peaked above 800 MB with them typed, under 400 MB
//! with them compact.

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde::ser::SerializeStruct;
use serde::Serialize;

use crate::json::JsonText;
use crate::kind::{Kind, ObjectKey};
use crate::Error;

/// A Pod in a [`ClusterState`](crate::ClusterState). Build one from a typed
/// [`Pod`] with [`CompactPod::new`]; get the typed Pod back with
/// [`CompactPod::to_pod`]. Serializes exactly as the typed Pod does.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactPod {
    pub metadata: ObjectMeta,
    spec: Option<JsonText>,
    status: Option<JsonText>,
    facts: Facts,
}

/// What controllers read of `spec` and `status`, decoded once.
#[derive(Clone, Debug, Default, PartialEq)]
struct Facts {
    node_name: Option<Box<str>>,
    hostname: Option<Box<str>>,
    subdomain: Option<Box<str>>,
    /// Named ports of the containers, then of the sidecars, in spec order.
    named_ports: Box<[NamedPort]>,
    phase: Option<Box<str>>,
    pod_ip: Option<Box<str>>,
    pod_ips: Box<[Box<str>]>,
    /// `status.conditions` has `Ready` = `True`.
    ready: bool,
    /// `spec.hostNetwork`: the pod uses its node's network namespace.
    host_network: bool,
}

#[derive(Clone, Debug, PartialEq)]
struct NamedPort {
    name: Box<str>,
    protocol: Box<str>,
    port: i32,
}

fn boxed(s: &Option<String>) -> Option<Box<str>> {
    s.as_deref().map(Box::from)
}

impl CompactPod {
    pub fn new(pod: Pod) -> CompactPod {
        let mut facts = Facts::default();
        if let Some(spec) = &pod.spec {
            facts.node_name = boxed(&spec.node_name);
            facts.hostname = boxed(&spec.hostname);
            facts.subdomain = boxed(&spec.subdomain);
            facts.host_network = spec.host_network == Some(true);
            // Sidecars (init containers with `restartPolicy: Always`) count:
            // they keep running beside the main containers.
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            facts.named_ports = spec
                .containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|p| {
                    Some(NamedPort {
                        name: p.name.as_deref()?.into(),
                        protocol: p.protocol.as_deref().unwrap_or("TCP").into(),
                        port: p.container_port,
                    })
                })
                .collect();
        }
        if let Some(status) = &pod.status {
            facts.phase = boxed(&status.phase);
            facts.pod_ip = boxed(&status.pod_ip);
            facts.pod_ips = status
                .pod_ips
                .iter()
                .flatten()
                .map(|p| p.ip.as_str().into())
                .collect();
            facts.ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
        }
        // Writing JSON of plain data to memory cannot fail; were it ever to,
        // the part is kept as if absent rather than stopping the program.
        let spec = pod.spec.as_ref().and_then(|s| JsonText::of(s).ok());
        let status = pod.status.as_ref().and_then(|s| JsonText::of(s).ok());
        CompactPod {
            metadata: pod.metadata,
            spec,
            status,
            facts,
        }
    }

    /// The typed Pod, for code that needs every field (the lab starting it).
    pub fn to_pod(&self) -> Result<Pod, Error> {
        Ok(Pod {
            metadata: self.metadata.clone(),
            spec: self.spec().map_err(|m| self.decode_error("spec", m))?,
            status: self.status().map_err(|m| self.decode_error("status", m))?,
        })
    }

    fn spec(&self) -> Result<Option<PodSpec>, serde_json::Error> {
        self.spec.as_ref().map(JsonText::decode).transpose()
    }

    fn status(&self) -> Result<Option<PodStatus>, serde_json::Error> {
        self.status.as_ref().map(JsonText::decode).transpose()
    }

    /// The typed `status` alone (what the runtime reported).
    pub fn to_status(&self) -> Result<Option<PodStatus>, Error> {
        self.status().map_err(|m| self.decode_error("status", m))
    }

    fn decode_error(&self, field: &str, e: serde_json::Error) -> Error {
        let key = ObjectKey::new(
            Kind::Pod,
            self.metadata.namespace.clone().unwrap_or_default(),
            self.metadata.name.clone().unwrap_or_default(),
        );
        Error::Object {
            object: key.to_string(),
            origin: String::new(),
            field: field.to_owned(),
            message: format!("stored form does not read back: {e}"),
        }
    }

    pub fn has_status(&self) -> bool {
        self.status.is_some()
    }

    /// `spec.nodeName`.
    pub fn node_name(&self) -> Option<&str> {
        self.facts.node_name.as_deref()
    }

    /// `spec.hostname`.
    pub fn hostname(&self) -> Option<&str> {
        self.facts.hostname.as_deref()
    }

    /// `spec.subdomain`.
    pub fn subdomain(&self) -> Option<&str> {
        self.facts.subdomain.as_deref()
    }

    /// `status.phase`.
    pub fn phase(&self) -> Option<&str> {
        self.facts.phase.as_deref()
    }

    /// `status.podIP`.
    pub fn pod_ip(&self) -> Option<&str> {
        self.facts.pod_ip.as_deref()
    }

    /// `status.podIPs`, in order.
    pub fn pod_ips(&self) -> impl Iterator<Item = &str> {
        self.facts.pod_ips.iter().map(|ip| &**ip)
    }

    /// `spec.hostNetwork`: the pod shares its node's addresses, so no
    /// NetworkPolicy selects it (the common reading of the API).
    pub fn host_network(&self) -> bool {
        self.facts.host_network
    }

    /// The pod's `Ready` condition is `True`.
    pub fn is_ready(&self) -> bool {
        self.facts.ready
    }

    /// The container port named `name` with `protocol`. Sidecars (init
    /// containers with `restartPolicy: Always`) count, as they keep running.
    pub fn container_port_by_name(&self, name: &str, protocol: &str) -> Option<i32> {
        self.facts
            .named_ports
            .iter()
            .find(|p| &*p.name == name && &*p.protocol == protocol)
            .map(|p| p.port)
    }
}

impl From<Pod> for CompactPod {
    fn from(pod: Pod) -> Self {
        CompactPod::new(pod)
    }
}

/// It is a Pod: generic code over Kubernetes resources (the stores of a
/// snapshot) takes it as one.
impl Resource for CompactPod {
    const API_VERSION: &'static str = <Pod as Resource>::API_VERSION;
    const GROUP: &'static str = <Pod as Resource>::GROUP;
    const KIND: &'static str = <Pod as Resource>::KIND;
    const VERSION: &'static str = <Pod as Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Pod as Resource>::URL_PATH_SEGMENT;
    type Scope = <Pod as Resource>::Scope;
}

impl Metadata for CompactPod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The fields and their order are those of the typed Pod, so that output is
/// the same byte for byte.
impl Serialize for CompactPod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fields = 3 + usize::from(self.spec.is_some()) + usize::from(self.status.is_some());
        let mut state = s.serialize_struct(<Self as Resource>::KIND, fields)?;
        state.serialize_field("apiVersion", <Self as Resource>::API_VERSION)?;
        state.serialize_field("kind", <Self as Resource>::KIND)?;
        state.serialize_field("metadata", &self.metadata)?;
        if let Some(spec) = &self.spec {
            state.serialize_field("spec", spec)?;
        }
        if let Some(status) = &self.status {
            state.serialize_field("status", status)?;
        }
        state.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodCondition, PodIP};

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![
                        ContainerPort {
                            container_port: 9000,
                            ..Default::default()
                        },
                        ContainerPort {
                            name: Some("http".into()),
                            container_port: 8080,
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }],
                init_containers: Some(vec![Container {
                    name: "sidecar".into(),
                    restart_policy: Some("Always".into()),
                    ports: Some(vec![ContainerPort {
                        name: Some("metrics".into()),
                        container_port: 9090,
                        protocol: Some("UDP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.0.0.1".into()),
                pod_ips: Some(vec![PodIP {
                    ip: "10.0.0.1".into(),
                }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn reads_back_and_prints_as_the_typed_pod() {
        let typed = pod();
        let compact = CompactPod::new(typed.clone());
        assert_eq!(compact.to_pod().unwrap(), typed);
        assert_eq!(
            serde_json::to_string_pretty(&compact).unwrap(),
            serde_json::to_string_pretty(&typed).unwrap()
        );
        assert_eq!(
            serde_saphyr::to_string(&compact).unwrap(),
            serde_saphyr::to_string(&typed).unwrap()
        );
        let bare = Pod::default();
        assert_eq!(
            serde_json::to_string(&CompactPod::new(bare.clone())).unwrap(),
            serde_json::to_string(&bare).unwrap()
        );
    }

    #[test]
    fn facts_match_the_fields() {
        let compact = CompactPod::new(pod());
        assert_eq!(compact.node_name(), Some("node-1"));
        assert_eq!(compact.phase(), Some("Running"));
        assert_eq!(compact.pod_ips().collect::<Vec<_>>(), ["10.0.0.1"]);
        assert!(compact.is_ready());
        assert_eq!(compact.container_port_by_name("http", "TCP"), Some(8080));
        assert_eq!(compact.container_port_by_name("http", "UDP"), None);
        assert_eq!(compact.container_port_by_name("metrics", "UDP"), Some(9090));
        assert!(!CompactPod::new(Pod::default()).is_ready());
    }
}
