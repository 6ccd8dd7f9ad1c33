//! From manifests to a ClusterState, and following the files as they change:
//! what `render`, `proxy`, `dns` and `lab` all start from.

use std::time::{Duration, Instant, SystemTime};

use strait_model::controllers::{self, ClusterConfig};
use strait_model::{
    Admission, ClusterState, Loaded, Object, Origin, ReadOptions, SkipReason, Source,
};

use crate::cli::ClusterArgs;
use crate::error::Error;

/// The API server's and controller manager's settings from the flags.
pub fn cluster_config(cluster: &ClusterArgs) -> Result<ClusterConfig, Error> {
    Ok(ClusterConfig {
        node_port_range: cluster.node_port_range.parse()?,
        ..ClusterConfig::default()
    }
    .with_service_cidrs(&cluster.service_cidrs)?)
}

/// The objects of `files` (admitted: defaults, validation), with the
/// subdirectories of directories when `recursive` (`-R`); kinds strait does
/// not use are reported once each. What was not read is said on stderr:
/// subdirectories, files of other types, and an input that holds no object.
/// One refused object fails the whole read: for one-shot commands.
pub fn read_objects(files: &[String], recursive: bool) -> Result<Vec<(Object, Origin)>, Error> {
    Ok(read(files, recursive, Admission::AllOrNothing)?.objects)
}

/// [`read_objects`], refusing objects alone: what was refused is in
/// [`Loaded::refused`], every other object is read. For `strait lab apply`,
/// which applies what it can as `kubectl apply` does, and for followers.
pub fn read_objects_alone(files: &[String], recursive: bool) -> Result<Loaded, Error> {
    read(files, recursive, Admission::PerObject)
}

fn read(files: &[String], recursive: bool, admission: Admission) -> Result<Loaded, Error> {
    let sources: Vec<Source> = files.iter().map(|f| Source::from_arg(f)).collect();
    let options = ReadOptions {
        recursive,
        admission,
        ..ReadOptions::default()
    };
    let loaded = strait_model::load_paths_with(&sources, &options)?;
    for (kind, count) in &loaded.ignored {
        tracing::warn!("ignoring {count} object(s) of kind {kind}: strait does not use it");
    }
    let skipped = |reason: SkipReason| -> Vec<String> {
        loaded
            .skipped
            .iter()
            .filter(|s| s.reason == reason)
            .map(|s| s.path.display().to_string())
            .collect()
    };
    let dirs = skipped(SkipReason::Directory);
    if !dirs.is_empty() {
        tracing::warn!(
            "not reading {} subdirector{} ({}): a directory is read without its subdirectories; -R reads them too",
            dirs.len(),
            if dirs.len() == 1 { "y" } else { "ies" },
            some_of(&dirs)
        );
    }
    let others = skipped(SkipReason::NotAManifest);
    if !others.is_empty() {
        tracing::warn!(
            "not reading {} file(s) whose name does not end in .yaml, .yml or .json ({})",
            others.len(),
            some_of(&others)
        );
    }
    if loaded.objects.is_empty() && loaded.refused.is_empty() {
        tracing::warn!("the input holds no object that strait reads");
    }
    Ok(loaded)
}

