//! The lab's own certificate authority, the server certificate it signs,
//! and kubeconfig files that trust it.

use std::sync::Arc;

use crate::error::ApiError;

/// PEM texts of the lab's CA and of the API server's certificate.
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca_cert_pem: String,
    /// Kept so that a restarted server can sign again with the same CA.
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl Pki {
    /// A new CA and a server certificate for `hosts` (IP addresses and DNS
    /// names: `127.0.0.1`, `localhost`, the node addresses).
    pub fn create(_hosts: &[String]) -> Result<Pki, ApiError> {
        Err(ApiError::internal("tls: not yet"))
    }
}

/// The rustls server configuration (HTTP/2 and HTTP/1.1 by ALPN).
pub fn server_config(_pki: &Pki) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, ApiError> {
    Err(ApiError::internal("tls: not yet"))
}

/// A kubeconfig (YAML) for `server` (`https://127.0.0.1:6443`) trusting
/// `ca_cert_pem`, authenticating with `token` as `user`.
pub fn kubeconfig(
    _cluster: &str,
    _server: &str,
    _ca_cert_pem: &str,
    _user: &str,
    _token: &str,
) -> String {
    String::new()
}

/// A fresh random bearer token (32 bytes, URL-safe base64).
pub fn new_token() -> String {
    String::new()
}
