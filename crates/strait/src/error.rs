/// Every way a `strait` command can fail; each message says what and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] strait_model::Error),

    #[error("cannot write the output: {0}")]
    Output(String),

    #[error(transparent)]
    Proxy(#[from] strait_proxy::Error),

    #[error(transparent)]
    Lab(#[from] strait_lab::Error),

    #[error(transparent)]
    Agent(#[from] strait_agent::Error),

    #[error("invalid {flag}: {message}")]
    Flag { flag: &'static str, message: String },
}
