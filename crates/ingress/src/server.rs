//! The data plane: HTTP/1.1 and HTTP/2 (HTTPS with certificates by SNI and
//! ALPN, h2c with prior knowledge on cleartext) in, requests straight to
//! the endpoints the route table names, over keep-alive HTTP/1.1
//! connections kept per worker and per endpoint.
//!
//! HTTP/1.1 is proxied by our own loop (`h1`): one task per client
//! connection. HTTP/2 is served by hyper, each stream forwarded over
//! hyper's HTTP/1.1 client connections.
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

use std::cell::Cell;
use std::time::Instant;

use http_body_util::{Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1 as client;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{spawn_local, LocalSet};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::gateway::{self, HeaderModifier, Reply, RequestHead};
use crate::h1;
use crate::metrics::Metrics;
use crate::plan::{Backend, RouteTable};
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
    /// From a request's head to its response's head, at most (then 504).
    pub request_timeout: Duration,
    /// How long the rest of a request head may take once it has begun.
    pub header_read_timeout: Duration,
    /// How long a kept-alive client connection may wait for a request.
    pub keep_alive_timeout: Duration,
    /// Tries of a request: the first, and those of [`Worker`]'s safe
    /// retries (another endpoint after a refused connection; a kept-alive
    /// connection closed under an idempotent request).
    pub max_attempts: u32,
    pub balance: Balance,
    /// One line per request on standard output.
    pub access_log: bool,
    /// Prometheus metrics, served on their own address.
    pub metrics: Option<SocketAddr>,
}

/// How an endpoint of a backend is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    /// In turn (the backend's counter, shared by the workers).
    #[default]
    RoundRobin,
    /// Of two endpoints drawn at random, the one with fewer requests in
    /// flight from this worker ("power of two choices").
    LeastRequest,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            http: None,
            https: None,
            workers: 1,
            connect_timeout: Duration::from_secs(5),
            max_idle_per_endpoint: 1024,
            request_timeout: Duration::from_secs(60),
            header_read_timeout: crate::h1::HEADER_READ_TIMEOUT,
            keep_alive_timeout: crate::h1::KEEP_ALIVE_TIMEOUT,
            max_attempts: 3,
            balance: Balance::RoundRobin,
            access_log: false,
            metrics: None,
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
    metrics: Option<Arc<Metrics>>,
}

