//! nftables through the `nft` program: one script = one atomic transaction.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// Apply `script` with `nft -f -` in the calling thread's network namespace.
/// The kernel applies all of it or none of it.
pub fn nft_apply(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft(format!("cannot run nft (apt-get install nftables): {e}")))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .map_err(|e| Error::Nft(e.to_string()))?;
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Nft(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

/// `nft list …` output, e.g. `nft_list(&["table", "ip", "strait-cni"])`.
pub fn nft_list(what: &[&str]) -> Result<String> {
    let out = Command::new("nft")
        .arg("list")
        .args(what)
        .output()
        .map_err(|e| Error::Nft(format!("cannot run nft: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}
