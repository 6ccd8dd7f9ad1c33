//! `strait render`: manifests in, the state after the controllers out.

use std::io::Write;

use strait_model::controllers::{self, ClusterConfig};
use strait_model::{ClusterState, Source};

use crate::cli::{ClusterArgs, ManifestArgs, OutputFormat, RenderArgs};
use crate::error::Error;

pub fn run(args: &RenderArgs) -> Result<(), Error> {
    let state = load(&args.manifests, &args.cluster)?;
    let started = std::time::Instant::now();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = match args.output {
        OutputFormat::Json => serde_json::to_writer_pretty(&mut out, &state.as_list())
            .map_err(|e| Error::Output(e.to_string()))
            .and_then(|()| writeln!(out).map_err(|e| Error::Output(e.to_string()))),
        OutputFormat::Yaml => serde_saphyr::to_string(&state.as_list())
            .map_err(|e| Error::Output(e.to_string()))
            .and_then(|text| {
                out.write_all(text.as_bytes())
                    .map_err(|e| Error::Output(e.to_string()))
            }),
    };
    written?;
    out.flush().map_err(|e| Error::Output(e.to_string()))?;
    tracing::info!(elapsed = ?started.elapsed(), peak_rss_mb = strait_linux::peak_rss_mb(), "output written");
    // The process ends here: let the kernel reclaim the snapshot at once
    // instead of freeing a hundred thousand objects one by one.
    std::mem::forget(state);
    Ok(())
}

/// Read the manifests and run the controllers: the state every command starts from.
pub fn load(manifests: &ManifestArgs, cluster: &ClusterArgs) -> Result<ClusterState, Error> {
    let config = ClusterConfig {
        node_port_range: cluster.node_port_range.parse()?,
        ..ClusterConfig::default()
    }
    .with_service_cidrs(&cluster.service_cidrs)?;
    let started = std::time::Instant::now();
    let sources: Vec<Source> = manifests
        .files
        .iter()
        .map(|f| Source::from_arg(f))
        .collect();
    let loaded = strait_model::load_paths(&sources)?;
    for (kind, count) in &loaded.ignored {
        tracing::warn!("ignoring {count} object(s) of kind {kind}: strait does not use it");
    }
    let desired = ClusterState::from_objects(
        loaded
            .objects
            .into_iter()
            .map(|(o, origin)| (o, Some(origin))),
    )?;
    tracing::info!(objects = desired.len(), elapsed = ?started.elapsed(), peak_rss_mb = strait_linux::peak_rss_mb(), "manifests read");
    let started = std::time::Instant::now();
    let state = controllers::reconcile(desired, None, &config)?;
    tracing::info!(objects = state.len(), elapsed = ?started.elapsed(), peak_rss_mb = strait_linux::peak_rss_mb(), "controllers ran");
    Ok(state)
}
