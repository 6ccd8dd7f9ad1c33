/// What went wrong while programming Services.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying the Service rules failed: {0}")]
    Apply(#[from] strait_linux::Error),

    #[error("the rules are not valid nftables: {0}")]
    Nft(#[from] strait_nft::Error),

    #[error("invalid setting {setting}: {message}")]
    Config { setting: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
