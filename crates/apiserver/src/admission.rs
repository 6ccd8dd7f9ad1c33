//! Admission of written objects (placeholder until the store lands).

use serde_json::Value;

use crate::resources::Resource;

/// Fields of `object` that its kind does not have (`spec.foo`).
pub fn unknown_fields(_resource: &Resource, _object: &Value) -> Vec<String> {
    Vec::new()
}

/// strait's admission (placeholder: admits everything until the store lands).
#[derive(Default)]
pub struct ModelAdmission;

impl crate::store::Admission for ModelAdmission {
    fn admit(
        &self,
        _: &Resource,
        _: &mut Value,
        _: Option<&Value>,
    ) -> Result<(), crate::error::ApiError> {
        Ok(())
    }
}
