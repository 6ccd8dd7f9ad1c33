//! The Ingress controller's one write: `status.loadBalancer` of the
//! Ingresses it serves (the addresses clients reach them at), through the
//! `status` subresource so that nothing of the spec is touched.

use std::net::IpAddr;

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use kube::Api;

use crate::{Error, KubeSource, Result};

impl KubeSource {
    /// Set `status.loadBalancer.ingress` of the Ingress `namespace/name` to
    /// `addresses` (empty: no address). Blocks until the API server answered.
    pub fn patch_ingress_status(
        &self,
        namespace: &str,
        name: &str,
        addresses: &[IpAddr],
    ) -> Result<()> {
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), namespace);
        let ingress: Vec<serde_json::Value> = addresses
            .iter()
            .map(|ip| serde_json::json!({"ip": ip.to_string()}))
            .collect();
        // A merge patch replaces the list whole (lists are atomic in JSON
        // merge patch), so an address no longer served goes with it.
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": ingress}}});
        let what = format!("write the status of Ingress {namespace}/{name}");
        self.runtime()?
            .block_on(api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)))
            .map(|_| ())
            .map_err(|e| Error::Write {
                what,
                message: e.to_string(),
            })
    }
}
