//! The Ingress controller's writes, all through the `status` subresource
//! so that nothing of the spec is touched: `status.loadBalancer` of the
//! Ingresses it serves (the addresses clients reach them at), and the
//! status of the Gateway API objects of its classes.

use std::net::IpAddr;

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;
use kube::Api;
use strait_model::Kind;

use crate::{api_resource, Error, KubeSource, Result};

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

impl KubeSource {
    /// Merge `patch` (`{"status": …}`, with `metadata.resourceVersion`
    /// when the write must not overwrite a change it has not seen) into
    /// the `status` subresource of `kind` `namespace/name` (`namespace`
    /// empty for a cluster-scoped kind). Blocks until the API server
    /// answered. For the Gateway API's kinds, whose status the controller
    /// of their class writes.
    pub fn patch_status(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<()> {
        let what = if namespace.is_empty() {
            format!("write the status of {kind} {name}")
        } else {
            format!("write the status of {kind} {namespace}/{name}")
        };
        let Some(ar) = api_resource(kind) else {
            return Err(Error::Write {
                what,
                message: "not a kind strait reads".into(),
            });
        };
        let api: Api<DynamicObject> = if namespace.is_empty() {
            Api::all_with(self.client.clone(), &ar)
        } else {
            Api::namespaced_with(self.client.clone(), namespace, &ar)
        };
        self.runtime()?
            .block_on(api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)))
            .map(|_| ())
            .map_err(|e| Error::Write {
                what,
                message: e.to_string(),
            })
    }
}
