//! Directories watched with inotify: what changed in them, as paths, told
//! as soon as the kernel has it. Directories, not files, are watched: an
//! editor that writes a temporary file and renames it over the original
//! replaces the inode a file watch would hold, and new files only show up
//! in their directory.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::{Error, Result};

/// What a directory watch listens for: every way a name in it can come to
/// point at other content, and the directory itself going away.
fn dir_mask() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

/// A set of watched directories.
pub struct DirWatch {
    inotify: Inotify,
    dirs: HashMap<WatchDescriptor, PathBuf>,
}

/// What one wait saw: the paths named by the events (a directory's own
/// path when it was removed or moved), in the order they came, repeated
/// names removed; and whether the kernel dropped events (queue overflow),
/// after which the caller must look at everything again.
#[derive(Debug, Default)]
pub struct Events {
    pub paths: Vec<PathBuf>,
    pub overflowed: bool,
}

impl Events {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.overflowed
    }
}

impl DirWatch {
    pub fn new() -> Result<DirWatch> {
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|errno| {
                Error::Watch {
                    path: PathBuf::from("(inotify)"),
                    errno,
                }
            })?;
        Ok(DirWatch {
            inotify,
            dirs: HashMap::new(),
        })
    }

    /// Watch `dir` (again: a directory replaced by another of the same name
    /// gets a new watch; the same one keeps its watch).
    pub fn watch(&mut self, dir: &Path) -> Result<()> {
        let wd = self
            .inotify
            .add_watch(dir, dir_mask())
            .map_err(|errno| Error::Watch {
                path: dir.to_owned(),
                errno,
            })?;
        self.dirs.insert(wd, dir.to_owned());
        Ok(())
    }

    /// How many directories are watched.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Wait until something changed (at most `timeout`; `None`: forever),
    /// then take every event already queued, so that a burst (an editor's
    /// save, `cp -r` of a tree) is one wake-up. Empty when the time ran out.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Events> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut events = Events::default();
        loop {
            let left = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let ms = d.saturating_duration_since(Instant::now()).as_millis();
                    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32)
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, left) {
                Ok(0) => return Ok(events),
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    return Err(Error::Watch {
                        path: PathBuf::from("(inotify)"),
                        errno,
                    })
                }
            }
            self.drain(&mut events)?;
            if !events.is_empty() {
                return Ok(events);
            }
            // Only events of no interest (a watch removed): wait on.
        }
    }

    /// Read every queued event without blocking.
    fn drain(&mut self, out: &mut Events) -> Result<()> {
        loop {
            let batch = match self.inotify.read_events() {
                Ok(b) => b,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    return Err(Error::Watch {
                        path: PathBuf::from("(inotify)"),
                        errno,
                    })
                }
            };
            for event in batch {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    out.overflowed = true;
                    continue;
                }
                if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The directory is gone (or was replaced): its watch
                    // went with it. A rescan watches what is there now.
                    if let Some(dir) = self.dirs.remove(&event.wd) {
                        push_unique(&mut out.paths, dir);
                    }
                    continue;
                }
                let Some(dir) = self.dirs.get(&event.wd) else {
                    continue;
                };
                let path = match &event.name {
                    Some(name) => dir.join(trim_nul(name)),
                    None => dir.clone(),
                };
                push_unique(&mut out.paths, path);
            }
        }
    }
}

/// inotify pads names with NULs; nix hands them over as read.
fn trim_nul(name: &OsString) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    PathBuf::from(std::ffi::OsStr::from_bytes(&bytes[..end]))
}

fn push_unique(paths: &mut Vec<PathBuf>, path: PathBuf) {
    if !paths.contains(&path) {
        paths.push(path);
    }
}
