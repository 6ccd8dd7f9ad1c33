//! The HTTPS server: routing, content negotiation, authentication and
//! authorization in front of the store and the documents.
//!
//! Each connection is served by hyper (HTTP/2 or HTTP/1.1, chosen by ALPN)
//! on the caller's tokio runtime. A request is authenticated (bearer
//! token), parsed into what it acts on, authorized (RBAC), then answered
//! from the store. Every failure is a `Status` object.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::auth::{self, Attributes, Tokens, UserInfo};
use crate::discovery::{self, Aggregated};
use crate::error::ApiError;
use crate::openapi;
use crate::patch::{self, PatchType};
use crate::resources::{Resource, Subresource};
use crate::store::{Admission, DeleteOptions, Event, EventType, ListOptions, Store, WriteContext};
use crate::table::{self, IncludeObject, TableOptions, TableVersion};
use crate::tls::Pki;

/// kube-apiserver's limit on a request body.
const MAX_BODY: usize = 3 * 1024 * 1024;
/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A watch without `timeoutSeconds` ends after this (kube: 30–60 min);
/// a longer one asked for is cut to it.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// A container's output, for `kubectl logs` (the lab plugs in its files).
pub trait PodLogs: Send + Sync {
    /// The log of `container` (`None`: the pod's only/first container) of
    /// pod `namespace/name`, or why not.
    fn log(&self, namespace: &str, name: &str, container: Option<&str>) -> Result<Vec<u8>, String>;
}

/// How to run a server.
pub struct ServerConfig {
    /// `127.0.0.1:0` picks a free port; [`Server::addr`] tells which.
    pub listen: SocketAddr,
    pub pki: Pki,
    /// The accepted bearer tokens. [`Server::start`] adds an admin token
    /// (`system:masters`) of its own, used by [`Server::admin_kubeconfig`].
    pub tokens: Tokens,
    pub admission: Box<dyn Admission>,
    /// How many events the watch history keeps.
    pub history: usize,
    /// More sockets to serve on, already bound — the lab binds one inside
    /// its underlay namespace, where its nodes reach the control plane.
    pub extra_listeners: Vec<std::net::TcpListener>,
}

/// A running server; dropping it does not stop it — call [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    store: Arc<Store>,
    admin_token: String,
    ca_cert_pem: String,
    stop: watch::Sender<bool>,
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    /// The accept loop of `addr`, while serving.
    accepting: Option<tokio::task::JoinHandle<()>>,
}

/// What every request handler reads.
struct Shared {
    store: Arc<Store>,
    tokens: Tokens,
    logs: Mutex<Option<Arc<dyn PodLogs>>>,
    random: Mutex<Option<std::fs::File>>,
}

