//! Discovery documents, made from [`crate::RESOURCES`]: legacy (`/api`,
//! `/apis`, `/api/v1`, `/apis/G/V`) and aggregated (`apidiscovery.k8s.io`
//! v2 and v2beta1, what a current kubectl asks for first).

use serde_json::Value;

/// Which aggregated discovery version a client accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregated {
    V2,
    V2Beta1,
}

/// `GET /api` (legacy): `APIVersions`.
pub fn api_versions() -> Value {
    Value::Null
}

/// `GET /apis` (legacy): `APIGroupList`.
pub fn api_group_list() -> Value {
    Value::Null
}

/// `GET /api/v1`, `GET /apis/GROUP/VERSION`: `APIResourceList`, or `None`
/// for a group version not served.
pub fn resource_list(_group: &str, _version: &str) -> Option<Value> {
    None
}

/// `GET /api` (`core: true`) or `/apis` with aggregated discovery:
/// `APIGroupDiscoveryList`.
pub fn aggregated(_core: bool, _version: Aggregated) -> Value {
    Value::Null
}
