//! What the data-plane tests share.

use std::net::SocketAddr;
use std::sync::Arc;

use strait_model::k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use strait_model::Object;

/// An EndpointSlice `default/name` of `service` with the one ready
/// endpoint `address`. Made here, not parsed: admission (rightly) refuses
/// loopback endpoints, and the tests' backends listen on loopback.
pub fn loopback_slice(
    name: String,
    service: &str,
    port_name: Option<&str>,
    address: SocketAddr,
) -> Object {
    Object::EndpointSlice(Arc::new(EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some("default".into()),
            labels: Some([("kubernetes.io/service-name".to_owned(), service.to_owned())].into()),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort {
            name: port_name.map(str::to_owned),
            port: Some(address.port().into()),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
        endpoints: vec![Endpoint {
            addresses: vec![address.ip().to_string()],
            ..Endpoint::default()
        }],
    }))
}
