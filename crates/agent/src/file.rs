//! Manifest files as a source: read once, then followed with inotify. A
//! change re-reads only the files it names (and files that appeared), runs
//! the controllers, and finds the change set from the objects of those
//! files and their namespaces (see `scope`), not from the whole cluster.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_model::controllers::{self, ClusterConfig};
use strait_model::{ClusterState, Object, ObjectKey, Origin};

use crate::scope::{scoped_changes, Scope};
use crate::source::{Changes, Source, Update};
use crate::watch::{DirWatch, Events};
use crate::{Error, Result};

/// Reads manifests into admitted objects: given the paths (`-` is standard
/// input) and whether directories are read with their subdirectories.
/// `strait` passes its own (which reports skipped files and ignored kinds);
/// [`FileSource::model_reader`] is the model's loader as it is.
pub type Reader =
    Box<dyn FnMut(&[String], bool) -> std::result::Result<Vec<(Object, Origin)>, String> + Send>;

/// The name the reader gives objects of standard input.
const STDIN: &str = "<stdin>";

/// How deep `-R` directories are watched; the reader itself refuses
/// symbolic link loops, this only bounds the walk.
const MAX_DEPTH: usize = 32;

/// What the source did, for logs, metrics and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct FileSourceStats {
    /// Reloads that gave a new snapshot.
    pub reloads: u64,
    /// Files read after the first read.
    pub files_read: u64,
    /// Reloads whose change set needed the full diff.
    pub full_diffs: u64,
    /// Reloads refused (bad input): the snapshot stayed.
    pub refused: u64,
    /// The last reload: reading, controllers, change set.
    pub last_read: Duration,
    pub last_reconcile: Duration,
    pub last_changes: Duration,
}

/// Manifests (files and directories, `-R`) as a source of cluster state.
pub struct FileSource {
    inputs: Vec<String>,
    recursive: bool,
    config: ClusterConfig,
    reader: Reader,
    watch: DirWatch,
    /// Every manifest file and the objects it gave.
    files: BTreeMap<PathBuf, Vec<ObjectKey>>,
    /// The size of each file when it was read: all of them together stay
    /// under the reader's limit, as on the first read.
    sizes: BTreeMap<PathBuf, u64>,
    /// The objects of the files, before the controllers.
    desired: ClusterState,
    current: Arc<ClusterState>,
    /// The first snapshot, until `next` hands it out.
    first: Option<Update>,
    stats: FileSourceStats,
}

impl FileSource {
    /// The model's loader, with the model's admission; no reporting.
    pub fn model_reader() -> Reader {
        Box::new(|paths: &[String], recursive: bool| {
            let sources: Vec<strait_model::Source> = paths
                .iter()
                .map(|p| strait_model::Source::from_arg(p))
                .collect();
            let options = strait_model::ReadOptions {
                recursive,
                ..Default::default()
            };
            strait_model::load_paths_with(&sources, &options)
                .map(|l| l.objects)
                .map_err(|e| e.to_string())
        })
    }

    /// Watch the inputs, then read them (watching first: a change made
    /// while they are read is not missed) and run the controllers. Bad
    /// input here is an error: there is no last good state to keep.
    pub fn open(
        inputs: &[String],
        recursive: bool,
        config: ClusterConfig,
        mut reader: Reader,
    ) -> Result<FileSource> {
        let mut watch = DirWatch::new()?;
        let listed = list_files(inputs, recursive, &mut watch)?;
        let started = Instant::now();
        let objects = reader(inputs, recursive).map_err(|message| Error::Input { message })?;
        let mut files: BTreeMap<PathBuf, Vec<ObjectKey>> =
            listed.into_iter().map(|f| (f, Vec::new())).collect();
        let mut desired = ClusterState::default();
        for (object, origin) in objects {
            let key = ObjectKey::of(&object);
            files
                .entry(PathBuf::from(&*origin.file))
                .or_default()
                .push(key);
            desired.add(object, Some(origin))?;
        }
        let read = started.elapsed();
        let started = Instant::now();
        let current = Arc::new(controllers::reconcile(desired.clone(), None, &config)?);
        tracing::info!(objects = current.len(), files = files.len(), watched_directories = watch.len(), read = ?read, controllers = ?started.elapsed(), "manifests read");
        Ok(FileSource {
            inputs: inputs.to_vec(),
            recursive,
            config,
            reader,
            watch,
            sizes: files
                .keys()
                .map(|f| (f.clone(), f.metadata().map_or(0, |m| m.len())))
                .collect(),
            files,
            desired,
            first: Some(Update {
                state: current.clone(),
                changes: Changes::Everything,
            }),
            current,
            stats: FileSourceStats::default(),
        })
    }

    /// The newest snapshot.
    pub fn state(&self) -> &Arc<ClusterState> {
        &self.current
    }

    pub fn stats(&self) -> &FileSourceStats {
        &self.stats
    }

