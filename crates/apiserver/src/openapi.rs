//! OpenAPI documents, which kubectl downloads before `create -f` and
//! `apply -f` (validation, and whether the server validates fields itself).

use serde_json::Value;

/// `GET /openapi/v3`: the index of group-version documents.
pub fn v3_index() -> Value {
    Value::Null
}

/// `GET /openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1` (`path` without the
/// leading `/openapi/v3/`), or `None` for one not served.
pub fn v3_document(_path: &str) -> Option<Value> {
    None
}

/// `GET /openapi/v2` as JSON.
pub fn v2() -> Value {
    Value::Null
}
