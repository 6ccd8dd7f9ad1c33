//! The one write the node agent makes: its own Node's annotations (the
//! overlay's VTEP, in flannel's words), as a JSON merge patch that touches
//! nothing else.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::Api;

use crate::{Error, KubeSource, Result};

impl KubeSource {
    /// Set `annotations` on the Node `name` (others are left as they are).
    /// Blocks until the API server answered.
    pub fn patch_node_annotations(
        &self,
        name: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
        let params = PatchParams::default();
        let what = format!("annotate Node {name:?}");
        self.runtime()?
            .block_on(api.patch(name, &params, &Patch::Merge(&patch)))
            .map(|_| ())
            .map_err(|e| Error::Write {
                what,
                message: e.to_string(),
            })
    }
}
