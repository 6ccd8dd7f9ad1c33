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
    Ingress(#[from] strait_ingress::Error),

    #[error(transparent)]
    Policy(#[from] strait_policy::Error),

    #[error("trace: {0}")]
    Trace(String),

    /// Objects admission refused in a command that applies the others
    /// (`strait lab apply`); each was printed with its error.
    #[error("{refused} object(s) refused (printed above); the others were applied")]
    Refused { refused: usize },
    #[error(transparent)]
    Agent(#[from] strait_agent::Error),

    #[error(transparent)]
    Kube(#[from] strait_kube::Error),

    /// `strait lab policy matrix`: probed and planned disagree.
    #[error("{differ} cell(s) of the probed matrix differ from the planned one (listed above)")]
    MatrixDiffers { differ: usize },

    #[error("invalid {flag}: {message}")]
    Flag { flag: &'static str, message: String },
}