impl Server {
    /// Bind and serve on the current tokio runtime.
    pub async fn start(config: ServerConfig) -> Result<Server, ApiError> {
        let tls = crate::tls::server_config(&config.pki)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ApiError::internal(format!("cannot listen on {}: {e}", config.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let store = Arc::new(Store::new(config.admission, config.history));
        let admin_token = crate::tls::new_token();
        let mut tokens = config.tokens;
        tokens.tokens.push((
            admin_token.clone(),
            UserInfo {
                name: "admin".into(),
                groups: vec!["system:masters".into()],
            },
        ));
        let shared = Arc::new(Shared {
            store: store.clone(),
            tokens,
            logs: Mutex::new(None),
            random: Mutex::new(std::fs::File::open("/dev/urandom").ok()),
        });
        // What kube-apiserver's system namespaces controller makes at start.
        let namespaces = Resource::by_plural("", "v1", "namespaces").expect("served");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let namespace =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            let made =
                shared.with_write_context(|ctx| store.create(namespaces, "", namespace, ctx));
            if let Err(e) = made {
                return Err(ApiError::internal(format!(
                    "cannot create namespace {name}: {e}"
                )));
            }
        }
        let (stop, stopped) = watch::channel(false);
        let acceptor = TlsAcceptor::from(tls);
        for extra in config.extra_listeners {
            let extra = extra
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(extra))
                .map_err(|e| ApiError::internal(format!("cannot serve a listener: {e}")))?;
            tokio::spawn(accept_loop(
                extra,
                acceptor.clone(),
                shared.clone(),
                stopped.clone(),
            ));
        }
        let accepting = tokio::spawn(accept_loop(
            listener,
            acceptor.clone(),
            shared.clone(),
            stopped,
        ));
        Ok(Server {
            addr,
            store,
            admin_token,
            ca_cert_pem: config.pki.ca_cert_pem.clone(),
            stop,
            shared,
            acceptor,
            accepting: Some(accepting),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The CA (PEM) clients must trust.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The admin user's bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Where `kubectl logs` reads from.
    pub fn set_logs(&self, logs: Arc<dyn PodLogs>) {
        *self.shared.logs.lock().unwrap_or_else(|p| p.into_inner()) = Some(logs);
    }

    /// A kubeconfig (YAML) for the admin user, trusting the server's CA.
    pub fn admin_kubeconfig(&self) -> String {
        self.kubeconfig("admin", &self.admin_token)
    }

    /// A kubeconfig for `user` with `token` (one of the configured tokens).
    pub fn kubeconfig(&self, user: &str, token: &str) -> String {
        crate::tls::kubeconfig(
            "strait",
            &format!("https://{}", self.addr),
            &self.ca_cert_pem,
            user,
            token,
        )
    }

    /// A fresh write context (time and randomness) for writing to the
    /// store directly, as the lab's controllers do.
    pub fn with_write_context<T>(&self, f: impl FnOnce(&mut WriteContext<'_>) -> T) -> T {
        self.shared.with_write_context(f)
    }

    /// Stop accepting; open connections (watches too) are closed.
    pub fn shutdown(self) {
        let _ = self.stop.send(true);
    }

    /// Go down as a crashed or restarting kube-apiserver does: the
    /// listening socket is closed (new connections are refused) and every
    /// open connection, watches included, is cut. The store, the tokens
    /// and the certificate stay for [`Server::serve_again`]. Returns once
    /// the socket is closed. The extra listeners of the configuration are
    /// closed too and are not served again.
    pub async fn stop_serving(&mut self) {
        let _ = self.stop.send(true);
        if let Some(accepting) = self.accepting.take() {
            // The loop returns at once on the signal; its end drops the socket.
            let _ = accepting.await;
        }
    }

    /// Serve the same store again on the same address (after
    /// [`Server::stop_serving`]): clients reconnect and resume their
    /// watches from the versions they have, as after a kube-apiserver
    /// restart. Fails if the address is taken meanwhile.
    pub async fn serve_again(&mut self) -> Result<(), ApiError> {
        if self.accepting.is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr)
            .await
            .map_err(|e| ApiError::internal(format!("cannot listen on {}: {e}", self.addr)))?;
        let (stop, stopped) = watch::channel(false);
        self.stop = stop;
        self.accepting = Some(tokio::spawn(accept_loop(
            listener,
            self.acceptor.clone(),
            self.shared.clone(),
            stopped,
        )));
        Ok(())
    }
}

impl Shared {
    fn with_write_context<T>(&self, f: impl FnOnce(&mut WriteContext<'_>) -> T) -> T {
        let mut random = || {
            let mut bytes = [0u8; 16];
            let mut file = self.random.lock().unwrap_or_else(|p| p.into_inner());
            let read = file.as_mut().map(|f| f.read_exact(&mut bytes).is_ok());
            if read != Some(true) {
                // No /dev/urandom: still unique within this process.
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                bytes = nanos.to_le_bytes();
            }
            bytes
        };
        let mut ctx = WriteContext {
            now_unix: now_unix(),
            random: &mut random,
        };
        f(&mut ctx)
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

async fn accept_loop(
    listener: TcpListener,
    tls: TlsAcceptor,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let shared = shared.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            // A client that never finishes its handshake is let go.
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake: timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, "connection: {e}");
                },
                _ = stopped.changed() => {}
            }
        });
    }
}

