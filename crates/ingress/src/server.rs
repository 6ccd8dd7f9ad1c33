//! The data plane: HTTP/1.1 (and HTTPS, certificates by SNI) in, requests
//! straight to the endpoints the route table names, over keep-alive
//! connections kept per worker and per endpoint.
//!
//! Each worker is one thread with a single-threaded runtime: a connection,
//! its requests and the backend connections they use stay on one core, with
//! no locks on the way (the pool and the table cache are the worker's own).
//! The route table is swapped whole (an `Arc` behind a lock, read by a
//! worker only when the generation counter says it changed): a new table is
//! served from the next request on, without closing any connection.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::{Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1 as client;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{spawn_local, LocalSet};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::gateway::{Decision, Reply, RequestHead};
use crate::plan::RouteTable;
use crate::tls::Certificates;
use crate::{Error, Result};

/// What the response body is: the endpoint's, passed through, or one of
/// ours (an error page).
pub type Body = Either<Incoming, Full<Bytes>>;

/// Where and how the data plane serves.
#[derive(Clone, Debug)]
pub struct Config {
    /// Plain HTTP.
    pub http: Option<SocketAddr>,
    /// HTTPS, with the route table's certificates.
    pub https: Option<SocketAddr>,
    /// Worker threads (each a single-threaded runtime).
    pub workers: usize,
    /// How long a connection to an endpoint may take before the request
    /// is answered 502.
    pub connect_timeout: Duration,
    /// Connections kept per endpoint and worker.
    pub max_idle_per_endpoint: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            http: None,
            https: None,
            workers: 1,
            connect_timeout: Duration::from_secs(5),
            max_idle_per_endpoint: 1024,
        }
    }
}

/// What every worker reads.
#[derive(Debug)]
struct Shared {
    /// Bumped on every swap: a worker re-reads `table` only when it moved.
    generation: AtomicU64,
    table: RwLock<Arc<RouteTable>>,
    certificates: RwLock<Arc<Certificates>>,
}

