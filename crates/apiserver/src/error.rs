//! Every failure the server answers is a `Status` object, shaped as
//! kube-apiserver shapes it, so that kubectl and client libraries print
//! and handle it as they would a real cluster's (`Error from server
//! (NotFound): pods "web" not found`).

use serde_json::{json, Value};

use crate::resources::Resource;

/// One field-level reason in an `Invalid` (422) or strict-decoding error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`,
    /// `FieldValueDuplicate`, `FieldValueForbidden`, …
    pub reason: String,
    pub message: String,
    /// `spec.ports[0].port`
    pub field: String,
}

/// A failed request: HTTP code, `Status.reason`, message and details.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `BadRequest`,
    /// `Forbidden`, `Unauthorized`, `Expired` (410), `MethodNotAllowed`,
    /// `UnsupportedMediaType`, `NotAcceptable`, `InternalError`, …
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Box<Details>>,
}

/// `Status.details`: which object, and the field causes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details {
    pub name: String,
    pub group: String,
    /// The plural (`pods`), as kube-apiserver fills `details.kind`.
    pub kind: String,
    pub causes: Vec<Cause>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn about(mut self, resource: &Resource, name: &str) -> Self {
        self.details = Some(Box::new(Details {
            name: name.to_owned(),
            group: resource.group.to_owned(),
            kind: resource.plural.to_owned(),
            causes: Vec::new(),
        }));
        self
    }

    /// `pods "web" not found` (404).
    pub fn not_found(resource: &Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(resource)),
        )
        .about(resource, name)
    }

    /// `pods "web" already exists` (409).
    pub fn already_exists(resource: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(resource)),
        )
        .about(resource, name)
    }

    /// A write against a stale `resourceVersion` (409), in kube-apiserver's words.
    pub fn conflict(resource: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                qualified(resource)
            ),
        )
        .about(resource, name)
    }

    /// `Service "web" is invalid: spec.ports[0].port: Invalid value: …` (422).
    pub fn invalid(resource: &Resource, name: &str, causes: Vec<Cause>) -> Self {
        let listed: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let message = match listed.as_slice() {
            [one] => format!("{} \"{name}\" is invalid: {one}", resource.kind),
            many => format!(
                "{} \"{name}\" is invalid: [{}]",
                resource.kind,
                many.join(", ")
            ),
        };
        let mut e = Self::new(422, "Invalid", message).about(resource, name);
        if let Some(d) = e.details.as_mut() {
            d.kind = resource.kind.to_owned();
            d.causes = causes;
        }
        e
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// `pods is forbidden: User "x" cannot list resource "pods" in API group "" in the namespace "y"`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// A watch or list from a resourceVersion older than the server keeps (410).
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    pub fn request_entity_too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// A path that names nothing the server serves (404, no details).
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// The `Status` object (`apiVersion: v1`, `kind: Status`) to send.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            let mut details = serde_json::Map::new();
            if !d.name.is_empty() {
                details.insert("name".into(), d.name.clone().into());
            }
            if !d.group.is_empty() {
                details.insert("group".into(), d.group.clone().into());
            }
            if !d.kind.is_empty() {
                details.insert("kind".into(), d.kind.clone().into());
            }
            if !d.causes.is_empty() {
                let causes: Vec<Value> = d
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                details.insert("causes".into(), causes.into());
            }
            status["details"] = Value::Object(details);
        }
        status
    }
}

/// `pods`, `deployments.apps`: how kube-apiserver names a resource in messages.
fn qualified(resource: &Resource) -> String {
    if resource.group.is_empty() {
        resource.plural.to_owned()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_reads_as_kube_apiserver_writes_it() {
        let pods = Resource::by_plural("", "v1", "pods").unwrap();
        let status = ApiError::not_found(pods, "web").status();
        assert_eq!(status["code"], 404);
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["message"], "pods \"web\" not found");
        assert_eq!(status["details"]["kind"], "pods");
        let deploy = Resource::by_plural("apps", "v1", "deployments").unwrap();
        let status = ApiError::conflict(deploy, "web").status();
        assert!(status["message"]
            .as_str()
            .unwrap()
            .contains("deployments.apps \"web\""));
    }

    #[test]
    fn invalid_lists_its_causes() {
        let svc = Resource::by_plural("", "v1", "services").unwrap();
        let cause = Cause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: 0: must be between 1 and 65535, inclusive".into(),
            field: "spec.ports[0].port".into(),
        };
        let status = ApiError::invalid(svc, "web", vec![cause]).status();
        assert_eq!(status["code"], 422);
        assert_eq!(
            status["message"],
            "Service \"web\" is invalid: spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        );
        assert_eq!(
            status["details"]["causes"][0]["field"],
            "spec.ports[0].port"
        );
    }
}
