use serde::Serialize;

/// A CNI error: the spec's code, a message naming what failed, and details.
/// Printed on stdout as `{"cniVersion","code","msg","details"}`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct Error {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

/// The error codes of the CNI specification.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// What the reference plugins report for failures without a spec code.
    pub const INTERNAL: u32 = 999;
}

impl Error {
    pub fn new(code: u32, msg: impl Into<String>) -> Error {
        Error {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Error {
        self.details = details.into();
        self
    }

    pub fn config(field: &str, msg: impl std::fmt::Display) -> Error {
        Error::new(
            code::INVALID_CONFIG,
            format!("invalid network configuration: {field}: {msg}"),
        )
    }

    pub fn internal(msg: impl Into<String>) -> Error {
        Error::new(code::INTERNAL, msg)
    }

    /// The JSON the runtime reads from stdout.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_string(&Out {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        // Strings always serialise; were it ever not so, the runtime must
        // still read an error, not an empty stdout it would take for success.
        .unwrap_or_else(|_| {
            format!(
                r#"{{"cniVersion":"{}","code":{},"msg":"the error could not be encoded"}}"#,
                if crate::types::SUPPORTED_VERSIONS.contains(&cni_version) {
                    cni_version
                } else {
                    "1.1.0"
                },
                self.code
            )
        })
    }
}

impl From<strait_linux::Error> for Error {
    fn from(e: strait_linux::Error) -> Error {
        Error::internal(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