    /// The manifest files followed now.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.keys().map(PathBuf::as_path)
    }

    /// Wait (at most `timeout`; `None`: forever) for a change of the
    /// manifests that gives a new snapshot. `Ok(None)`: the time ran out.
    /// Bad input is logged and changes nothing: the wait goes on.
    pub fn wait_change(&mut self, timeout: Option<Duration>) -> Result<Option<Update>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            let events = self.watch.wait(left)?;
            if events.is_empty() {
                return Ok(None);
            }
            match self.reload(&events) {
                Ok(Some(update)) => return Ok(Some(update)),
                Ok(None) => {}
                Err(e) => {
                    self.stats.refused += 1;
                    tracing::error!("{e}; keeping the current state");
                }
            }
        }
    }

    /// Wait (at most `timeout`; `None`: forever) for one batch of events
    /// and handle it: `Ok(None)` when the time ran out or the batch changed
    /// nothing of the cluster (or was bad input, which is logged). For
    /// callers that do something after every batch (the DNS server hands
    /// the reading's garbage back to the kernel).
    pub fn wait_batch(&mut self, timeout: Option<Duration>) -> Result<Option<Update>> {
        let events = self.watch.wait(timeout)?;
        if events.is_empty() {
            return Ok(None);
        }
        match self.reload(&events) {
            Ok(update) => Ok(update),
            Err(e) => {
                self.stats.refused += 1;
                tracing::error!("{e}; keeping the current state");
                Ok(None)
            }
        }
    }

    /// Re-read what the events name; `None` when nothing of the cluster
    /// changed (an editor's swap file, a file written with the same content).
    fn reload(&mut self, events: &Events) -> Result<Option<Update>> {
        let started = Instant::now();
        let listed: BTreeSet<PathBuf> = list_files(&self.inputs, self.recursive, &mut self.watch)?
            .into_iter()
            .collect();
        // A symbolic link that changed (a ConfigMap volume swaps its
        // `..data` link) may stand for any file: read them all again, as
        // after a lost event.
        let everything = events.overflowed
            || events.paths.iter().any(|p| {
                p.symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink())
            });
        let named: HashSet<&Path> = events.paths.iter().map(PathBuf::as_path).collect();
        let to_read: Vec<PathBuf> = listed
            .iter()
            .filter(|f| everything || named.contains(f.as_path()) || !self.files.contains_key(*f))
            .cloned()
            .collect();
        let removed: Vec<PathBuf> = self
            .files
            .keys()
            // Standard input was read once: it is never listed, never gone.
            .filter(|f| !listed.contains(*f) && f.as_os_str() != STDIN)
            .cloned()
            .collect();
        if to_read.is_empty() && removed.is_empty() {
            return Ok(None);
        }

        // The desired objects are edited in place (a copy of 10k Services
        // costs more than the rest); `undo` puts them back if the
        // controllers refuse the result.
        let (had_pods, had_endpoints) = (
            !self.desired.pods.is_empty(),
            !self.desired.endpoints.is_empty(),
        );
        let mut undo = Undo::default();
        let mut touched: BTreeSet<ObjectKey> = BTreeSet::new();
        for f in &removed {
            for key in self.files.get(f).into_iter().flatten() {
                let origin = self.desired.origin(key).cloned();
                if let Some(o) = self.desired.remove(key) {
                    undo.removed.push((o, origin));
                }
                touched.insert(key.clone());
            }
        }
        // File by file: a file that cannot be read or admitted keeps its
        // last good objects (and is said), the others go on.
        let mut read: BTreeMap<PathBuf, Vec<ObjectKey>> = BTreeMap::new();
        for f in &to_read {
            let old_keys = self.files.get(f).cloned().unwrap_or_default();
            match self.read_file(f, &old_keys, &mut undo) {
                Ok(keys) => {
                    touched.extend(old_keys);
                    touched.extend(keys.iter().cloned());
                    read.insert(f.clone(), keys);
                }
                Err(e) => {
                    self.stats.refused += 1;
                    tracing::error!(
                        "{e}; keeping the current state (what {} gave before stays)",
                        f.display()
                    );
                }
            }
        }
        if read.is_empty() && removed.is_empty() {
            return Ok(None);
        }
        let read_took = started.elapsed();

        let started = Instant::now();
        let new =
            match controllers::reconcile(self.desired.clone(), Some(&self.current), &self.config) {
                Ok(new) => new,
                Err(e) => {
                    undo.apply(&mut self.desired);
                    return Err(e.into());
                }
            };
        let reconcile_took = started.elapsed();
        let started = Instant::now();
        let flipped = had_pods == self.desired.pods.is_empty()
            || had_endpoints == self.desired.endpoints.is_empty();
        let (changes, scope) = scoped_changes(&self.current, &new, &touched, flipped);
        let changes_took = started.elapsed();

        // Only now, with everything read and admitted, does the source move on.
        let files_read = read.len();
        for f in removed {
            self.files.remove(&f);
            self.sizes.remove(&f);
        }
        self.stats.files_read += read.len() as u64;
        self.files.extend(read);
        self.stats.last_read = read_took;
        self.stats.last_reconcile = reconcile_took;
        self.stats.last_changes = changes_took;
        if scope == Scope::Everything {
            self.stats.full_diffs += 1;
        }
        tracing::info!(files = files_read, changes = changes.len(), ?scope, read = ?read_took, controllers = ?reconcile_took, change_set = ?changes_took, "manifests changed");
        if changes.is_empty() && !events.overflowed {
            // The files changed, the cluster did not: nothing to give.
            self.current = Arc::new(new);
            return Ok(None);
        }
        self.stats.reloads += 1;
        self.current = Arc::new(new);
        Ok(Some(Update {
            state: self.current.clone(),
            changes: if events.overflowed {
                Changes::Everything
            } else {
                Changes::Set(Arc::new(changes))
            },
        }))
    }
}

