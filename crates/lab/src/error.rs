/// What went wrong in a lab, and with what.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lab {lab}: {message}")]
    Lab { lab: String, message: String },

    /// A pod or node step that failed; the message names it.
    #[error("{0}")]
    Step(String),

    #[error(transparent)]
    Kernel(#[from] strait_linux::Error),

    #[error(transparent)]
    Nft(#[from] strait_nft::Error),

    #[error(transparent)]
    Model(#[from] strait_model::Error),

    #[error(transparent)]
    Agent(#[from] strait_agent::Error),

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