/// The first few of a long list of names, for a message.
fn some_of(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// Read the manifests (subdirectories too when `recursive`) and run the
/// controllers; `previous` keeps allocations and pod status stable across
/// reloads. One refused object fails the load: for `--dry-run`.
pub fn load(
    files: &[String],
    recursive: bool,
    config: &ClusterConfig,
    previous: Option<&ClusterState>,
) -> Result<ClusterState, Error> {
    let started = Instant::now();
    let desired = ClusterState::from_objects(
        read_objects(files, recursive)?
            .into_iter()
            .map(|(o, origin)| (o, Some(origin))),
    )?;
    tracing::info!(objects = desired.len(), elapsed = ?started.elapsed(), peak_rss_mb = strait_linux::peak_rss_mb(), "manifests read");
    reconcile(desired, previous, config)
}

fn reconcile(
    desired: ClusterState,
    previous: Option<&ClusterState>,
    config: &ClusterConfig,
) -> Result<ClusterState, Error> {
    let started = Instant::now();
    let state = controllers::reconcile(desired, previous, config)?;
    tracing::info!(objects = state.len(), elapsed = ?started.elapsed(), peak_rss_mb = strait_linux::peak_rss_mb(), "controllers ran");
    Ok(state)
}

/// The objects a follower admitted at its last load, with where they were
/// read: what it keeps when their new version is refused, as the API server
/// keeps the stored object when an update is refused. (Objects are shared,
/// not copied: this costs a reference per object.)
#[derive(Clone, Debug, Default)]
pub struct Admitted(Vec<(Object, Origin)>);

/// What a follower's load made.
pub struct Reload {
    pub state: ClusterState,
    /// To give to the next load.
    pub admitted: Admitted,
    /// How many objects, documents or files admission refused.
    pub refused: usize,
}

/// [`load`] for the followers (`strait proxy`, `strait dns`): one bad object
/// hurts only itself. A refused object keeps the version admitted `before`
/// (a refused new object is absent), an unreadable document the object it
/// held, an unreadable file its objects; each refusal is logged. The load
/// still fails when what it would leave out is unknown (a directory that
/// cannot be listed, input past the size limit) or the controllers fail.
pub fn load_following(
    files: &[String],
    recursive: bool,
    config: &ClusterConfig,
    previous: Option<&ClusterState>,
    before: &Admitted,
) -> Result<Reload, Error> {
    let started = Instant::now();
    let mut loaded = read_objects_alone(files, recursive)?;
    let refused = loaded.refused.len();
    let kept = loaded.keep_refused(&before.0);
    for (refusal, kept) in loaded.refused.iter().zip(kept) {
        if kept.is_empty() {
            tracing::error!("{}; refused", refusal.error);
        } else {
            let names: Vec<String> = kept.iter().map(ToString::to_string).collect();
            tracing::error!(
                "{}; refused, keeping what was admitted before: {}",
                refusal.error,
                some_of(&names)
            );
        }
    }
    let admitted = Admitted(loaded.objects);
    let desired = ClusterState::from_objects(
        admitted
            .0
            .iter()
            .map(|(o, origin)| (o.clone(), Some(origin.clone()))),
    )?;
    tracing::info!(objects = desired.len(), elapsed = ?started.elapsed(), peak_rss_mb = strait_linux::peak_rss_mb(), "manifests read");
    Ok(Reload {
        state: reconcile(desired, previous, config)?,
        admitted,
        refused,
    })
}

/// Modification times of the inputs (directories: of their files, and with
/// `recursive` of their subdirectories' files too).
fn stamp(files: &[String], recursive: bool) -> Vec<(String, Option<SystemTime>)> {
    let mut out = Vec::new();
    for f in files {
        stamp_path(std::path::Path::new(f), recursive, 0, &mut out);
    }
    out
}

/// How deep `-R` directories are followed for change detection; the reader
/// itself refuses symlink loops, this only bounds the walk.
const MAX_STAMP_DEPTH: usize = 32;

fn stamp_path(
    path: &std::path::Path,
    recursive: bool,
    depth: usize,
    out: &mut Vec<(String, Option<SystemTime>)>,
) {
    let modified = |p: &std::path::Path| p.metadata().and_then(|m| m.modified()).ok();
    if !path.is_dir() {
        out.push((path.display().to_string(), modified(path)));
        return;
    }
    let mut list: Vec<_> = std::fs::read_dir(path)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    list.sort();
    for p in list {
        if p.is_dir() && recursive && depth < MAX_STAMP_DEPTH {
            stamp_path(&p, recursive, depth + 1, out);
        } else {
            out.push((p.display().to_string(), modified(&p)));
        }
    }
}

/// What the files looked like: taken before they are first read, so that a
/// change made while they are read and applied is not missed.
pub struct Seen(Vec<(String, Option<SystemTime>)>);

impl Seen {
    pub fn now(files: &[String], recursive: bool) -> Seen {
        Seen(stamp(files, recursive))
    }
}

/// Call `changed` whenever one of `files` differs from what was `seen`,
/// looking every `poll_ms`; never returns.
pub fn follow(
    files: &[String],
    recursive: bool,
    poll_ms: u64,
    seen: Seen,
    mut changed: impl FnMut(),
) -> ! {
    let mut last = seen.0;
    loop {
        std::thread::sleep(Duration::from_millis(poll_ms));
        let now = stamp(files, recursive);
        if now != last {
            last = now;
            changed();
        }
    }
}
