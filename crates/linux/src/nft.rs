//! nftables through the `nft` program: one script = one atomic transaction.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// Apply `script` with `nft -f -` in the calling thread's network namespace.
/// The kernel applies all of it or none of it.
pub fn nft_apply(script: &str) -> Result<()> {
    nft_spawn(script)?.wait()
}

/// A running `nft -f -`: start it, do other work, then [`NftRun::wait`].
/// Deleting set elements makes the kernel wait for an RCU grace period
/// (10-20 ms here); overlapping it with other work hides that wait.
pub struct NftRun {
    child: std::process::Child,
}

impl NftRun {
    pub fn wait(self) -> Result<()> {
        let out = self
            .child
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
}

/// Start `nft -f -` with `script` in the calling thread's network namespace.
pub fn nft_spawn(script: &str) -> Result<NftRun> {
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
    Ok(NftRun { child })
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