impl FileSource {
    /// Replace the objects of file `f` (`old_keys`) in the desired objects
    /// by what it holds now, noting in `undo` how to go back; on error the
    /// desired objects are as they were.
    fn read_file(
        &mut self,
        f: &Path,
        old_keys: &[ObjectKey],
        undo: &mut Undo,
    ) -> Result<Vec<ObjectKey>> {
        // Many files growing one by one must not pass the limit one read
        // of them all has (the reader bounds each read on its own).
        let size = f.metadata().map_or(0, |m| m.len());
        let others: u64 = self
            .sizes
            .iter()
            .filter(|(p, _)| p.as_path() != f)
            .map(|(_, s)| s)
            .sum();
        if others.saturating_add(size) > strait_model::MAX_INPUT_BYTES {
            return Err(Error::Input {
                message: format!(
                    "{}: the inputs would be larger than {} bytes in all, the most strait reads",
                    f.display(),
                    strait_model::MAX_INPUT_BYTES
                ),
            });
        }
        let arg = f.display().to_string();
        let objects = (self.reader)(std::slice::from_ref(&arg), false)
            .map_err(|message| Error::Input { message })?;
        self.sizes.insert(f.to_owned(), size);
        let mut mine = Undo::default();
        for key in old_keys {
            let origin = self.desired.origin(key).cloned();
            if let Some(o) = self.desired.remove(key) {
                mine.removed.push((o, origin));
            }
        }
        for (object, origin) in objects {
            let key = ObjectKey::of(&object);
            if let Err(e) = self.desired.add(object, Some(origin)) {
                mine.apply(&mut self.desired);
                return Err(e.into());
            }
            mine.added.push(key);
        }
        let keys = mine.added.clone();
        undo.removed.extend(mine.removed);
        undo.added.extend(mine.added);
        Ok(keys)
    }
}

/// How to take back edits of the desired objects.
#[derive(Default)]
struct Undo {
    removed: Vec<(Object, Option<Origin>)>,
    added: Vec<ObjectKey>,
}

impl Undo {
    fn apply(self, desired: &mut ClusterState) {
        for key in &self.added {
            desired.remove(key);
        }
        for (o, origin) in self.removed {
            // They were there together before: no duplicate is possible.
            let _ = desired.add(o, origin);
        }
    }
}

impl Source for FileSource {
    fn next(&mut self) -> Result<Option<Update>> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        loop {
            if let Some(update) = self.wait_change(None)? {
                return Ok(Some(update));
            }
        }
    }
}

/// The manifest files of the inputs, as the reader finds them (a file
/// given by name whatever its name; a directory's `*.yaml`, `*.yml`,
/// `*.json`, with subdirectories when `recursive`); every directory they
/// are in is watched. Standard input (`-`) is read once and not followed.
fn list_files(inputs: &[String], recursive: bool, watch: &mut DirWatch) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut walked = HashSet::new();
    for input in inputs {
        if input == "-" {
            continue;
        }
        let path = Path::new(input);
        if path.is_dir() {
            walk(path, recursive, 0, &mut walked, watch, &mut files)?;
        } else {
            // The directory, not the file: a file replaced by rename keeps
            // no watch, and a file that does not exist yet has none.
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            // A directory that is not there: the reader says what is wrong
            // with the input, in its words.
            if parent.is_dir() {
                watch.watch(parent)?;
            }
            if path.exists() {
                files.push(path.to_owned());
            }
        }
    }
    Ok(files)
}

fn walk(
    dir: &Path,
    recursive: bool,
    depth: usize,
    walked: &mut HashSet<PathBuf>,
    watch: &mut DirWatch,
    files: &mut Vec<PathBuf>,
) -> Result<()> {
    let read_error = |source| Error::Read {
        path: dir.to_owned(),
        source,
    };
    // A link back up the tree is walked once.
    if !walked.insert(std::fs::canonicalize(dir).map_err(read_error)?) {
        return Ok(());
    }
    watch.watch(dir)?;
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        entries.push(entry.map_err(read_error)?.path());
    }
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            if recursive && depth < MAX_DEPTH {
                walk(&entry, recursive, depth + 1, walked, watch, files)?;
            }
        } else if entry.is_file()
            && matches!(
                entry.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        {
            files.push(entry);
        }
    }
    Ok(())
}