/// The running data plane. Dropping it stops the workers (their
/// connections are closed).
pub struct IngressServer {
    pub http_address: Option<SocketAddr>,
    pub https_address: Option<SocketAddr>,
    pub metrics_address: Option<SocketAddr>,
    metrics_server: Option<crate::metrics::MetricsServer>,
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
            metrics: config.metrics.map(|_| Arc::new(Metrics::new())),
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
        let metrics_address = match (config.metrics, &shared.metrics) {
            (Some(address), Some(metrics)) => {
                Some(crate::metrics::serve(address, metrics.clone())?)
            }
            _ => None,
        };
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
                metrics_address: metrics_address.as_ref().map(|m| m.address),
                metrics_server: metrics_address,
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
        drop(self.metrics_server.take());
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
    use tokio_rustls::rustls::CipherSuite;
    // AES-128-GCM with SHA-256 first, whatever the client lists first:
    // TLS 1.3's key schedule is a score of HMACs of the suite's hash, and
    // ring computes SHA-256 with the CPU's SHA extensions but SHA-384 in
    // software (a sixth of a handshake's CPU with AES-256-GCM-SHA384,
    // which OpenSSL clients list first). AES-128-GCM is the suite every
    // TLS 1.3 implementation must have.
    let mut provider = tokio_rustls::rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(shared)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    // Resumption by stateless tickets (keys random per process, rotated
    // every 6 hours), as nginx and haproxy do by default: rustls' default
    // is a cache of 256 sessions, which many clients overrun, and then
    // each of them pays a full handshake again.
    config.ticketer = tokio_rustls::rustls::crypto::ring::Ticketer::new()
        .map_err(|e| Error::Tls(e.to_string()))?;
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
        let mut h2 = http2::Builder::new(LocalExec);
        h2.timer(TokioTimer::new());
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            ^ (std::thread::current().id().as_u64_lossy() << 32);
        let worker = Rc::new(Worker {
            cached: RefCell::new((shared.generation.load(Ordering::Acquire), table)),
            shared,
            pool: RefCell::new(HashMap::new()),
            raw_pool: RefCell::new(HashMap::new()),
            served: RefCell::new(std::collections::HashSet::new()),
            in_flight: RefCell::new(HashMap::new()),
            random: Cell::new(seed | 1),
            h2,
            config,
        });
        worker.drain_removed(&worker.cached.borrow().1);
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

/// A number from the thread's id, to seed each worker differently.
trait ThreadIdBits {
    fn as_u64_lossy(&self) -> u64;
}

impl ThreadIdBits for std::thread::ThreadId {
    fn as_u64_lossy(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// Runs hyper's HTTP/2 stream tasks on the worker's own thread (they hold
/// the worker's `Rc`).
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
{
    fn execute(&self, future: F) {
        spawn_local(future);
    }
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
                spawn_local(worker.serve_cleartext(stream, peer));
            }
            Some(tls) => {
                let tls = tls.clone();
                spawn_local(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), tls.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            if h2 {
                                worker.serve_h2(stream, peer, true).await
                            } else {
                                let conn = h1::Conn::new(stream);
                                h1::serve(worker, conn, peer, true).await
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// One worker's state: its view of the table and its idle connections.
pub(crate) struct Worker {
    shared: Arc<Shared>,
    /// (generation, table) last read.
    cached: RefCell<(u64, Arc<RouteTable>)>,
    /// hyper's endpoint connections, for HTTP/2 clients.
    pool: RefCell<HashMap<SocketAddr, VecDeque<client::SendRequest<Incoming>>>>,
    /// Idle endpoint connections of the HTTP/1.1 loop, the warmest last.
    raw_pool: RefCell<HashMap<SocketAddr, Vec<h1::Upstream>>>,
    /// The endpoints of the table last read: only theirs are kept idle.
    served: RefCell<std::collections::HashSet<SocketAddr>>,
    /// Requests in flight by endpoint (least-request balancing only).
    in_flight: RefCell<HashMap<SocketAddr, u32>>,
    /// xorshift state, for the two random choices.
    random: Cell<u64>,
    h2: http2::Builder<LocalExec>,
    pub(crate) config: Config,
}

/// The peer of a connection.
struct Client {
    ip: IpAddr,
    /// `ip` as X-Forwarded-For says it.
    header: Option<HeaderValue>,
}

/// Where a request goes: the one answer the data plane asks of the route
/// table, per request.
pub(crate) enum Decision {
    NoRoute,
    NoEndpoints(Arc<Backend>),
    /// The endpoint, its backend, and what a Gateway API rule changes on
    /// the way (`None`: the request passes as it came, the fast path).
    Endpoint(SocketAddr, Arc<Backend>, Option<Box<Edits>>),
    /// A reply of ours that a Gateway API rule asks for (a redirect, the
    /// 500 of an invalid backend share).
    Reply(Reply),
}

/// What a Gateway API rule changes of one forwarded request, owned (the
/// table may be swapped while the request is in flight).
#[derive(Default)]
pub(crate) struct Edits {
    /// The request headers as the endpoint gets them, when a
    /// RequestHeaderModifier or a URLRewrite hostname changes them (before
    /// the hop-by-hop headers are taken out and X-Forwarded-* put in).
    pub headers: Option<HeaderMap>,
    /// URLRewrite's new path, with the query.
    pub target: Option<String>,
    /// ResponseHeaderModifiers, in order.
    pub response: Vec<HeaderModifier>,
    /// The rule's timeout (the shorter of it and `--request-timeout`
    /// applies).
    pub timeout: Option<Duration>,
    /// Endpoints that get a copy of the request (RequestMirror).
    pub mirrors: Vec<SocketAddr>,
}

impl Edits {
    fn is_empty(&self) -> bool {
        self.headers.is_none()
            && self.target.is_none()
            && self.response.is_empty()
            && self.timeout.is_none()
            && self.mirrors.is_empty()
    }

    /// The response headers as the client gets them.
    pub fn apply_response(&self, headers: &mut HeaderMap) {
        for m in &self.response {
            m.apply(headers);
        }
    }
}

/// What a request is routed by.
pub(crate) struct Head<'a> {
    pub method: &'a str,
    /// Lower case, without port or trailing dot.
    pub host: &'a str,
    /// Without the query.
    pub path: &'a str,
    /// After the `?`, if any.
    pub query: Option<&'a str>,
    pub https: bool,
    pub headers: Headers<'a>,
}

/// A request's headers, as either protocol parsed them.
pub(crate) enum Headers<'a> {
    H1(&'a [httparse::Header<'a>]),
    Hyper(&'a HeaderMap),
}

impl Headers<'_> {
    /// As a `HeaderMap` (built only for Gateway API matches and filters;
    /// a header hyper's types cannot hold is left out).
    fn to_map(&self) -> std::borrow::Cow<'_, HeaderMap> {
        match self {
            Headers::Hyper(h) => std::borrow::Cow::Borrowed(*h),
            Headers::H1(list) => {
                let mut map = HeaderMap::with_capacity(list.len());
                for h in list.iter() {
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(h.name.as_bytes()),
                        HeaderValue::from_bytes(h.value),
                    ) {
                        map.append(n, v);
                    }
                }
                std::borrow::Cow::Owned(map)
            }
        }
    }
}

