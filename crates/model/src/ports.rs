//! Named ports: a Service's `targetPort: http` means whatever port the
//! container of each selected pod calls `http`, so it can differ by pod.

use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::pod::CompactPod;

/// The port on `pod` that traffic for `port` goes to, or `None` when the pod
/// has no port by that name (the pod is then not an endpoint for this port).
pub fn resolve_target_port(pod: &CompactPod, port: &ServicePort) -> Option<i32> {
    match &port.target_port {
        None | Some(IntOrString::Int(0)) => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            pod.container_port_by_name(name, port.protocol.as_deref().unwrap_or("TCP"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec};

    fn pod(ports: &[(&str, i32, &str)]) -> CompactPod {
        CompactPod::new(Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(
                        ports
                            .iter()
                            .map(|(n, p, proto)| ContainerPort {
                                name: Some(n.to_string()),
                                container_port: *p,
                                protocol: Some(proto.to_string()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn svc_port(target: IntOrString, protocol: &str) -> ServicePort {
        ServicePort {
            port: 80,
            target_port: Some(target),
            protocol: Some(protocol.into()),
            ..Default::default()
        }
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_protocol() {
        let a = pod(&[("http", 8080, "TCP"), ("dns", 53, "UDP")]);
        let b = pod(&[("http", 9090, "TCP")]);
        let http = svc_port(IntOrString::String("http".into()), "TCP");
        assert_eq!(resolve_target_port(&a, &http), Some(8080));
        assert_eq!(resolve_target_port(&b, &http), Some(9090));
        let dns_tcp = svc_port(IntOrString::String("dns".into()), "TCP");
        assert_eq!(resolve_target_port(&a, &dns_tcp), None);
        assert_eq!(
            resolve_target_port(&a, &svc_port(IntOrString::Int(7), "TCP")),
            Some(7)
        );
    }
}
