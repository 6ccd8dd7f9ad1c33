/// What can go wrong in cluster mode's source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no usable Kubernetes client configuration: {0}")]
    Config(String),
    #[error("cannot make a Kubernetes client: {0}")]
    Client(String),
    #[error("cannot start the watch runtime: {0}")]
    Runtime(String),
    /// A write the API server refused (or could not be sent), with what it was.
    #[error("cannot {what}: {message}")]
    Write { what: String, message: String },
    /// The watch tasks ended (the runtime stopped).
    #[error("the watches stopped")]
    Stopped,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