/// A response body: whole, or a stream of watch events.
pub enum ResponseBody {
    Full(Full<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResponseBody::Full(full) => Pin::new(full).poll_frame(cx),
            ResponseBody::Stream(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response<ResponseBody> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(ResponseBody::Full(Full::new(Bytes::from(body))));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(e: &ApiError) -> Response<ResponseBody> {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &e.status())
}

fn text_response(text: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Full(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<ResponseBody> {
    match route(shared, req).await {
        Ok(response) => response,
        Err(e) => error_response(&e),
    }
}

/// The query string as a map (last value wins), percent-decoded.
fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a resource request names.
struct Target {
    resource: &'static Resource,
    namespace: String,
    name: String,
    subresource: Option<Subresource>,
}

/// Parse `[namespaces/NS/]PLURAL[/NAME[/SUB]]` of a group version.
fn parse_target(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let not_found = || ApiError::no_route(&rest.join("/"));
    // `namespaces/NAME` and `namespaces/NAME/status` name the Namespace itself.
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(group.is_empty()
                && tail.is_empty()
                && matches!(*plural, "status" | "finalize")) =>
        {
            (ns.to_string(), {
                let mut v = vec![*plural];
                v.extend_from_slice(tail);
                v
            })
        }
        other => (String::new(), other.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [plural] => (*plural, "", None),
        [plural, name] => (*plural, *name, None),
        [plural, name, sub] => (*plural, *name, Some(*sub)),
        _ => return Err(not_found()),
    };
    let resource = Resource::by_plural(group, version, plural).ok_or_else(not_found)?;
    // A namespaced resource is listed across namespaces without one; every
    // other request names its namespace exactly when the resource has one.
    let scope_fits = if resource.namespaced {
        !namespace.is_empty() || name.is_empty()
    } else {
        namespace.is_empty()
    };
    if !scope_fits {
        return Err(not_found());
    }
    let subresource = match sub {
        None => None,
        Some(s) => Some(
            resource
                .subresources
                .iter()
                .copied()
                .find(|r| r.name() == s)
                .ok_or_else(not_found)?,
        ),
    };
    Ok(Target {
        resource,
        namespace,
        name: name.to_owned(),
        subresource,
    })
}

/// Whether the client asks for a `Table` before plain JSON, and which.
fn wants_table(req: &Request<Incoming>) -> Option<TableVersion> {
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    table::parse_table_request(accept)
}

fn accept_header(req: &Request<Incoming>) -> &str {
    req.headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A discovery document: client-go tells aggregated from legacy by the
/// Content-Type alone.
fn aggregated_response(value: &Value, version: Aggregated) -> Response<ResponseBody> {
    let mut response = json_response(StatusCode::OK, value);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(version.content_type()),
    );
    response
        .headers_mut()
        .insert(hyper::header::VARY, HeaderValue::from_static("Accept"));
    response
}

fn bytes_response(bytes: Bytes, content_type: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Full(Full::new(bytes)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn route(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = shared.tokens.authenticate(authorization)?;
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let non_resource = |shared: &Shared, user: &UserInfo, method: &Method| {
        let attrs = Attributes {
            verb: method.as_str().to_ascii_lowercase(),
            path: path.clone(),
            ..Attributes::default()
        };
        auth::authorize(&shared.store, user, &attrs)
    };
    let method = req.method().clone();
    match segments.as_slice() {
        ["healthz"] | ["livez"] | ["readyz"] => Ok(text_response("ok")),
        ["version"] => {
            non_resource(shared, &user, &method)?;
            Ok(json_response(StatusCode::OK, &version()))
        }
        ["api"] => {
            non_resource(shared, &user, &method)?;
            Ok(match discovery::negotiate(accept_header(&req)) {
                Some(v) => aggregated_response(&discovery::aggregated(true, v), v),
                None => json_response(StatusCode::OK, &discovery::api_versions()),
            })
        }
        ["apis"] => {
            non_resource(shared, &user, &method)?;
            Ok(match discovery::negotiate(accept_header(&req)) {
                Some(v) => aggregated_response(&discovery::aggregated(false, v), v),
                None => json_response(StatusCode::OK, &discovery::api_group_list()),
            })
        }
        ["apis", group] => {
            non_resource(shared, &user, &method)?;
            let document = discovery::api_group(group).ok_or_else(|| ApiError::no_route(&path))?;
            Ok(json_response(StatusCode::OK, &document))
        }
        ["api", version] | ["apis", _, version] => {
            non_resource(shared, &user, &method)?;
            let group = if segments[0] == "api" {
                ""
            } else {
                segments[1]
            };
            let list = discovery::resource_list(group, version)
                .ok_or_else(|| ApiError::no_route(&path))?;
            Ok(json_response(StatusCode::OK, &list))
        }
        ["openapi", "v2"] => {
            non_resource(shared, &user, &method)?;
            // client-go fetches v2 only as protobuf (kubectl's List path).
            if openapi::v2_wants_protobuf(accept_header(&req)) {
                return Ok(bytes_response(
                    Bytes::from(openapi::v2_protobuf()),
                    openapi::V2_PROTOBUF_CONTENT_TYPE,
                ));
            }
            Ok(json_response(StatusCode::OK, &openapi::v2()))
        }
        ["openapi", "v3"] => {
            non_resource(shared, &user, &method)?;
            Ok(json_response(StatusCode::OK, &openapi::v3_index()))
        }
        ["openapi", "v3", rest @ ..] => {
            non_resource(shared, &user, &method)?;
            let document = openapi::v3_document_bytes(&rest.join("/"))
                .ok_or_else(|| ApiError::no_route(&path))?;
            Ok(bytes_response(
                Bytes::from_static(document),
                "application/json",
            ))
        }
        ["api", version, rest @ ..] => {
            let version = version.to_string();
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            resource_request(shared, &user, req, "", &version, &rest).await
        }
        ["apis", group, version, rest @ ..] => {
            let (group, version) = (group.to_string(), version.to_string());
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            resource_request(shared, &user, req, &group, &version, &rest).await
        }
        _ => Err(ApiError::no_route(&path)),
    }
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "gitVersion": concat!("v1.34.0-strait.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

async fn read_body(req: Request<Incoming>) -> Result<(Value, Bytes, Option<String>), ApiError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::request_entity_too_large(format!(
                    "the request body is larger than {MAX_BODY} bytes"
                ))
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}"))
            }
        })?
        .to_bytes();
    let json = content_type
        .as_deref()
        .is_none_or(|c| c.starts_with("application/json") || c.contains("+json"));
    let value = if body.is_empty() {
        Value::Null
    } else if !json {
        // Protobuf and CBOR are not spoken here; client-go falls back to
        // JSON on 415.
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json, application/json-patch+json, application/merge-patch+json, \
             application/strategic-merge-patch+json (got {})",
            content_type.as_deref().unwrap_or("")
        )));
    } else if content_type.as_deref().is_some_and(|c| c.contains("patch")) {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?
    };
    Ok((value, body, content_type))
}