impl Worker {
    /// A cleartext connection: HTTP/1.1, or HTTP/2 if it opens with the
    /// HTTP/2 preface (h2c with prior knowledge).
    async fn serve_cleartext(self: Rc<Self>, stream: TcpStream, peer: SocketAddr) {
        let mut conn = h1::Conn::new(stream);
        loop {
            let seen = conn.buffered();
            if !seen.is_empty() && !h1::looks_like_h2(seen) {
                break;
            }
            if seen.len() >= h1::H2_PREFACE.len() {
                let (stream, rest) = conn.into_parts();
                self.serve_h2(Prefixed::new(rest, stream), peer, false)
                    .await;
                return;
            }
            match tokio::time::timeout(self.config.header_read_timeout, conn.fill()).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
        h1::serve(self, conn, peer, false).await
    }

    async fn serve_h2<IO>(self: Rc<Self>, io: IO, peer: SocketAddr, https: bool)
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
        if let Err(e) = self.h2.serve_connection(TokioIo::new(io), service).await {
            tracing::debug!(%peer, "HTTP/2 connection ended: {e}");
        }
    }

    /// Route on the table served now, reading it again only after a swap
    /// (then idle connections to endpoints it no longer names are closed:
    /// requests in flight to them finish, no new one goes there).
    pub(crate) fn decide(&self, head: &Head<'_>) -> Decision {
        self.refresh();
        let cached = self.cached.borrow();
        let table = &cached.1;
        if !table.gateway.is_empty() {
            return self.decide_gateway(table, head);
        }
        // The fast path: Ingress rules only, no header map built.
        match table.route(head.host, head.path) {
            None => Decision::NoRoute,
            Some(backend) => match self.pick(backend) {
                Some(endpoint) => Decision::Endpoint(endpoint, backend.clone(), None),
                None => Decision::NoEndpoints(backend.clone()),
            },
        }
    }

