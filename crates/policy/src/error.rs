/// What can go wrong planning, tracing or applying policy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A policy that cannot be honoured as written; the traffic it would
    /// govern stays denied (fail closed).
    #[error("NetworkPolicy {namespace}/{name}: {field}: {why}")]
    Policy {
        namespace: String,
        name: String,
        field: String,
        why: String,
    },
    /// The same for a ClusterNetworkPolicy: what it cannot do is
    /// closed as the API asks (see [`crate::semantics`]).
    #[error("ClusterNetworkPolicy {name}: {field}: {why}")]
    ClusterPolicy {
        name: String,
        field: String,
        why: String,
    },
    #[error(transparent)]
    Nft(#[from] strait_nft::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;
