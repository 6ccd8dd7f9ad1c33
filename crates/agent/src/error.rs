use std::path::PathBuf;

/// What can go wrong in the agent and its sources.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] strait_model::Error),
    #[error(transparent)]
    Proxy(#[from] strait_proxy::Error),
    #[error(transparent)]
    Policy(#[from] strait_policy::Error),
    #[error("cannot watch {}: {errno}", path.display())]
    Watch {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Manifests that could not be read or admitted (the reader's words).
    #[error("{message}")]
    Input { message: String },
    #[error("part {part}: {message}")]
    Part { part: &'static str, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
