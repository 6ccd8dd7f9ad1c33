//! Which processes are the lab's, and ending them. A PID alone is not
//! enough: once its process exits the number can be handed to anyone, so a
//! process is named by PID and start time, and a lab's processes are found
//! by what they cannot leave behind, the lab's network namespaces.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A process as the lab started it: its PID and its start time (clock
/// ticks after boot, field 22 of `/proc/PID/stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    pub start: u64,
}

/// State letter and start time of a process, from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and ')': fields are
    // counted after its last ')'. What follows starts with field 3.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

impl ProcessId {
    /// The process with this PID now, if there is one.
    pub fn of(pid: i32) -> Option<ProcessId> {
        stat(pid).map(|(_, start)| ProcessId { pid, start })
    }

    /// Still the same process, and not a zombie (a zombie holds nothing).
    pub fn is_running(&self) -> bool {
        stat(self.pid)
            .is_some_and(|(state, start)| start == self.start && !matches!(state, 'Z' | 'X'))
    }

    /// SIGKILL the process group this process leads (each container is
    /// started as the leader of a group of its own), only if the leader is
    /// still the process that was recorded.
    pub fn kill_group(&self) -> bool {
        if !self.is_running() {
            return false;
        }
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .is_ok()
    }
}

/// The inode of a network namespace, as bind-mounted at `path`
/// (`/run/netns/NAME`): what `/proc/PID/ns/net` of its members points to.
pub fn netns_inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Whether any thread of `pid` is in one of the namespaces (a thread can
/// enter a namespace of its own, as the lab's proxy threads do).
fn in_netns(pid: i32, inodes: &BTreeSet<u64>) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_link(t.path().join("ns/net"))
            .ok()
            .and_then(|l| {
                l.to_str()?
                    .strip_prefix("net:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .is_some_and(|ino| inodes.contains(&ino))
    })
}

/// Every process (but this one) with a thread in one of the namespaces.
pub fn processes_in(inodes: &BTreeSet<u64>) -> Vec<i32> {
    if inodes.is_empty() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me && in_netns(*pid, inodes))
        .collect()
}

/// SIGKILL every process in the namespaces until none is left (they may
/// fork while we look) or `timeout` passes; returns those still there.
/// Each is signalled through a pidfd opened before checking it once more,
/// so a PID reused in between is never signalled.
// pidfd_open / pidfd_send_signal have no safe wrapper in nix 0.31: a
// signal through a pidfd cannot reach a process that reused the PID.
#[allow(unsafe_code)]
pub fn kill_in_netns(inodes: &BTreeSet<u64>, timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = processes_in(inodes);
        if found.is_empty() || Instant::now() >= deadline {
            return found;
        }
        for pid in found {
            // SAFETY: plain syscalls on integers; the fd is closed below.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
            if fd < 0 {
                continue;
            }
            if in_netns(pid, inodes) {
                // SAFETY: fd is the pidfd opened above; no siginfo is passed.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        fd,
                        libc::SIGKILL,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    );
                }
            }
            // SAFETY: fd is ours and closed once.
            unsafe { libc::close(fd) };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_named_by_pid_and_start_time() {
        let me = ProcessId::of(std::process::id() as i32).expect("our own stat");
        assert!(me.is_running());
        let reused = ProcessId {
            pid: me.pid,
            start: me.start + 1,
        };
        assert!(!reused.is_running(), "same PID, other start time: not ours");
        assert!(!reused.kill_group(), "and never signalled");
    }
}