/// The object name RBAC sees: the URL's, or for a list or watch the one a
/// `metadata.name=` field selector pins (as kube-apiserver does, so that
/// `resourceNames` rules can allow watching one object).
fn rbac_name(target: &Target, query: &HashMap<String, String>) -> String {
    if !target.name.is_empty() {
        return target.name.clone();
    }
    query
        .get("fieldSelector")
        .and_then(|f| {
            let mut parts = f.split(',');
            let only = parts.next()?;
            if parts.next().is_some() {
                return None;
            }
            only.strip_prefix("metadata.name==")
                .or_else(|| only.strip_prefix("metadata.name="))
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// The verb RBAC sees.
fn verb(method: &Method, target: &Target, query: &HashMap<String, String>) -> &'static str {
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    match *method {
        Method::GET | Method::HEAD if target.name.is_empty() && watch => "watch",
        Method::GET | Method::HEAD if target.name.is_empty() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if target.name.is_empty() => "deletecollection",
        Method::DELETE => "delete",
        _ => "",
    }
}

fn list_options(target: &Target, query: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
    let flag = |k: &str| matches!(query.get(k).map(String::as_str), Some("true" | "1"));
    let limit = match query.get("limit") {
        None => None,
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("limit: invalid value {l:?}")))?,
        )
        .filter(|l| *l > 0),
    };
    Ok(ListOptions {
        namespace: (!target.namespace.is_empty()).then(|| target.namespace.clone()),
        label_selector: query
            .get("labelSelector")
            .filter(|s| !s.is_empty())
            .cloned(),
        field_selector: query
            .get("fieldSelector")
            .filter(|s| !s.is_empty())
            .cloned(),
        limit,
        continue_token: query.get("continue").filter(|s| !s.is_empty()).cloned(),
        resource_version: query
            .get("resourceVersion")
            .filter(|s| !s.is_empty())
            .cloned(),
        allow_bookmarks: flag("allowWatchBookmarks"),
        send_initial_events: flag("sendInitialEvents"),
    })
}

