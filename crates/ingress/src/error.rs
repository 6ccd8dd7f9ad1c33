/// What went wrong while starting or feeding the Ingress data plane.
/// Problems with objects are not errors: they are [`crate::Problem`]s,
/// reported while the rest is served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },

    #[error("cannot start a worker thread: {0}")]
    Worker(std::io::Error),

    #[error("TLS setup failed: {0}")]
    Tls(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
