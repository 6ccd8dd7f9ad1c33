//! The lab's API server for the tests of cluster mode (`strait agent`,
//! `strait dns --kubernetes`), started in a network namespace of the test
//! or in the test's own. Included by the tests that need it
//! (`#[path = "common/api.rs"] mod api;`), not by `common`, so that the
//! other tests do not build kube's client.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use strait_apiserver::auth::Tokens;
use strait_apiserver::server::{Server, ServerConfig};
use strait_apiserver::store::AdmitAll;
use strait_apiserver::tls::Pki;

use crate::common::TestNs;

/// The API server with a runtime of its own and an admin client. In a
/// namespace, the runtime's threads start there, so every socket it opens
/// (the listener, again after a restart, the client's) is the namespace's.
pub struct ApiServer {
    pub runtime: tokio::runtime::Runtime,
    pub server: Option<Server>,
    /// Authenticated with the admin kubeconfig.
    pub client: kube::Client,
}

impl ApiServer {
    /// Listening on 127.0.0.1, a port the kernel chose, in `ns` (`None`:
    /// the test's namespace); `tokens` besides the admin's.
    pub fn start(ns: Option<&TestNs>, tokens: Tokens) -> ApiServer {
        let build = || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        };
        let runtime = match ns {
            Some(ns) => ns.run(build),
            None => build(),
        };
        let server = runtime
            .block_on(runtime.spawn(Server::start(ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                pki: Pki::create(&["127.0.0.1".into()]).unwrap(),
                tokens,
                admission: Box::new(AdmitAll),
                history: 1000,
                extra_listeners: Vec::new(),
            })))
            .unwrap()
            .unwrap();
        let text = server.admin_kubeconfig();
        let client = runtime
            .block_on(runtime.spawn(async move {
                let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
                let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .unwrap();
                kube::Client::try_from(config).unwrap()
            }))
            .unwrap();
        ApiServer {
            runtime,
            server: Some(server),
            client,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    /// Run `f` on the server's runtime (inside its namespace) and wait.
    pub fn block_on<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        self.runtime.block_on(self.runtime.spawn(f)).unwrap()
    }

    /// Create every document of `yaml` through the API; a request that
    /// fails for want of a connection (the server just came back) is
    /// tried again, up to `patience`.
    pub fn create(&self, yaml: &str, patience: Duration) {
        for doc in yaml.split("\n---\n") {
            let value: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
            let kind = value["kind"].as_str().unwrap();
            let api_version = value["apiVersion"].as_str().unwrap();
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            // The plural is the kind's, lower case, with an s: true of every kind here.
            let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
            let o: DynamicObject = serde_json::from_value(value).unwrap();
            let started = Instant::now();
            loop {
                let (client, o, ar) = (self.client.clone(), o.clone(), ar.clone());
                let made = self.block_on(async move {
                    let api: Api<DynamicObject> = match o.metadata.namespace.clone() {
                        Some(ns) => Api::namespaced_with(client, &ns, &ar),
                        None => Api::all_with(client, &ar),
                    };
                    api.create(&PostParams::default(), &o).await.map(|_| ())
                });
                match made {
                    Ok(()) => break,
                    Err(kube::Error::Api(s)) => panic!("{s:?}"),
                    Err(e) => assert!(started.elapsed() < patience, "cannot create: {e}"),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Go down: listener closed, connections (the agent's watches) cut.
    pub fn stop(&mut self) {
        let mut server = self.server.take().unwrap();
        let server = self.block_on(async move {
            server.stop_serving().await;
            server
        });
        self.server = Some(server);
    }

    /// Come back on the same address with the same store (bound from a
    /// worker thread: inside the namespace).
    pub fn serve_again(&mut self) {
        let mut server = self.server.take().unwrap();
        let server = self.block_on(async move {
            server.serve_again().await.unwrap();
            server
        });
        self.server = Some(server);
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}
