//! The HTTPS server: routing, content negotiation, authentication and
//! authorization in front of the store and the documents.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::Tokens;
use crate::error::ApiError;
use crate::store::{Admission, Store};
use crate::tls::Pki;

/// How to run a server.
pub struct ServerConfig {
    /// `127.0.0.1:0` picks a free port; [`Server::addr`] tells which.
    pub listen: SocketAddr,
    pub pki: Pki,
    /// The accepted bearer tokens. [`Server::start`] adds an admin token
    /// (`system:masters`) of its own, used by [`Server::admin_kubeconfig`].
    pub tokens: Tokens,
    pub admission: Box<dyn Admission>,
    /// How many events the watch history keeps.
    pub history: usize,
}

/// A running server; dropping it does not stop it — call [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    store: Arc<Store>,
    admin_token: String,
    ca_cert_pem: String,
}

impl Server {
    /// Bind and serve on the current tokio runtime.
    pub async fn start(_config: ServerConfig) -> Result<Server, ApiError> {
        Err(ApiError::internal("server: not yet"))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A kubeconfig (YAML) for the admin user, trusting the server's CA.
    pub fn admin_kubeconfig(&self) -> String {
        crate::tls::kubeconfig(
            "strait",
            &format!("https://{}", self.addr),
            &self.ca_cert_pem,
            "admin",
            &self.admin_token,
        )
    }

    /// Stop accepting; open connections are closed.
    pub fn shutdown(self) {}
}
