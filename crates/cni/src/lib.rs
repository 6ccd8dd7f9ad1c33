//! strait as a CNI 1.1 plugin: what a container runtime calls to give a pod
//! its interface and address. Bridge mode with the reference `bridge`
//! plugin's configuration, host-local compatible IPAM, loopback, and port
//! mappings as nftables DNAT. See `plugin::run` for the protocol.

mod error;
mod ident;
mod ipam;
mod nft;
mod plugin;
mod runtime;
mod types;

pub use error::{code, Error, Result};
pub use plugin::{run, Env, Outcome};
pub use runtime::{invoke, Call, Reply};
pub use types::SUPPORTED_VERSIONS;