/// The running data plane. Dropping it stops the workers (their
/// connections are closed).
pub struct IngressServer {
    pub http_address: Option<SocketAddr>,
    pub https_address: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl IngressServer {
    /// Listen and serve `table`; returns the problems of its certificates
    /// (those left out) with the server.
    pub fn start(config: Config, table: RouteTable) -> Result<(IngressServer, Vec<String>)> {
        let (certificates, problems) = Certificates::load(&table.certificates);
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            table: RwLock::new(Arc::new(table)),
            certificates: RwLock::new(Arc::new(certificates)),
        });
        let http = config.http.map(listen).transpose()?;
        let https = config.https.map(listen).transpose()?;
        let tls = match &https {
            Some(_) => Some(acceptor(shared.clone())?),
            None => None,
        };
        let address = |l: &Option<std::net::TcpListener>| -> Result<Option<SocketAddr>> {
            l.as_ref()
                .map(|l| l.local_addr())
                .transpose()
                .map_err(Error::Worker)
        };
        let (http_address, https_address) = (address(&http)?, address(&https)?);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut threads = Vec::new();
        for i in 0..config.workers.max(1) {
            let clone = |l: &Option<std::net::TcpListener>| {
                l.as_ref()
                    .map(|l| l.try_clone())
                    .transpose()
                    .map_err(Error::Worker)
            };
            let (http, https) = (clone(&http)?, clone(&https)?);
            let (shared, tls, config, stopped) =
                (shared.clone(), tls.clone(), config.clone(), stopped.clone());
            let thread = std::thread::Builder::new()
                .name(format!("ingress-{i}"))
                .spawn(move || worker(shared, config, http, https, tls, stopped))
                .map_err(Error::Worker)?;
            threads.push(thread);
        }
        Ok((
            IngressServer {
                http_address,
                https_address,
                shared,
                stop: Some(stop),
                threads,
            },
            problems,
        ))
    }

    /// Serve `table` from the next request on; returns the problems of its
    /// certificates. Open connections stay open.
    pub fn swap(&self, table: RouteTable) -> Vec<String> {
        swap(&self.shared, table)
    }

    /// The table served now.
    pub fn table(&self) -> Arc<RouteTable> {
        self.shared
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn swap(shared: &Shared, table: RouteTable) -> Vec<String> {
    let (certificates, problems) = Certificates::load(&table.certificates);
    *shared
        .certificates
        .write()
        .unwrap_or_else(|e| e.into_inner()) = Arc::new(certificates);
    *shared.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    shared.generation.fetch_add(1, Ordering::Release);
    problems
}

impl Drop for IngressServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A listening socket with a backlog for bursts of connections (std's is
/// 128: a benchmark's 256 connections at once would wait for SYN retries).
fn listen(address: SocketAddr) -> Result<std::net::TcpListener> {
    let fail = |source| Error::Listen { address, source };
    // tokio's socket builder registers with a runtime: a throwaway one, on
    // a thread of its own (the caller may be inside a runtime already).
    std::thread::scope(|scope| {
        scope
            .spawn(|| listen_in_runtime(address))
            .join()
            .unwrap_or_else(|_| Err(fail(std::io::Error::other("the listening thread panicked"))))
    })
}

fn listen_in_runtime(address: SocketAddr) -> Result<std::net::TcpListener> {
    let fail = |source| Error::Listen { address, source };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(fail)?;
    rt.block_on(async {
        let socket = match address {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(fail)?;
        socket.set_reuseaddr(true).map_err(fail)?;
        socket.bind(address).map_err(fail)?;
        let listener = socket.listen(4096).map_err(fail)?;
        listener.into_std().map_err(fail)
    })
}

fn acceptor(shared: Arc<Shared>) -> Result<TlsAcceptor> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(shared)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Picks the certificate of the table served now.
#[derive(Debug)]
struct BySni(Arc<Shared>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certificates = self
            .0
            .certificates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        certificates.choose(hello.server_name())
    }
}

fn worker(
    shared: Arc<Shared>,
    config: Config,
    http: Option<std::net::TcpListener>,
    https: Option<std::net::TcpListener>,
    tls: Option<TlsAcceptor>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("ingress worker cannot start its runtime: {e}");
            return;
        }
    };
    let local = LocalSet::new();
    local.block_on(&rt, async move {
        let table = shared
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut server = server::Builder::new();
        server
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
        let worker = Rc::new(Worker {
            cached: RefCell::new((shared.generation.load(Ordering::Acquire), table)),
            shared,
            pool: RefCell::new(HashMap::new()),
            server,
            config,
        });
        for (listener, tls) in [(http, None), (https, tls)] {
            let Some(listener) = listener else { continue };
            match TcpListener::from_std(listener) {
                Ok(l) => {
                    spawn_local(accept(l, worker.clone(), tls));
                }
                Err(e) => tracing::error!("ingress worker cannot use its listener: {e}"),
            }
        }
        // Until the server is dropped; then the tasks go with the runtime.
        let _ = stopped.wait_for(|stop| *stop).await;
    });
}