fn include_object(query: &HashMap<String, String>) -> Result<IncludeObject, ApiError> {
    IncludeObject::parse(query.get("includeObject").map(String::as_str))
}

async fn resource_request(
    shared: &Arc<Shared>,
    user: &UserInfo,
    req: Request<Incoming>,
    group: &str,
    version: &str,
    rest: &[String],
) -> Result<Response<ResponseBody>, ApiError> {
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let target = parse_target(group, version, &rest)?;
    let query = query(&req);
    let method = req.method().clone();
    let verb = verb(&method, &target, &query);
    if verb.is_empty() {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        )));
    }
    auth::authorize(
        &shared.store,
        user,
        &Attributes {
            verb: verb.into(),
            api_group: target.resource.group.into(),
            resource: target.resource.plural.into(),
            subresource: target
                .subresource
                .map(|s| s.name().to_owned())
                .unwrap_or_default(),
            namespace: target.namespace.clone(),
            name: rbac_name(&target, &query),
            path: String::new(),
        },
    )?;
    let table = wants_table(&req);
    let store = &shared.store;
    let resource = target.resource;
    match (verb, target.subresource) {
        ("watch", _) => watch(shared, &target, &query, table),
        ("list", _) => {
            let options = list_options(&target, &query)?;
            let list = store.list(resource, &options)?;
            if let Some(version) = table {
                let items: Vec<&Value> = list.items.iter().map(|v| v.as_ref()).collect();
                let options = TableOptions {
                    version,
                    include_object: include_object(&query)?,
                    headers: true,
                    now_unix: now_unix(),
                    resource_version: list.resource_version.to_string(),
                    continue_token: list.continue_token.clone(),
                    remaining_item_count: list.remaining_item_count,
                };
                return Ok(json_response(
                    StatusCode::OK,
                    &table::table(resource, &items, &options),
                ));
            }
            Ok(list_response(resource, &list))
        }
        ("get", Some(Subresource::Log)) => {
            // Exists and visible first: `pods "x" not found` as kube says it.
            store.get(resource, &target.namespace, &target.name)?;
            let logs = shared
                .logs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let logs = logs.ok_or_else(|| ApiError::bad_request("this server keeps no logs"))?;
            let text = logs
                .log(
                    &target.namespace,
                    &target.name,
                    query.get("container").map(String::as_str),
                )
                .map_err(ApiError::bad_request)?;
            let mut response = Response::new(ResponseBody::Full(Full::new(Bytes::from(text))));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok(response)
        }
        ("get", Some(Subresource::Scale)) => {
            let object = store.get(resource, &target.namespace, &target.name)?;
            Ok(json_response(StatusCode::OK, &scale_of(&object)))
        }
        ("get", _) => {
            let object = store.get(resource, &target.namespace, &target.name)?;
            if let Some(version) = table {
                let options = TableOptions {
                    version,
                    include_object: include_object(&query)?,
                    headers: true,
                    now_unix: now_unix(),
                    resource_version: String::new(),
                    continue_token: None,
                    remaining_item_count: None,
                };
                return Ok(json_response(
                    StatusCode::OK,
                    &table::table(resource, &[object.as_ref()], &options),
                ));
            }
            Ok(json_response(StatusCode::OK, &object))
        }
        ("create", _) => {
            let strict = field_validation(&query)?;
            let (object, _, _) = read_body(req).await?;
            if !object.is_object() {
                return Err(ApiError::bad_request("the body must be a JSON object"));
            }
            check_fields(resource, &object, strict)?;
            check_type(resource, &object)?;
            let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
            if dry_run {
                return Err(ApiError::bad_request(
                    "dryRun is not supported by this server",
                ));
            }
            let created = shared
                .with_write_context(|ctx| store.create(resource, &target.namespace, object, ctx))?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        ("update", Some(Subresource::Scale)) => {
            let (scale, _, _) = read_body(req).await?;
            let updated = write_scale(shared, &target, &mut |_| Ok(scale.clone()))?;
            Ok(json_response(StatusCode::OK, &updated))
        }
        ("update", sub) => {
            let strict = field_validation(&query)?;
            let (object, _, _) = read_body(req).await?;
            if !object.is_object() {
                return Err(ApiError::bad_request("the body must be a JSON object"));
            }
            check_fields(resource, &object, strict)?;
            check_type(resource, &object)?;
            check_name(&object, &target)?;
            let updated = shared.with_write_context(|ctx| {
                store.update(resource, &target.namespace, &target.name, object, sub, ctx)
            })?;
            Ok(json_response(StatusCode::OK, &updated))
        }
        ("patch", sub) => {
            let strict = field_validation(&query)?;
            let (_, body, content_type) = read_body(req).await?;
            let ty = content_type
                .as_deref()
                .and_then(PatchType::from_content_type)
                .ok_or_else(|| {
                    ApiError::unsupported_media_type(format!(
                        "the body of the request was in an unknown format - accepted media types include: \
                         application/json-patch+json, application/merge-patch+json, \
                         application/strategic-merge-patch+json (got {:?})",
                        content_type.as_deref().unwrap_or("")
                    ))
                })?;
            if ty == PatchType::Apply {
                return Err(ApiError::unsupported_media_type(
                    "server-side apply is not supported by this server; use client-side kubectl apply",
                ));
            }
            if sub == Some(Subresource::Scale) {
                let updated = write_scale(shared, &target, &mut |scale| {
                    patch::patch(resource, ty, scale, &body)
                })?;
                return Ok(json_response(StatusCode::OK, &updated));
            }
            let mut change = |old: &Value| {
                let patched = patch::patch(resource, ty, old, &body)?;
                check_fields(resource, &patched, strict)?;
                check_type(resource, &patched)?;
                check_name(&patched, &target)?;
                Ok(patched)
            };
            let updated = shared.with_write_context(|ctx| {
                store.modify(
                    resource,
                    &target.namespace,
                    &target.name,
                    sub,
                    &mut change,
                    ctx,
                )
            })?;
            Ok(json_response(StatusCode::OK, &updated))
        }
        ("delete", _) => {
            let options = delete_options(req, &query).await?;
            let deleted = shared.with_write_context(|ctx| {
                store.delete(resource, &target.namespace, &target.name, &options, ctx)
            })?;
            Ok(json_response(StatusCode::OK, &deleted))
        }
        ("deletecollection", _) => {
            let list_opts = list_options(&target, &query)?;
            let options = delete_options(req, &query).await?;
            let list = store.list(
                resource,
                &ListOptions {
                    limit: None,
                    continue_token: None,
                    ..list_opts
                },
            )?;
            let mut deleted = Vec::new();
            for item in &list.items {
                let meta = &item["metadata"];
                let (ns, name) = (
                    meta["namespace"].as_str().unwrap_or(""),
                    meta["name"].as_str().unwrap_or(""),
                );
                match shared
                    .with_write_context(|ctx| store.delete(resource, ns, name, &options, ctx))
                {
                    Ok(d) => deleted.push(d),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            let list = crate::store::List {
                items: deleted,
                resource_version: store.resource_version(),
                continue_token: None,
                remaining_item_count: None,
            };
            Ok(list_response(resource, &list))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

fn list_response(resource: &Resource, list: &crate::store::List) -> Response<ResponseBody> {
    // Written by hand: the items are shared, not copied into a new Value.
    let mut metadata = json!({"resourceVersion": list.resource_version.to_string()});
    if let Some(c) = &list.continue_token {
        metadata["continue"] = c.clone().into();
    }
    if let Some(r) = list.remaining_item_count {
        metadata["remainingItemCount"] = r.into();
    }
    let mut body = Vec::with_capacity(256 * list.items.len() + 128);
    body.extend_from_slice(
        format!(
            "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
            resource.kind,
            resource.api_version(),
            metadata
        )
        .as_bytes(),
    );
    for (i, item) in list.items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let _ = serde_json::to_writer(&mut body, item.as_ref());
    }
    body.extend_from_slice(b"]}");
    let mut response = Response::new(ResponseBody::Full(Full::new(Bytes::from(body))));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `fieldValidation`: `Strict` refuses unknown fields, `Warn` and `Ignore`
/// accept them (kube: Warn adds a warning header; not sent here).
fn field_validation(query: &HashMap<String, String>) -> Result<bool, ApiError> {
    match query.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Ignore") | Some("Warn") => Ok(false),
        Some("Strict") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation: invalid value {other:?}: must be one of Ignore, Warn, Strict"
        ))),
    }
}

fn check_fields(resource: &Resource, object: &Value, strict: bool) -> Result<(), ApiError> {
    if !strict {
        return Ok(());
    }
    let unknown = crate::admission::unknown_fields(resource, object);
    if unknown.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    Err(ApiError::bad_request(format!(
        "strict decoding error: {}",
        listed.join(", ")
    )))
}

/// The body's apiVersion and kind, when given, must be the resource's.
fn check_type(resource: &Resource, object: &Value) -> Result<(), ApiError> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    if (!api_version.is_empty() && api_version != resource.api_version())
        || (!kind.is_empty() && kind != resource.kind)
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) and kind ({kind}) do not match the \
             expected {} {}",
            resource.api_version(),
            resource.kind
        )));
    }
    Ok(())
}

