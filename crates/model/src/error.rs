use std::path::PathBuf;

/// Everything that can go wrong while reading manifests or running the
/// standalone controllers. Each message names the file, document, object and
/// field involved so that a user can find and fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{file}: not valid {format}: {message}")]
    Syntax {
        file: String,
        format: &'static str,
        message: String,
    },

    /// A document that parsed but is not a valid object.
    #[error("{file}: document {index}{object}: {field}: {message}")]
    Document {
        file: String,
        /// 1-based position of the document in its file.
        index: usize,
        /// ` (Kind namespace/name)` when known, else empty.
        object: String,
        /// Field path such as `spec.ports[0].port`.
        field: String,
        message: String,
    },

    /// An object that the controllers could not accept (an address already
    /// taken, a port out of range, …).
    #[error("{object}{origin}: {field}: {message}")]
    Object {
        /// `Kind namespace/name`.
        object: String,
        /// ` (file, document N)` when known, else empty.
        origin: String,
        field: String,
        message: String,
    },

    #[error("{object} is defined twice: {first} and {second}")]
    Duplicate {
        object: String,
        first: String,
        second: String,
    },

    /// Input past one of strait's limits: more bytes than strait reads at
    /// once, or a YAML file that expands far beyond its size (an alias bomb).
    #[error("{file}: {message}")]
    Limit { file: String, message: String },

    #[error("invalid setting {setting}: {message}")]
    Config { setting: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
