/// What failed in the kernel, with the object it concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("network namespace {path}: {source}")]
    Netns {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("netlink: {what}: {message}")]
    Netlink {
        what: String,
        message: String,
        /// The kernel's errno, when it gave one.
        errno: Option<i32>,
    },

    #[error("sysctl {key}: {source}")]
    Sysctl {
        key: String,
        #[source]
        source: std::io::Error,
    },

    #[error("nft: {0}")]
    Nft(String),
}

impl Error {
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink { errno, .. } => *errno,
            Error::Netns { source, .. } | Error::Sysctl { source, .. } => source.raw_os_error(),
            Error::Nft(_) => None,
        }
    }

    /// The object does not exist (ENODEV, ENOENT, ESRCH).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc_errno::ENODEV | libc_errno::ENOENT | libc_errno::ESRCH)
        )
    }

    /// The object exists already (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc_errno::EEXIST)
    }
}

pub(crate) mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const ESRCH: i32 = 3;
    pub const EEXIST: i32 = 17;
    pub const ENODEV: i32 = 19;
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
