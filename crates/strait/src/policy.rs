//! `strait policy matrix`: the reachability matrix of the manifests'
//! NetworkPolicies, computed by the packet tracer over the planned rules
//! (`--reading traced`, what the kernel would decide) or by the reference
//! reading of the API (`--reading reference`).

use std::io::Write;

use strait_policy::{plan, semantics};

use crate::cli::{MatrixOutput, PolicyMatrixArgs, PolicyReading};
use crate::error::Error;
use crate::state::{cluster_config, load};

pub fn matrix(args: &PolicyMatrixArgs) -> Result<(), Error> {
    let state = load(
        &args.manifests.files,
        args.manifests.recursive,
        &cluster_config(&args.cluster)?,
        None,
    )?;
    // Say which pods are not in the table, rather than leave them out
    // silently: a pod without an address cannot be probed.
    let in_table = semantics::matrix_pods(&state);
    let left_out = state.pods.len() - in_table.len();
    if left_out > 0 {
        tracing::warn!(
            "{left_out} pod(s) left out of the matrix: without status.podIP, or hostNetwork"
        );
    }
    if in_table.is_empty() {
        tracing::warn!("no pod with an address: the matrix is empty");
    }
    let matrix = match args.reading {
        PolicyReading::Traced => plan::traced_matrix(&state, &args.ports, &args.protocols)?,
        PolicyReading::Reference => semantics::matrix(&state, &args.ports, &args.protocols),
    };
    let text = match args.output {
        MatrixOutput::Text => matrix.to_text(),
        MatrixOutput::Json => matrix.to_json(),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Output(e.to_string()))
}
