//! From manifests to a ClusterState: what `render`, `proxy`, `dns` and `lab`
//! all start from. Following the files as they change is the agent's file
//! source (`strait_agent::FileSource`, inotify); [`follower_reader`] is how
//! it reads them for the followers.

use std::collections::BTreeMap;
use std::time::Instant;

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

/// The reader the followers' file source uses (`strait proxy -f`, `strait
/// dns -f`): one bad object hurts only itself. A refused object keeps the
/// version admitted before from the same file (a refused new object is
/// absent), an unreadable document the object it held, an unreadable file
/// its objects, as the API server keeps the stored object when an update is
/// refused. Each refusal is logged at every read where it stands;
/// `refused` is told how many stand in all. (Objects are shared, not
/// copied: keeping them costs a reference each.)
pub fn follower_reader(mut refused: impl FnMut(usize) + Send + 'static) -> strait_agent::Reader {
    // What each file gave last time, and how many refusals it had.
    let mut admitted: BTreeMap<String, (Vec<(Object, Origin)>, usize)> = BTreeMap::new();
    Box::new(move |paths: &[String], recursive: bool| {
        let mut loaded = read_objects_alone(paths, recursive).map_err(|e| e.to_string())?;
        let files: std::collections::BTreeSet<String> = loaded
            .objects
            .iter()
            .map(|(_, o)| o.file.to_string())
            .chain(loaded.refused.iter().map(|r| r.origin.file.to_string()))
            .collect();
        // What these paths gave before: files under a path read again.
        let before: Vec<(Object, Origin)> = admitted
            .iter()
            .filter(|(f, _)| {
                files.contains(*f)
                    || paths.iter().any(|p| {
                        f.as_str() == p || f.starts_with(&format!("{}/", p.trim_end_matches('/')))
                    })
            })
            .flat_map(|(_, (objects, _))| objects.iter().cloned())
            .collect();
        let kept = loaded.keep_refused(&before);
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
        // Forget the paths read again, then note what they gave now.
        admitted.retain(|f, _| {
            !(files.contains(f)
                || paths.iter().any(|p| {
                    f.as_str() == p || f.starts_with(&format!("{}/", p.trim_end_matches('/')))
                }))
        });
        for (object, origin) in &loaded.objects {
            admitted
                .entry(origin.file.to_string())
                .or_default()
                .0
                .push((object.clone(), origin.clone()));
        }
        for refusal in &loaded.refused {
            admitted
                .entry(refusal.origin.file.to_string())
                .or_default()
                .1 += 1;
        }
        refused(admitted.values().map(|(_, n)| n).sum());
        Ok(loaded.objects)
    })
}
