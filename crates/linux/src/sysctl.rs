use crate::{Error, Result};

fn path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// Write a sysctl (`net.ipv4.ip_forward`) of the network namespace of the
/// calling thread: `/proc/sys/net` follows the opener's namespace.
pub fn write_sysctl(key: &str, value: &str) -> Result<()> {
    std::fs::write(path(key), value).map_err(|source| Error::Sysctl {
        key: key.to_owned(),
        source,
    })
}

pub fn read_sysctl(key: &str) -> Result<String> {
    std::fs::read_to_string(path(key))
        .map(|s| s.trim().to_owned())
        .map_err(|source| Error::Sysctl {
            key: key.to_owned(),
            source,
        })
}
