//! strait's contact with the Linux kernel: network namespaces, links,
//! addresses, routes and sysctls over rtnetlink, and nftables transactions.
//!
//! Network namespaces belong to threads: code that enters one does so on a
//! thread it owns ([`NetNs::enter`] restores the old one when the guard
//! drops), and netlink sockets are bound to the namespace they were opened in.

mod error;
pub mod fake;
mod http;
mod netlink;
mod netns;
mod nft;
mod ops;
mod sysctl;

pub use error::{Error, Result};
pub use http::{HttpServer, Response};
pub use netlink::{
    mac_string, parse_mac, Link, NeighbourEntry, Netlink, RouteEntry, RouteInfo, Vxlan,
};
pub use netns::{NetNs, NsGuard};
pub use nft::{nft_apply, nft_list, nft_spawn, NftRun};
pub use ops::{Kernel, Namespaces, NetOps};
pub use sysctl::{read_sysctl, write_sysctl};

/// Whether this process may create namespaces and program the network
/// (tests that need it say they were skipped when it may not).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Peak resident memory of this process so far, in MiB (0 where /proc has none).
pub fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}