/// A PUT or PATCH may not rename the object.
fn check_name(object: &Value, target: &Target) -> Result<(), ApiError> {
    match object.pointer("/metadata/name").and_then(Value::as_str) {
        Some(name) if name != target.name => Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            target.name
        ))),
        _ => Ok(()),
    }
}

async fn delete_options(
    req: Request<Incoming>,
    query: &HashMap<String, String>,
) -> Result<DeleteOptions, ApiError> {
    let (body, _, _) = read_body(req).await?;
    let grace = |v: Option<&Value>| v.and_then(Value::as_i64);
    let mut options = DeleteOptions {
        grace_period_seconds: grace(body.get("gracePeriodSeconds")),
        precondition_resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned),
        precondition_uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    if let Some(g) = query.get("gracePeriodSeconds") {
        options.grace_period_seconds = Some(g.parse().map_err(|_| {
            ApiError::bad_request(format!("gracePeriodSeconds: invalid value {g:?}"))
        })?);
    }
    Ok(options)
}

/// The `autoscaling/v1` `Scale` of a Deployment.
fn scale_of(object: &Value) -> Value {
    let meta = &object["metadata"];
    let labels = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": labels,
        },
    })
}

/// Change a Deployment through its Scale: `change` maps the current Scale
/// to the new one; a stale resourceVersion in it is a conflict.
fn write_scale(
    shared: &Shared,
    target: &Target,
    change: &mut dyn FnMut(&Value) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    let resource = target.resource;
    let mut apply = |old: &Value| {
        let scale = change(&scale_of(old))?;
        let wanted_rv = scale
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        let current_rv = old
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        if wanted_rv.is_some_and(|w| Some(w) != current_rv) {
            return Err(ApiError::conflict(resource, &target.name));
        }
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .filter(|r| (0..=i32::MAX as i64).contains(r))
            .ok_or_else(|| {
                ApiError::invalid(
                    resource,
                    &target.name,
                    vec![crate::error::Cause {
                        reason: "FieldValueInvalid".into(),
                        message: "Invalid value: must be greater than or equal to 0".into(),
                        field: "spec.replicas".into(),
                    }],
                )
            })?;
        let mut new = old.clone();
        new["spec"]["replicas"] = replicas.into();
        Ok(new)
    };
    let updated = shared.with_write_context(|ctx| {
        shared.store.modify(
            resource,
            &target.namespace,
            &target.name,
            None,
            &mut apply,
            ctx,
        )
    })?;
    Ok(scale_of(&updated))
}

