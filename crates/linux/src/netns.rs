//! Network namespaces: open, enter (per thread), create and delete named ones
//! the way `ip netns` does (a bind mount under /run/netns).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::{Error, Result};

const NETNS_DIR: &str = "/run/netns";

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

fn netns_error(path: &Path, source: impl Into<std::io::Error>) -> Error {
    Error::Netns {
        path: path.display().to_string(),
        source: source.into(),
    }
}

impl NetNs {
    /// Open the namespace at `path` (`/run/netns/x`, `/proc/PID/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| netns_error(path, e))?;
        Ok(NetNs {
            file,
            path: path.to_owned(),
        })
    }

    /// Whether what was opened is a network namespace (not a plain file, a
    /// directory or another kind of namespace): asks the kernel with
    /// `NS_GET_NSTYPE`, which only namespace files answer.
    // NS_GET_NSTYPE has no safe wrapper; see the SAFETY note below.
    #[allow(unsafe_code)]
    pub fn is_network(&self) -> bool {
        // _IO(NSIO = 0xb7, 0x3), from <linux/nsfs.h>.
        const NS_GET_NSTYPE: nix::libc::Ioctl = 0xb703;
        // SAFETY: the ioctl takes no argument and only reads the fd, which
        // this value owns and keeps open for the call.
        let kind = unsafe { nix::libc::ioctl(self.file.as_raw_fd(), NS_GET_NSTYPE) };
        kind == nix::libc::CLONE_NEWNET
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<NetNs> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Move the calling thread into this namespace until the guard drops.
    pub fn enter(&self) -> Result<NsGuard> {
        let previous = NetNs::current()?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| netns_error(&self.path, std::io::Error::from(e)))?;
        Ok(NsGuard { previous })
    }

    /// Create `/run/netns/NAME` (as `ip netns add NAME` does) and open it.
    /// The caller's own namespace is not changed.
    pub fn create(name: &str) -> Result<NetNs> {
        let path = Path::new(NETNS_DIR).join(name);
        std::fs::create_dir_all(NETNS_DIR).map_err(|e| netns_error(&path, e))?;
        // /run/netns must be a shared mount point for the bind mounts to be
        // seen by other mount namespaces; `ip netns` arranges it the same way.
        ensure_netns_dir_mount()?;
        if path.exists() {
            return Err(netns_error(&path, std::io::Error::from_raw_os_error(17)));
        }
        File::create(&path).map_err(|e| netns_error(&path, e))?;
        let target = path.clone();
        // unshare() changes the calling thread: do it on a thread of our own.
        let result = std::thread::spawn(move || -> std::io::Result<()> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        })
        .join()
        .map_err(|_| netns_error(&path, std::io::Error::other("namespace thread panicked")))?;
        if let Err(e) = result {
            let _ = std::fs::remove_file(&path);
            return Err(netns_error(&path, e));
        }
        NetNs::open(&path)
    }

    /// Remove `/run/netns/NAME` (as `ip netns delete NAME`); the namespace
    /// itself goes once nothing uses it. Missing is fine.
    pub fn delete(name: &str) -> Result<()> {
        let path = Path::new(NETNS_DIR).join(name);
        if !path.exists() {
            return Ok(());
        }
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        std::fs::remove_file(&path).map_err(|e| netns_error(&path, e))
    }

    /// Run `f` on a new thread inside this namespace and return its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| netns_error(&self.path, e))?;
        let path = self.path.clone();
        std::thread::spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| netns_error(&path, std::io::Error::from(e)))?;
            Ok(f())
        })
        .join()
        .map_err(|_| netns_error(&self.path, std::io::Error::other("thread panicked")))?
    }
}

fn ensure_netns_dir_mount() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounted = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(NETNS_DIR));
    if mounted {
        return Ok(());
    }
    let dir = Path::new(NETNS_DIR);
    use nix::mount::{mount, MsFlags};
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| netns_error(dir, std::io::Error::from(e)))?;
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| netns_error(dir, std::io::Error::from(e)))?;
    Ok(())
}

/// Returns the thread to the namespace it was in before [`NetNs::enter`].
pub struct NsGuard {
    previous: NetNs,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.previous.file.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Staying in the wrong namespace would send later work to the
            // wrong place: better to stop here.
            panic!(
                "cannot return to network namespace {}: {e}",
                self.previous.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_network_namespaces_are_network_namespaces() {
        assert!(NetNs::open("/proc/self/ns/net").unwrap().is_network());
        assert!(!NetNs::open("/proc/self/ns/mnt").unwrap().is_network());
        assert!(!NetNs::open("/proc/self/status").unwrap().is_network());
        assert!(!NetNs::open("/proc/self").unwrap().is_network());
    }
}
