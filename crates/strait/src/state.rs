//! From manifests to a ClusterState: what `render`, `proxy`, `dns` and `lab`
//! all start from. Following the files as they change is the agent's file
//! source (`strait_agent::FileSource`, inotify).

use std::time::Instant;

use strait_model::controllers::{self, ClusterConfig};
use strait_model::{ClusterState, Object, Origin, ReadOptions, SkipReason, Source};

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
pub fn read_objects(files: &[String], recursive: bool) -> Result<Vec<(Object, Origin)>, Error> {
    let sources: Vec<Source> = files.iter().map(|f| Source::from_arg(f)).collect();
    let options = ReadOptions {
        recursive,
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
    if loaded.objects.is_empty() {
        tracing::warn!("the input holds no object that strait reads");
    }
    Ok(loaded.objects)
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
/// reloads.
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
    let started = Instant::now();
    let state = controllers::reconcile(desired, previous, config)?;
    tracing::info!(objects = state.len(), elapsed = ?started.elapsed(), peak_rss_mb = strait_linux::peak_rss_mb(), "controllers ran");
    Ok(state)
}
