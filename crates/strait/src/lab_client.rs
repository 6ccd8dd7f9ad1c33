//! `strait lab get/apply/delete` are clients of the lab's API server, as
//! kubectl is: HTTPS trusting the lab's CA, with the admin kubeconfig's
//! token (`/run/strait/NAME/kubeconfig`). The store behind it is the lab's
//! one source of truth; nothing here reads or writes the lab's files.

use serde_json::{Map, Value};
use strait_kube::kube::{
    self,
    api::{
        Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    },
    config::{KubeConfigOptions, Kubeconfig},
    Client,
};
use strait_lab::Layout;
use strait_model::Kind;

use crate::error::Error;

/// What kubectl keeps of what was applied, to find what a later apply drops.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A refusal by the API server: its `Status` message (`Service "b" is
/// invalid: spec.clusterIP: …`), as kubectl prints it.
#[derive(Debug)]
pub struct Refusal {
    pub message: String,
}

/// A connection to one lab's API server.
pub struct LabClient {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

fn lab_error(lab: &str, message: impl Into<String>) -> Error {
    Error::Lab(strait_lab::Error::Lab {
        lab: lab.to_owned(),
        message: message.into(),
    })
}

/// The API resource of a kind strait reads (kube's plural, group, version).
pub fn api_resource(kind: Kind) -> ApiResource {
    let api_version = kind.api_version();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    // The server's own table names every kind it serves; a plural made up
    // here could disagree with it.
    let plural = strait_apiserver::RESOURCES
        .iter()
        .find(|r| r.model_kind() == Some(kind))
        .map(|r| r.plural.to_owned())
        .unwrap_or_else(|| format!("{}s", kind.as_str().to_ascii_lowercase()));
    ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: api_version.to_owned(),
        kind: kind.as_str().to_owned(),
        plural,
    }
}

impl LabClient {
    /// Connect with the lab's admin kubeconfig.
    pub fn connect(layout: &Layout) -> Result<LabClient, Error> {
        let lab = &layout.name;
        let path = layout.kubeconfig();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (it is root's, mode 0600: run as root)"
            } else {
                " (is the lab's controller up? strait lab up)"
            };
            lab_error(lab, format!("cannot read {}: {e}{hint}", path.display()))
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| lab_error(lab, format!("cannot start a runtime: {e}")))?;
        let client = runtime
            .block_on(async {
                let kc = Kubeconfig::from_yaml(&text).map_err(|e| e.to_string())?;
                let config =
                    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                        .await
                        .map_err(|e| e.to_string())?;
                Client::try_from(config).map_err(|e| e.to_string())
            })
            .map_err(|e| lab_error(lab, format!("{}: {e}", path.display())))?;
        Ok(LabClient { runtime, client })
    }

    fn api(&self, kind: Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = api_resource(kind);
        match namespace.filter(|_| kind.is_namespaced()) {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// The object, `None` when there is none.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Option<Value>, Refusal> {
        let api = self.api(kind, Some(namespace));
        let got = self.runtime.block_on(api.get_opt(name)).map_err(refusal)?;
        got.map(to_value).transpose()
    }

    /// Every object of `kind` in `namespace` (every namespace: `None`), in
    /// the API server's order, all pages.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Result<Vec<Value>, Refusal> {
        let api = self.api(kind, namespace);
        let mut params = ListParams::default().limit(500);
        let mut items = Vec::new();
        loop {
            let page = self.runtime.block_on(api.list(&params)).map_err(refusal)?;
            for item in page.items {
                let mut value = to_value(item)?;
                // Items of a list carry no type of their own: as kubectl
                // prints them, they do.
                value["apiVersion"] = kind.api_version().into();
                value["kind"] = kind.as_str().into();
                items.push(value);
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(items),
            }
        }
    }

    pub fn create(&self, kind: Kind, namespace: &str, object: Value) -> Result<Value, Refusal> {
        let api = self.api(kind, Some(namespace));
        let object: DynamicObject = serde_json::from_value(object).map_err(|e| Refusal {
            message: e.to_string(),
        })?;
        let made = self
            .runtime
            .block_on(api.create(&PostParams::default(), &object))
            .map_err(refusal)?;
        to_value(made)
    }

    /// A JSON merge patch (RFC 7386) of the stored object.
    pub fn merge_patch(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, Refusal> {
        let api = self.api(kind, Some(namespace));
        let patched = self
            .runtime
            .block_on(api.patch(name, &PatchParams::default(), &Patch::Merge(patch)))
            .map_err(refusal)?;
        to_value(patched)
    }

    /// Delete (gracefully, for pods); `false` when there was nothing to delete.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<bool, Refusal> {
        let api = self.api(kind, Some(namespace));
        match self
            .runtime
            .block_on(api.delete(name, &DeleteParams::default()))
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(e) => Err(refusal(e)),
        }
    }
}

fn to_value(object: DynamicObject) -> Result<Value, Refusal> {
    serde_json::to_value(object).map_err(|e| Refusal {
        message: format!("an object of the API server does not serialise: {e}"),
    })
}

fn refusal(e: kube::Error) -> Refusal {
    match e {
        kube::Error::Api(status) => Refusal {
            message: status.message,
        },
        other => Refusal {
            message: other.to_string(),
        },
    }
}

/// The merge patch that makes the stored object what `applied` says, as
/// kubectl's client-side apply does: every field of `applied`, and `null`
/// for what the last apply (`last`) had and this one drops, so that what
/// others set (the server's defaults, the lab's allocations and status)
/// stays.
pub fn apply_patch(applied: &Value, last: Option<&Value>) -> Value {
    match (applied, last) {
        (Value::Object(new), Some(Value::Object(old))) => {
            let mut patch = Map::new();
            for (k, v) in new {
                patch.insert(k.clone(), apply_patch(v, old.get(k)));
            }
            for k in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        (other, _) => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_apply_patch_removes_only_what_the_last_apply_had() {
        let last = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": 1, "y": 2}});
        let now = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 3}});
        assert_eq!(
            apply_patch(&now, Some(&last)),
            json!({"metadata": {"labels": {"a": "1", "b": null}}, "spec": {"x": 3, "y": null}})
        );
        // Without a last apply nothing is removed: what the server or the
        // lab set (spec.clusterIP) is not the file's to drop.
        assert_eq!(apply_patch(&now, None), now);
    }

    #[test]
    fn kinds_map_to_kubes_resources() {
        assert_eq!(api_resource(Kind::NetworkPolicy).plural, "networkpolicies");
        assert_eq!(api_resource(Kind::Endpoints).plural, "endpoints");
        assert_eq!(api_resource(Kind::Service).plural, "services");
        let eps = api_resource(Kind::EndpointSlice);
        assert_eq!(
            (
                eps.group.as_str(),
                eps.version.as_str(),
                eps.plural.as_str()
            ),
            ("discovery.k8s.io", "v1", "endpointslices")
        );
        assert_eq!(api_resource(Kind::Deployment).group, "apps");
        let cnp = api_resource(Kind::ClusterNetworkPolicy);
        assert_eq!(
            (cnp.group.as_str(), cnp.plural.as_str()),
            ("policy.networking.k8s.io", "clusternetworkpolicies")
        );
    }
}
