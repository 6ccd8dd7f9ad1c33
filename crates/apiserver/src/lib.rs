//! The lab's Kubernetes API server.
//!
//! kubectl and strait's own agents talk to it exactly as they talk to a
//! kube-apiserver: discovery, OpenAPI, `Table` responses, list/watch with
//! resource versions, create/update/patch/delete, the `status` and `scale`
//! subresources, `Status` errors and RBAC. Objects are kept as JSON
//! (`serde_json::Value`): the server stores and serves any kind of its
//! resource table, and runs strait's admission (the model's defaults and
//! validation) on the kinds strait understands.
//!
//! Modules, each with one job:
//! - [`resources`]: the table of what is served (group, version, plural,
//!   kind, scope, short names, subresources).
//! - [`error`]: [`ApiError`], the `Status` object every failure is.
//! - [`discovery`], [`openapi`]: the documents clients read before acting.
//! - [`table`]: `kubectl get`'s columns (`Table` responses).
//! - [`patch`]: JSON patch, merge patch and strategic merge patch.
//! - [`store`]: objects, resourceVersions, history and watches.
//! - [`admission`]: strait's admission (the model's defaults and checks)
//!   behind the store, and strict decoding's unknown fields.

pub mod admission;
pub mod auth;
pub mod discovery;
pub mod error;
pub mod openapi;
pub mod patch;
pub mod resources;
pub mod server;
pub mod store;
pub mod table;
pub mod tls;

pub use error::{ApiError, Cause};
pub use resources::{Resource, Subresource, RESOURCES};