async fn accept(listener: TcpListener, worker: Rc<Worker>, tls: Option<TlsAcceptor>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, mostly: wait rather than spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let worker = worker.clone();
        match &tls {
            None => {
                spawn_local(worker.serve(stream, peer, false));
            }
            Some(tls) => {
                let tls = tls.clone();
                spawn_local(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), tls.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => worker.serve(stream, peer, true).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// One worker's state: its view of the table and its idle connections.
struct Worker {
    shared: Arc<Shared>,
    /// (generation, table) last read.
    cached: RefCell<(u64, Arc<RouteTable>)>,
    pool: RefCell<HashMap<SocketAddr, VecDeque<client::SendRequest<Incoming>>>>,
    server: server::Builder,
    config: Config,
}

/// The peer of a connection.
struct Client {
    ip: IpAddr,
    /// `ip` as X-Forwarded-For says it.
    header: Option<HeaderValue>,
}

impl Worker {
    async fn serve<IO>(self: Rc<Self>, io: IO, peer: SocketAddr, https: bool)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
    {
        let this = self.clone();
        // The client's address as a header value, made once per connection.
        let client = Rc::new(Client {
            ip: peer.ip(),
            header: HeaderValue::from_str(&peer.ip().to_string()).ok(),
        });
        let service = service_fn(move |req| {
            let (this, client) = (this.clone(), client.clone());
            async move { Ok::<_, Infallible>(this.handle(req, &client, https).await) }
        });
        if let Err(e) = self
            .server
            .serve_connection(TokioIo::new(io), service)
            .await
        {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    }

    /// The table served now, read again only after a swap.
    fn table(&self) -> Arc<RouteTable> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        let mut cached = self.cached.borrow_mut();
        if cached.0 != generation {
            let table = self
                .shared
                .table
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            *cached = (generation, table);
        }
        cached.1.clone()
    }

    async fn handle(
        self: Rc<Self>,
        req: Request<Incoming>,
        client: &Client,
        https: bool,
    ) -> Response<Body> {
        let table = self.table();
        let (mut parts, body) = req.into_parts();
        // The one lookup: request head → decision (crate::gateway).
        let host = host_of(&parts.headers, &parts.uri);
        let head = RequestHead {
            host: &host,
            path: parts.uri.path(),
            query: parts.uri.query(),
            method: parts.method.as_str(),
            headers: &parts.headers,
            https,
            listener_port: 0,
        };
        let forward = match table.decide(&head) {
            Decision::NotFound => {
                return error(StatusCode::NOT_FOUND, "no route for this host and path\n")
            }
            Decision::Reply(reply) => return own_reply(&reply),
            Decision::Forward(f) => f,
        };
        let Some(endpoint) = forward.backend.pick() else {
            tracing::debug!(backend = forward.backend.name, "no endpoints");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no endpoint ready for this route\n",
            );
        };
        let new_path = forward.rewritten_path(&head);
        let mirrors = forward.mirrors();
        drop(host);
        forward.apply_request_headers(&mut parts.headers);
        if let Some(path) = new_path {
            if let Ok(uri) = path.parse::<Uri>() {
                parts.uri = uri;
            }
        }
        for mirror in mirrors {
            if let Some(endpoint) = mirror.pick() {
                spawn_local(send_mirror(
                    endpoint,
                    parts.clone(),
                    self.config.connect_timeout,
                ));
            }
        }
        let req = upstream_request(Request::from_parts(parts, body), client, https);
        let sent = self.forward(endpoint, req);
        let result = match forward.timeout() {
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(r) => r,
                Err(_) => {
                    return error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the route's timeout passed before the endpoint answered\n",
                    )
                }
            },
            None => sent.await,
        };
        match result {
            Ok(mut response) => {
                strip_hop_by_hop(response.headers_mut());
                forward.apply_response(response.headers_mut());
                response.map(Either::Left)
            }
            Err(why) => {
                tracing::debug!(%endpoint, "{why}");
                error(
                    StatusCode::BAD_GATEWAY,
                    "the endpoint could not be reached\n",
                )
            }
        }
    }

    /// Send on an idle connection to `endpoint`, else a new one; a request
    /// that an idle connection could not take (it was closing) is sent
    /// again on a new one — it never reached the endpoint.
    async fn forward(
        self: &Rc<Self>,
        endpoint: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, String> {
        let mut sender = match self.idle(endpoint) {
            Some(s) => s,
            None => self.connect(endpoint).await?,
        };
        let response = match sender.try_send_request(req).await {
            Ok(r) => r,
            Err(mut e) => match e.take_message() {
                Some(req) => {
                    sender = self.connect(endpoint).await?;
                    sender
                        .send_request(req)
                        .await
                        .map_err(|e| format!("request failed: {e}"))?
                }
                None => return Err(format!("request failed: {}", e.into_error())),
            },
        };
        // Back to the pool at once, busy until the response has been read
        // to its end (HTTP/1: one request at a time per connection); the
        // pool skips it until then. (Waiting for it in a task of its own
        // cost a task per request: measurably more CPU per request.)
        let mut pool = self.pool.borrow_mut();
        let idle = pool.entry(endpoint).or_default();
        if idle.len() < self.config.max_idle_per_endpoint {
            idle.push_back(sender);
        }
        Ok(response)
    }

    /// A connection to `endpoint` that can take a request now: the oldest
    /// first (the likeliest to have finished its last response); closed
    /// ones are dropped, busy ones kept for later. A few tries, then a new
    /// connection is cheaper than a longer search.
    fn idle(&self, endpoint: SocketAddr) -> Option<client::SendRequest<Incoming>> {
        let mut pool = self.pool.borrow_mut();
        let idle = pool.get_mut(&endpoint)?;
        for _ in 0..idle.len().min(4) {
            let sender = idle.pop_front()?;
            if sender.is_closed() {
                continue;
            }
            if sender.is_ready() {
                return Some(sender);
            }
            idle.push_back(sender);
        }
        None
    }

    async fn connect(&self, endpoint: SocketAddr) -> Result<client::SendRequest<Incoming>, String> {
        let stream =
            tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(endpoint))
                .await
                .map_err(|_| {
                    format!(
                        "connecting timed out after {:?}",
                        self.config.connect_timeout
                    )
                })?
                .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = client::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
        spawn_local(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%endpoint, "endpoint connection ended: {e}");
            }
        });
        Ok(sender)
    }
}