/// Serve a watch: one JSON event per line, streamed as events come.
fn watch(
    shared: &Arc<Shared>,
    target: &Target,
    query: &HashMap<String, String>,
    table: Option<TableVersion>,
) -> Result<Response<ResponseBody>, ApiError> {
    let options = list_options(target, query)?;
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        // No later than the default: a huge value must not overflow the deadline.
        .map_or(DEFAULT_WATCH_TIMEOUT, |t| t.min(DEFAULT_WATCH_TIMEOUT));
    let include = include_object(query)?;
    let mut watch = match shared.store.watch(target.resource, &options) {
        Ok(watch) => watch,
        // As kube-apiserver (its cacher's error watcher): once the request
        // is authorized and its version parsed, a version too old is the
        // watch's one `ERROR` event, under HTTP 200, not an HTTP 410. It is
        // on that event that clients list again: kube-rs's watcher retries
        // an HTTP 410 at watch start from the same version, forever.
        Err(e) if e.code == 410 => {
            let mut line = br#"{"type":"ERROR","object":"#.to_vec();
            let _ = serde_json::to_writer(&mut line, &e.status());
            line.extend_from_slice(b"}\n");
            let mut response = Response::new(ResponseBody::Full(Full::new(Bytes::from(line))));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Ok(response);
        }
        Err(e) => return Err(e),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let resource = target.resource;
    let bookmarks = options.allow_bookmarks;
    let store = shared.store.clone();
    tokio::spawn(async move {
        let mut encoder = Encoder {
            resource,
            table,
            include,
            headers_sent: false,
        };
        for event in std::mem::take(&mut watch.backlog) {
            if tx.send(encoder.encode(&event)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        enum Next {
            Event(Event),
            Bookmark,
            End,
        }
        loop {
            let next = tokio::select! {
                e = watch.live.recv() => match e {
                    Some(e) => Next::Event(e),
                    // Fell behind or the store closed it: the client re-watches.
                    None => Next::End,
                },
                _ = tick.tick(), if bookmarks => Next::Bookmark,
                _ = tokio::time::sleep_until(deadline) => Next::End,
                _ = tx.closed() => Next::End,
            };
            let event = match next {
                Next::Event(e) => e,
                // Only with nothing queued: a bookmark never overtakes an event.
                Next::Bookmark => match store.bookmark_for(resource, &watch) {
                    Some(b) => b,
                    None => continue,
                },
                Next::End => return,
            };
            if tx.send(encoder.encode(&event)).await.is_err() || event.kind == EventType::Error {
                return;
            }
        }
    });
    let mut response = Response::new(ResponseBody::Stream(rx));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// Encodes watch events for one watcher (objects, or Table rows).
struct Encoder {
    resource: &'static Resource,
    table: Option<TableVersion>,
    include: IncludeObject,
    headers_sent: bool,
}

impl Encoder {
    fn encode(&mut self, event: &Event) -> Bytes {
        let mut line = Vec::with_capacity(512);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(event.kind.as_str().as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        // Bookmarks and errors are sent as they are, never as Table rows.
        let plain = matches!(event.kind, EventType::Bookmark | EventType::Error);
        if let (Some(version), false) = (self.table, plain) {
            let options = TableOptions {
                version,
                include_object: self.include,
                headers: !self.headers_sent,
                now_unix: now_unix(),
                resource_version: event.resource_version.to_string(),
                continue_token: None,
                remaining_item_count: None,
            };
            self.headers_sent = true;
            let t = table::table(self.resource, &[event.object.as_ref()], &options);
            let _ = serde_json::to_writer(&mut line, &t);
        } else {
            let _ = serde_json::to_writer(&mut line, event.object.as_ref());
        }
        line.extend_from_slice(b"}\n");
        Bytes::from(line)
    }
}