    /// Read the table again if a swap bumped the generation (then idle
    /// connections to endpoints it no longer names are closed).
    fn refresh(&self) {
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
            self.drain_removed(&cached.1);
        }
    }

    /// Whether the table served now names `endpoint`.
    pub(crate) fn serves(&self, endpoint: SocketAddr) -> bool {
        self.refresh();
        self.served.borrow().contains(&endpoint)
    }

    /// Gateway API listeners for the hosts they cover, then the Ingress
    /// rules (`RouteTable::decide`), with the rule's edits made owned.
    fn decide_gateway(&self, table: &RouteTable, head: &Head<'_>) -> Decision {
        let headers = head.headers.to_map();
        let request = RequestHead {
            host: head.host,
            path: head.path,
            query: head.query,
            method: head.method,
            headers: &headers,
            https: head.https,
            listener_port: 0,
        };
        let forward = match table.decide(&request) {
            gateway::Decision::NotFound => return Decision::NoRoute,
            gateway::Decision::Reply(r) => return Decision::Reply(r),
            gateway::Decision::Forward(f) => f,
        };
        let backend = forward.backend;
        let Some(endpoint) = self.pick(backend) else {
            return Decision::NoEndpoints(backend.clone());
        };
        let filters: Vec<&gateway::Filters> =
            [forward.action.map(|a| &a.filters), forward.backend_filters]
                .into_iter()
                .flatten()
                .collect();
        let mut edits = Edits {
            timeout: forward.timeout(),
            target: forward.rewritten_path(&request),
            ..Edits::default()
        };
        if filters
            .iter()
            .any(|f| f.request_headers.is_some() || f.rewrite_host.is_some())
        {
            let mut edited = headers.into_owned();
            forward.apply_request_headers(&mut edited);
            edits.headers = Some(edited);
        }
        edits.response = filters
            .iter()
            .filter_map(|f| f.response_headers.clone())
            .collect();
        edits.mirrors = forward
            .mirrors()
            .into_iter()
            .filter_map(|b| self.pick(b))
            .collect();
        let edits = (!edits.is_empty()).then(|| Box::new(edits));
        Decision::Endpoint(endpoint, backend.clone(), edits)
    }

    /// Send a copy of a request head (one without a body) to a mirror
    /// endpoint, in a task of its own: its answer is read and dropped, its
    /// failure only logged, and the client never waits for it.
    pub(crate) fn mirror(self: &Rc<Self>, endpoint: SocketAddr, head: Vec<u8>) {
        let this = self.clone();
        spawn_local(async move {
            let timeout = this.config.request_timeout;
            let copy = async {
                let mut upstream = this.connect_raw(endpoint).await?;
                tokio::io::AsyncWriteExt::write_all(&mut upstream.io, &head)
                    .await
                    .map_err(|e| format!("writing failed: {e}"))?;
                h1::read_response_head(&mut upstream, false, |_, _| {})
                    .await
                    .map_err(|e| format!("no answer: {e}"))?;
                Ok::<_, String>(())
            };
            match tokio::time::timeout(timeout, copy).await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => tracing::debug!(%endpoint, "mirrored request: {why}"),
                Err(_) => tracing::debug!(%endpoint, "mirrored request timed out"),
            }
        });
    }

    fn drain_removed(&self, table: &RouteTable) {
        let mut served = std::collections::HashSet::new();
        let mut add = |b: &Arc<Backend>| served.extend(b.endpoints.iter().copied());
        for routes in table
            .exact
            .values()
            .chain(table.wildcard.values())
            .chain(std::iter::once(&table.any_host))
        {
            for route in &routes.routes {
                add(&route.backend);
            }
        }
        if let Some(b) = &table.default_backend {
            add(b);
        }
        // Gateway API backends and mirrors too: their connections are kept.
        for listener in table.gateway.http.iter().chain(&table.gateway.https) {
            for entry in &listener.entries {
                let action = &entry.action;
                for m in &action.filters.mirrors {
                    add(&m.backend);
                }
                for b in &action.backends {
                    if let gateway::Target::Backend(backend) = &b.target {
                        add(backend);
                    }
                    for m in &b.filters.mirrors {
                        add(&m.backend);
                    }
                }
            }
        }
        self.raw_pool.borrow_mut().retain(|e, _| served.contains(e));
        self.pool.borrow_mut().retain(|e, _| served.contains(e));
        *self.served.borrow_mut() = served;
    }

    fn next_random(&self) -> u64 {
        let mut x = self.random.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.set(x);
        x
    }

    fn pick(&self, backend: &Backend) -> Option<SocketAddr> {
        let n = backend.endpoints.len();
        if self.config.balance == Balance::RoundRobin || n < 2 {
            return backend.pick();
        }
        let r = self.next_random();
        let a = (r % n as u64) as usize;
        // A second, different one.
        let b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
        let (a, b) = (backend.endpoints[a], backend.endpoints[b]);
        let in_flight = self.in_flight.borrow();
        let load = |e| in_flight.get(&e).copied().unwrap_or(0);
        Some(if load(b) < load(a) { b } else { a })
    }

    /// Another endpoint of `backend` than `failed`, if it has one: one the
    /// table served now still names, if any (the request was routed on the
    /// table of its arrival; an endpoint removed since then is stopping,
    /// and another failure there would use up the tries).
    pub(crate) fn pick_other(&self, backend: &Backend, failed: SocketAddr) -> Option<SocketAddr> {
        self.refresh();
        let served = self.served.borrow();
        let mut others: Vec<_> = backend
            .endpoints
            .iter()
            .filter(|e| **e != failed && served.contains(e))
            .collect();
        if others.is_empty() {
            others = backend.endpoints.iter().filter(|e| **e != failed).collect();
        }
        if others.is_empty() {
            return None;
        }
        Some(*others[(self.next_random() % others.len() as u64) as usize])
    }

    pub(crate) fn started(&self, endpoint: SocketAddr) {
        if self.config.balance == Balance::LeastRequest {
            *self.in_flight.borrow_mut().entry(endpoint).or_default() += 1;
        }
    }

    pub(crate) fn finished(&self, endpoint: SocketAddr) {
        if self.config.balance == Balance::LeastRequest {
            if let Some(n) = self.in_flight.borrow_mut().get_mut(&endpoint) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// A connection to `endpoint` refused or failed: its idle ones are
    /// likely dead too.
    pub(crate) fn failed(&self, endpoint: SocketAddr) {
        self.raw_pool.borrow_mut().remove(&endpoint);
    }

    /// An idle connection to `endpoint` that is still open: one the
    /// endpoint closed (or wrote to unasked) is readable, and dropped. The
    /// check costs no system call while the connection is quiet.
    pub(crate) fn take_idle(&self, endpoint: SocketAddr) -> Option<h1::Upstream> {
        let mut pool = self.raw_pool.borrow_mut();
        let idle = pool.get_mut(&endpoint)?;
        while let Some(conn) = idle.pop() {
            let mut byte = [0u8; 1];
            match conn.io.try_read(&mut byte) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(conn),
                _ => continue,
            }
        }
        None
    }

    pub(crate) fn put_idle(&self, endpoint: SocketAddr, conn: h1::Upstream) {
        if !conn.buffered().is_empty() {
            // Bytes after the response: not a connection to trust.
            return;
        }
        // Only for endpoints still served (a drained one's are closed).
        if !self.served.borrow().contains(&endpoint) {
            return;
        }
        let mut pool = self.raw_pool.borrow_mut();
        let idle = pool.entry(endpoint).or_default();
        if idle.len() < self.config.max_idle_per_endpoint {
            idle.push(conn);
        }
    }

    pub(crate) async fn connect_raw(&self, endpoint: SocketAddr) -> Result<h1::Upstream, String> {
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
        Ok(h1::Conn::new(stream))
    }

    /// Whether requests are logged or counted (then their method, host and
    /// path are kept until the response).
    pub(crate) fn observing(&self) -> bool {
        self.config.access_log || self.shared.metrics.is_some()
    }

    /// The access log line and the metrics of one request.
    pub(crate) fn observe(
        &self,
        request: &h1::RequestLog,
        status: u16,
        bytes: u64,
        upstream: Option<SocketAddr>,
        started: Instant,
    ) {
        if !self.observing() {
            return;
        }
        let elapsed = started.elapsed();
        let route = request.route.as_ref().map_or("", |b| b.name.as_str());
        if let Some(metrics) = &self.shared.metrics {
            metrics.observe(route, status, elapsed);
        }
        if self.config.access_log {
            crate::metrics::access_log(request, status, bytes, upstream, elapsed);
        }
    }

    async fn handle(
        self: Rc<Self>,
        req: Request<Incoming>,
        client: &Client,
        https: bool,
    ) -> Response<Body> {
        let started = Instant::now();
        let host = host_of(&req);
        let decision = self.decide(&Head {
            method: req.method().as_str(),
            host: &host,
            path: req.uri().path(),
            query: req.uri().query(),
            https,
            headers: Headers::Hyper(req.headers()),
        });
        let mut log = h1::RequestLog {
            client: client.ip,
            method: String::new(),
            host: String::new(),
            path: String::new(),
            route: None,
        };
        if self.observing() {
            log.method = req.method().to_string();
            log.host = host.into_owned();
            log.path = req.uri().path().to_owned();
        }
        let endpoint = match decision {
            Decision::NoRoute => {
                self.observe(&log, 404, 0, None, started);
                return error(StatusCode::NOT_FOUND, "no route for this host and path\n");
            }
            Decision::NoEndpoints(backend) => {
                tracing::debug!(backend = backend.name, "no endpoints");
                log.route = Some(backend);
                self.observe(&log, 503, 0, None, started);
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no endpoint ready for this route\n",
                );
            }
            Decision::Reply(reply) => {
                self.observe(&log, reply.status, 0, None, started);
                return own_reply(&reply);
            }
            Decision::Endpoint(e, backend, edits) => (e, backend, edits),
        };
        let (endpoint, backend, edits) = endpoint;
        log.route = Some(backend);
        let mut req = req;
        let mut timeout = self.config.request_timeout;
        if let Some(edits) = &edits {
            if let Some(headers) = &edits.headers {
                *req.headers_mut() = headers.clone();
            }
            if let Some(target) = &edits.target {
                // The authority goes with the old target: keep it as Host.
                if !req.headers().contains_key(header::HOST) {
                    if let Some(v) = req
                        .uri()
                        .authority()
                        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                    {
                        req.headers_mut().insert(header::HOST, v);
                    }
                }
                match target.parse::<Uri>() {
                    Ok(uri) => *req.uri_mut() = uri,
                    Err(_) => {
                        self.observe(&log, 500, 0, None, started);
                        return error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "the rewritten path is not a valid target\n",
                        );
                    }
                }
            }
            if let Some(t) = edits.timeout {
                timeout = timeout.min(t);
            }
        }
        let req = upstream_request(req, client, https);
        if let Some(edits) = &edits {
            if !edits.mirrors.is_empty() && hyper::body::Body::is_end_stream(req.body()) {
                let head = mirror_head(&req);
                for m in &edits.mirrors {
                    self.mirror(*m, head.clone());
                }
            }
        }
        self.started(endpoint);
        let forwarded = tokio::time::timeout(timeout, self.forward(endpoint, req)).await;
        self.finished(endpoint);
        match forwarded {
            Ok(Ok(mut response)) => {
                strip_hop_by_hop(response.headers_mut());
                if let Some(edits) = &edits {
                    edits.apply_response(response.headers_mut());
                }
                self.observe(&log, response.status().as_u16(), 0, Some(endpoint), started);
                response.map(Either::Left)
            }
            Ok(Err(why)) => {
                tracing::debug!(%endpoint, "{why}");
                self.observe(&log, 502, 0, Some(endpoint), started);
                error(
                    StatusCode::BAD_GATEWAY,
                    "the endpoint could not be reached\n",
                )
            }
            Err(_) => {
                self.observe(&log, 504, 0, Some(endpoint), started);
                error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the endpoint did not answer in time\n",
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
fn host_of(req: &Request<Incoming>) -> std::borrow::Cow<'_, str> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    normalize_host(raw)
}

/// A Host header's host, as routes name it: lower case, without port or
/// trailing dot.
pub(crate) fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
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

/// A Gateway API rule's reply of ours: a redirect with its Location, or
/// an error with its message.
fn own_reply(reply: &Reply) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(reply.message.clone()))));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(location) = &reply.location {
        match HeaderValue::from_str(location) {
            Ok(v) => {
                response.headers_mut().insert(header::LOCATION, v);
            }
            // Fail closed: no redirect to a place we cannot say.
            Err(_) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the redirect's location is not a valid header\n",
                )
            }
        }
    }
    if !reply.message.is_empty() {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

/// An HTTP/1.1 head of a request without a body, for a mirror.
fn mirror_head(req: &Request<Incoming>) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(req.method().as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(
        req.uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
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

/// A stream whose first bytes were read already (to tell h2c from
/// HTTP/1.1): they are read again first.
struct Prefixed<IO> {
    prefix: Vec<u8>,
    at: usize,
    io: IO,
}

impl<IO> Prefixed<IO> {
    fn new(prefix: Vec<u8>, io: IO) -> Prefixed<IO> {
        Prefixed { prefix, at: 0, io }
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