/// The request's host: the Host header (or the authority of an
/// absolute-form target), lower case, without port or trailing dot.
fn host_of<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> std::borrow::Cow<'a, str> {
    let raw = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    let without_port = if raw.starts_with('[') {
        // An IPv6 literal: `[::1]:8080`.
        raw.split_once(']')
            .map_or(raw, |(h, _)| &raw[..h.len() + 1])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    let host = without_port.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The request as the endpoint gets it: origin-form target, HTTP/1.1,
/// without hop-by-hop headers, with X-Forwarded-For/-Proto/-Host.
fn upstream_request(req: Request<Incoming>, client: &Client, https: bool) -> Request<Incoming> {
    let (mut parts, body) = req.into_parts();
    if let Some(authority) = parts.uri.authority().cloned() {
        if !parts.headers.contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = path
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
    }
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    let forwarded_for = match parts.headers.get(&X_FORWARDED_FOR) {
        Some(earlier) => earlier
            .to_str()
            .ok()
            .and_then(|e| HeaderValue::from_str(&format!("{e}, {}", client.ip)).ok()),
        None => client.header.clone(),
    };
    // An earlier value that is not text is replaced, not passed on.
    match forwarded_for {
        Some(v) => parts.headers.insert(X_FORWARDED_FOR.clone(), v),
        None => parts.headers.remove(&X_FORWARDED_FOR),
    };
    parts.headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    if !parts.headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(host) = parts.headers.get(header::HOST).cloned() {
            parts.headers.insert(X_FORWARDED_HOST.clone(), host);
        }
    }
    Request::from_parts(parts, body)
}

/// Headers about one connection (RFC 9110 7.6.1), not the message: never
/// passed on. (Upgrade is among them: WebSockets are not proxied yet.)
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(listed) = headers.get(header::CONNECTION).cloned() {
        if let Ok(listed) = listed.to_str() {
            for name in listed.split(',') {
                let name = name.trim();
                if !name.is_empty() {
                    headers.remove(name);
                }
            }
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// A reply of the route table's own: a redirect (with its Location) or an
/// error for an invalid backend share.
fn own_reply(reply: &Reply) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(reply.message.clone()))));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(location) = reply.location.as_deref() {
        if let Ok(v) = HeaderValue::from_str(location) {
            response.headers_mut().insert(header::LOCATION, v);
        }
    }
    response
}

/// RequestMirror: a copy of the request head (without its body, which is
/// streamed to the real backend only) sent to a mirror; its answer is
/// dropped. On a connection of its own: mirrors are rare and must not
/// take the pool's connections.
async fn send_mirror(endpoint: SocketAddr, parts: hyper::http::request::Parts, limit: Duration) {
    let attempt = async {
        let stream = TcpStream::connect(endpoint).await.ok()?;
        let (mut sender, connection) = client::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .ok()?;
        spawn_local(async move {
            let _ = connection.await;
        });
        let mut parts = parts;
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::CONTENT_LENGTH);
        let req = Request::from_parts(parts, Full::new(Bytes::new()));
        sender.send_request(req).await.ok()
    };
    let _ = tokio::time::timeout(limit, attempt).await;
}

fn error(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        message.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
