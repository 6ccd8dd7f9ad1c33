//! `strait render`: manifests in, the state after the controllers out.

use std::io::Write;

use crate::cli::{OutputFormat, RenderArgs};
use crate::error::Error;
use crate::state::{cluster_config, load};

pub fn run(args: &RenderArgs) -> Result<(), Error> {
    let state = load(
        &args.manifests.files,
        args.manifests.recursive,
        &cluster_config(&args.cluster)?,
        None,
    )?;
    let started = std::time::Instant::now();
    let stdout = std::io::stdout();
    // Large writes: the output of a big cluster is hundreds of megabytes.
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let written = match args.output {
        OutputFormat::Json => serde_json::to_writer_pretty(&mut out, &state.as_list())
            .map_err(|e| Error::Output(e.to_string()))
            .and_then(|()| writeln!(out).map_err(|e| Error::Output(e.to_string()))),
        // Streamed: the YAML of a large cluster is as big as the cluster.
        OutputFormat::Yaml => serde_saphyr::to_io_writer(&mut out, &state.as_list())
            .map_err(|e| Error::Output(e.to_string())),
    };
    written?;
    out.flush().map_err(|e| Error::Output(e.to_string()))?;
    tracing::info!(elapsed = ?started.elapsed(), peak_rss_mb = strait_linux::peak_rss_mb(), "output written");
    // The process ends here: let the kernel reclaim the snapshot at once
    // instead of freeing a hundred thousand objects one by one.
    std::mem::forget(state);
    Ok(())
}
