//! HTTP/1.1 proxied without hyper: one task per client connection reads a
//! request head (httparse), routes it, writes it to a pooled keep-alive
//! endpoint connection, streams the body, reads the response head and
//! streams the response back — in the same task, with no hand-over between
//! a server and a client task per request (what hyper's two connection
//! tasks cost: ~20 % more CPU per request than nginx, see the README).
//!
//! Message framing follows RFC 9112 section 6, and is strict where a
//! lenient reading lets two parties disagree on where a message ends
//! (request smuggling): a request with both Content-Length and
//! Transfer-Encoding, several Content-Lengths, a transfer coding other than
//! `chunked`, a Transfer-Encoding on HTTP/1.0, or a malformed chunk is
//! answered 400 and the connection closed. Chunked bodies are decoded and
//! encoded again (extensions and trailers dropped), never passed through
//! as bytes, so what the endpoint reads is exactly what was checked.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use crate::gateway::Reply;
use crate::plan::Backend;
use crate::server::{Decision, Edits, Head, Headers, Worker};

/// The longest request or response head read (larger: 431 / 502).
const MAX_HEAD: usize = 64 * 1024;
/// Headers in one head (more: 431 / 502).
const MAX_HEADERS: usize = 128;
/// A chunk-size line with its extensions, and all trailer lines.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;
/// Bytes gathered before they are written out while a body streams.
const FLUSH_AT: usize = 64 * 1024;
/// The HTTP/2 client preface (RFC 9113 3.4): h2c with prior knowledge.
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A byte stream with what was read from it and not used yet.
pub(crate) struct Conn<IO> {
    pub(crate) io: IO,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<IO: AsyncRead + Unpin> Conn<IO> {
    pub(crate) fn new(io: IO) -> Conn<IO> {
        Conn {
            io,
            buf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
        }
    }

    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Read more; `Ok(0)` at the end of the stream. The buffer grows up to
    /// `MAX_HEAD` (a head must fit whole); bodies never need more than it.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < MAX_HEAD {
                self.buf.resize(MAX_HEAD, 0);
            } else {
                return Err(io::Error::other("head too large"));
            }
        }
        let n = self.io.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Give up the stream with the bytes still unread.
    pub(crate) fn into_parts(self) -> (IO, Vec<u8>) {
        let rest = self.buf[self.start..self.end].to_vec();
        (self.io, rest)
    }
}

/// A timer kept across a connection's requests for one kind of wait, and
/// moved only when it fires before the wait in progress is over: a tokio
/// timeout made per wait is put in and taken out of the timer wheel (two
/// locks) each time, per request. Deadlines of one kind mostly only grow,
/// so the timer fires about once per timeout period, and waits that end
/// in time never touch it.
pub(crate) struct Timer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Timer {
    pub(crate) fn new() -> Timer {
        // Far off: moved nearer by the first wait that needs it.
        Timer {
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86_400))),
        }
    }

    /// `work`, or `None` if `deadline` passes first.
    pub(crate) async fn within<F: std::future::Future>(
        &mut self,
        deadline: tokio::time::Instant,
        work: F,
    ) -> Option<F::Output> {
        if self.sleep.deadline() > deadline {
            self.sleep.as_mut().reset(deadline);
        }
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                biased;
                done = &mut work => return Some(done),
                () = self.sleep.as_mut() => {
                    // Fired for an earlier wait's deadline, or this one's.
                    if tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                    self.sleep.as_mut().reset(deadline);
                }
            }
        }
    }
}

/// How a message body is delimited (RFC 9112 6.3).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    Close,
}

/// Why a body could not be passed on.
enum BodyError {
    /// The side it is read from failed or ended early.
    Read(io::Error),
    /// The side it goes to failed.
    Write(io::Error),
    /// It is not framed as it says.
    Framing(&'static str),
}

/// An endpoint connection, kept alive between requests.
pub(crate) type Upstream = Conn<TcpStream>;

/// What one request asked, once its head is read.
struct Request {
    head_len: usize,
    framing: Framing,
    http10: bool,
    keep_alive: bool,
    is_head: bool,
    idempotent: bool,
    upgrade: bool,
    expect_continue: bool,
    decision: Decision,
    /// For the access log and metrics.
    method: String,
    host: String,
    path: String,
}

/// A request that is answered here, not proxied.
struct Refusal {
    status: u16,
    reason: &'static str,
    message: &'static str,
}

const fn refuse(status: u16, reason: &'static str, message: &'static str) -> Refusal {
    Refusal {
        status,
        reason,
        message,
    }
}

/// Serve one client connection whose first bytes are in `conn`'s buffer
/// (or not read yet). Returns when the connection is done.
pub(crate) async fn serve<IO>(
    worker: Rc<Worker>,
    mut client: Conn<IO>,
    peer: SocketAddr,
    https: bool,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::with_capacity(4096);
    // The head as the endpoint gets it: one buffer for the connection's
    // requests, not one allocated per request.
    let mut first = Vec::with_capacity(1024);
    let peer_ip = peer.ip().to_string();
    // For the waits for a head, and for each request's response head.
    let (mut idle, mut request_timer) = (Timer::new(), Timer::new());
    loop {
        // A head: wait for it (idle keep-alive connections are closed
        // after a while), then parse it.
        let mut waited = false;
        let request = loop {
            if !client.buffered().is_empty() {
                match parse_request(&worker, client.buffered(), &peer_ip, https, &mut first) {
                    Ok(Some(r)) => break r,
                    Ok(None) => {}
                    Err(refusal) => {
                        let _ = answer(&mut client.io, &mut out, &refusal, false, false).await;
                        linger(client).await;
                        return;
                    }
                }
                if client.buffered().len() >= MAX_HEAD {
                    let refusal = refuse(
                        431,
                        "Request Header Fields Too Large",
                        "request head too large\n",
                    );
                    let _ = answer(&mut client.io, &mut out, &refusal, false, false).await;
                    linger(client).await;
                    return;
                }
            }
            let timeout = if waited || !client.buffered().is_empty() {
                worker.config.header_read_timeout
            } else {
                worker.config.keep_alive_timeout
            };
            waited = true;
            let deadline = tokio::time::Instant::now() + timeout;
            match idle.within(deadline, client.fill()).await {
                Some(Ok(0)) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        };
        client.consume(request.head_len);
        match exchange(
            &worker,
            &mut client,
            &mut out,
            &mut first,
            &mut request_timer,
            request,
            peer.ip(),
        )
        .await
        {
            Next::KeepAlive => {}
            Next::Close => {
                linger(client).await;
                return;
            }
            Next::Upgraded(upstream) => {
                tunnel(client, upstream).await;
                return;
            }
        }
    }
}

/// Close after our last response without losing it: a close with unread
/// bytes (a refused request's body) would reset the connection, and the
/// client could lose the response before reading it. So the sending side
/// is shut, and what the client still sends is read and dropped, for a
/// while and up to a bound.
async fn linger<IO>(mut client: Conn<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    if client.io.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut dropped = 0;
        while dropped < MAX_HEAD * 4 {
            client.consume(client.buffered().len());
            match client.fill().await {
                Ok(0) | Err(_) => return,
                Ok(n) => dropped += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// How long a closing connection's late bytes are read (see `linger`).
const LINGER: Duration = Duration::from_secs(2);

/// Whether `head` starts like the HTTP/2 preface (all of it, or as much as
/// has arrived).
pub(crate) fn looks_like_h2(head: &[u8]) -> bool {
    let n = head.len().min(H2_PREFACE.len());
    n > 0 && head[..n] == H2_PREFACE[..n]
}

fn header_is(name: &str, wanted: &str) -> bool {
    name.eq_ignore_ascii_case(wanted)
}

/// Whether a comma-separated header value lists `token`.
fn lists(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Hop-by-hop headers (RFC 9110 7.6.1): about one connection, never passed
/// on. Upgrade is passed on only with a request that asks for it.
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
    ]
    .iter()
    .any(|h| header_is(name, h))
}

/// The Content-Length of a head: at most one header, all digits.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Parse a request head at the start of `buf`: `Ok(None)` if incomplete.
/// The head as the endpoint gets it is written to `up`.
fn parse_request(
    worker: &Worker,
    buf: &[u8],
    peer_ip: &str,
    https: bool,
    up: &mut Vec<u8>,
) -> Result<Option<Request>, Refusal> {
    let bad = |m| refuse(400, "Bad Request", m);
    // Uninitialised: httparse fills only what it uses (an initialised
    // array is 4 KiB written per head).
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(
                431,
                "Request Header Fields Too Large",
                "too many headers\n",
            ))
        }
        Err(httparse::Error::Version) => {
            return Err(refuse(
                505,
                "HTTP Version Not Supported",
                "HTTP/1.0 or 1.1 only\n",
            ))
        }
        Err(_) => return Err(bad("malformed request head\n")),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(bad("malformed request head\n"));
    };
    let http10 = version == 0;
    // The connection's own headers, and the framing.
    let (mut host, mut hosts) = (None, 0);
    let (mut length, mut lengths, mut te) = (None, 0, None::<&[u8]>);
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut connection_upgrade = false;
    let mut upgrade = None;
    let mut expect = None;
    let mut forwarded_for = None;
    let mut forwarded_host = false;
    let mut listed = Vec::new();
    for h in req.headers.iter() {
        let name = h.name;
        if header_is(name, "host") {
            hosts += 1;
            host = Some(h.value);
        } else if header_is(name, "content-length") {
            lengths += 1;
            length = Some(content_length(h.value).ok_or(bad("bad Content-Length\n"))?);
        } else if header_is(name, "transfer-encoding") {
            if te.is_some() {
                return Err(bad("Transfer-Encoding given twice\n"));
            }
            te = Some(h.value);
        } else if header_is(name, "connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    connection_keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    connection_upgrade = true;
                } else if !token.is_empty() {
                    listed.push(token);
                }
            }
        } else if header_is(name, "upgrade") {
            upgrade = Some(h.value);
        } else if header_is(name, "expect") {
            expect = Some(h.value);
        } else if header_is(name, "x-forwarded-for") {
            forwarded_for = Some(h.value);
        } else if header_is(name, "x-forwarded-host") {
            forwarded_host = true;
        }
    }
    if lengths > 1 {
        return Err(bad("Content-Length given more than once\n"));
    }
    let framing = match (te, length) {
        (Some(_), Some(_)) => return Err(bad("both Content-Length and Transfer-Encoding\n")),
        (Some(_), None) if http10 => return Err(bad("Transfer-Encoding in an HTTP/1.0 request\n")),
        (Some(te), None) => {
            if !te.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(refuse(
                    501,
                    "Not Implemented",
                    "only the chunked transfer coding is understood\n",
                ));
            }
            Framing::Chunked
        }
        (None, Some(0)) | (None, None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    if !http10 && hosts != 1 {
        return Err(bad("an HTTP/1.1 request needs exactly one Host\n"));
    }
    if hosts > 1 {
        return Err(bad("Host given more than once\n"));
    }
    let expect_continue = match expect {
        None => false,
        Some(e) if e.trim_ascii().eq_ignore_ascii_case(b"100-continue") => !http10,
        Some(_) => {
            return Err(refuse(
                417,
                "Expectation Failed",
                "only 100-continue is understood\n",
            ))
        }
    };
    // The target: origin-form, or absolute-form (whose authority is the
    // host), or `*` for OPTIONS.
    let (authority, origin) = if target.starts_with('/') {
        (None, target)
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("bad request target\n"));
        }
        (Some(authority), path)
    } else if target == "*" && method == "OPTIONS" {
        (None, target)
    } else {
        return Err(refuse(
            405,
            "Method Not Allowed",
            "CONNECT and authority-form targets are not proxied\n",
        ));
    };
    let origin = if origin.starts_with('?') {
        // `http://h?q` means `/?q`.
        return Err(bad("bad request target\n"));
    } else {
        origin
    };
    let host_header = match authority {
        Some(a) => a.as_bytes(),
        None => host.unwrap_or_default(),
    };
    let host_text = std::str::from_utf8(host_header).map_err(|_| bad("bad Host\n"))?;
    let route_host = crate::server::normalize_host(host_text);
    let (path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (origin, None),
    };
    let head = Head {
        method,
        host: &route_host,
        path,
        query,
        https,
        headers: Headers::H1(req.headers),
    };
    let decision = worker.decide(&head);
    let upgrade = match upgrade {
        Some(u) if connection_upgrade && !http10 => Some(u),
        _ => None,
    };

    // The head for the endpoint: origin-form, HTTP/1.1, without the
    // connection's headers, with the X-Forwarded ones.
    // A Gateway API rule may give a new target and new headers: then the
    // head is written from those (the connection's headers are still
    // taken out of them below).
    let (target, edited) = match &decision {
        Decision::Endpoint(_, _, Some(edits)) => (
            edits.target.as_deref().unwrap_or(origin),
            edits.headers.as_ref(),
        ),
        _ => (origin, None),
    };
    up.clear();
    up.extend_from_slice(method.as_bytes());
    up.push(b' ');
    up.extend_from_slice(target.as_bytes());
    up.extend_from_slice(b" HTTP/1.1\r\n");
    let mut wrote_host = false;
    let headers = edited
        .into_iter()
        .flat_map(|map| map.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))
        .chain(
            req.headers
                .iter()
                .filter(|_| edited.is_none())
                .map(|h| (h.name, h.value)),
        );
    for (name, value) in headers {
        if hop_by_hop(name)
            || header_is(name, "expect") && expect_continue
            || header_is(name, "x-forwarded-for")
            || header_is(name, "x-forwarded-proto")
            || listed
                .iter()
                .any(|l| l.eq_ignore_ascii_case(name.as_bytes()))
        {
            continue;
        }
        if header_is(name, "host") {
            // An absolute-form target's authority is the host, unless a
            // rule rewrote it.
            if authority.is_some() && (edited.is_none() || Some(value) == host) {
                continue;
            }
            wrote_host = true;
        }
        up.extend_from_slice(name.as_bytes());
        up.extend_from_slice(b": ");
        up.extend_from_slice(value);
        up.extend_from_slice(b"\r\n");
    }
    if !wrote_host {
        up.extend_from_slice(b"host: ");
        up.extend_from_slice(host_header);
        up.extend_from_slice(b"\r\n");
    }
    if framing == Framing::Chunked {
        up.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if let Some(u) = upgrade {
        up.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
        up.extend_from_slice(u);
        up.extend_from_slice(b"\r\n");
    }
    up.extend_from_slice(b"x-forwarded-for: ");
    if let Some(earlier) = forwarded_for {
        up.extend_from_slice(earlier);
        up.extend_from_slice(b", ");
    }
    up.extend_from_slice(peer_ip.as_bytes());
    up.extend_from_slice(if https {
        b"\r\nx-forwarded-proto: https\r\n"
    } else {
        b"\r\nx-forwarded-proto: http\r\n"
    });
    if !forwarded_host {
        up.extend_from_slice(b"x-forwarded-host: ");
        up.extend_from_slice(host_header);
        up.extend_from_slice(b"\r\n");
    }
    up.extend_from_slice(b"\r\n");

    let keep_alive = if http10 {
        connection_keep_alive && !connection_close
    } else {
        !connection_close
    };
    let log = worker.observing();
    Ok(Some(Request {
        head_len,
        framing,
        http10,
        keep_alive,
        is_head: method == "HEAD",
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        upgrade: upgrade.is_some(),
        expect_continue: expect_continue && framing != Framing::Empty,
        decision,
        method: if log {
            method.to_owned()
        } else {
            String::new()
        },
        host: if log {
            route_host.into_owned()
        } else {
            String::new()
        },
        path: if log { path.to_owned() } else { String::new() },
    }))
}

/// What the client connection does after an exchange.
enum Next {
    KeepAlive,
    Close,
    Upgraded(Upstream),
}

/// Write a response of ours.
async fn answer<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &mut Vec<u8>,
    refusal: &Refusal,
    keep_alive: bool,
    is_head: bool,
) -> io::Result<()> {
    use std::io::Write;
    out.clear();
    let _ =
        write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n{}\r\n",
        refusal.status,
        refusal.reason,
        refusal.message.len(),
        if keep_alive { "" } else { "connection: close\r\n" }
    );
    if !is_head {
        out.extend_from_slice(refusal.message.as_bytes());
    }
    io.write_all(out).await?;
    out.clear();
    io.flush().await
}

/// Write a reply a Gateway API rule asks for: a redirect with its
/// Location, or an error with its message.
async fn own_reply<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &mut Vec<u8>,
    reply: &Reply,
    keep_alive: bool,
    is_head: bool,
) -> io::Result<()> {
    use std::io::Write;
    let status = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    // Fail closed: a location that cannot be a header value (no CR or LF
    // may reach the client) turns the redirect into a 500.
    let location = reply
        .location
        .as_deref()
        .map(|l| HeaderValue::from_str(l).map_err(|_| ()));
    let (status, message, location) = match location {
        Some(Err(())) => (
            hyper::StatusCode::INTERNAL_SERVER_ERROR,
            "the redirect's location is not a valid header\n",
            None,
        ),
        Some(Ok(l)) => (status, reply.message.as_str(), Some(l)),
        None => (status, reply.message.as_str(), None),
    };
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-length: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        message.len(),
    );
    if !message.is_empty() {
        out.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\n");
    }
    if let Some(l) = location {
        out.extend_from_slice(b"location: ");
        out.extend_from_slice(l.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !is_head {
        out.extend_from_slice(message.as_bytes());
    }
    io.write_all(out).await?;
    out.clear();
    io.flush().await
}

/// The response head read from an endpoint.
pub(crate) struct ResponseHead {
    len: usize,
    status: u16,
    framing: Framing,
    /// The endpoint keeps the connection open after this response.
    reusable: bool,
}

/// One request: to an endpoint and back.
async fn exchange<IO>(
    worker: &Rc<Worker>,
    client: &mut Conn<IO>,
    out: &mut Vec<u8>,
    first: &mut Vec<u8>,
    timer: &mut Timer,
    request: Request,
    peer: IpAddr,
) -> Next
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let Request {
        framing,
        http10,
        keep_alive,
        is_head,
        idempotent,
        upgrade,
        expect_continue,
        decision,
        method,
        host,
        path,
        ..
    } = request;
    let mut log = RequestLog {
        client: peer,
        method,
        host,
        path,
        route: None,
    };
    // A body left unread cannot be told from the next request: after an
    // answer of ours to a request with one, the connection closes.
    let endpoint = match decision {
        Decision::NoRoute => {
            worker.observe(&log, 404, 0, None, started);
            let r = refuse(404, "Not Found", "no route for this host and path\n");
            return refused(
                client,
                out,
                &r,
                keep_alive && framing == Framing::Empty,
                is_head,
            )
            .await;
        }
        Decision::NoEndpoints(backend) => {
            log.route = Some(backend);
            worker.observe(&log, 503, 0, None, started);
            let r = refuse(
                503,
                "Service Unavailable",
                "no endpoint ready for this route\n",
            );
            return refused(
                client,
                out,
                &r,
                keep_alive && framing == Framing::Empty,
                is_head,
            )
            .await;
        }
        Decision::Reply(reply) => {
            worker.observe(&log, reply.status, 0, None, started);
            let keep_alive = keep_alive && framing == Framing::Empty;
            return match own_reply(&mut client.io, out, &reply, keep_alive, is_head).await {
                Ok(()) if keep_alive => Next::KeepAlive,
                _ => Next::Close,
            };
        }
        Decision::Endpoint(e, backend, edits) => (e, backend, edits),
    };
    let (mut endpoint, backend, edits) = endpoint;
    log.route = Some(backend.clone());
    if let Some(edits) = &edits {
        // A copy for each mirror, of requests without a body only (a
        // body is streamed once, to the endpoint).
        if framing == Framing::Empty {
            for m in &edits.mirrors {
                worker.mirror(*m, first.clone());
            }
        }
    }
    // The body goes with the head when it has arrived whole (most small
    // bodies): then the request can be sent again.
    let mut body_sent = match framing {
        Framing::Empty => true,
        Framing::Length(n) if (client.buffered().len() as u64) >= n && !expect_continue => {
            first.extend_from_slice(&client.buffered()[..n as usize]);
            client.consume(n as usize);
            true
        }
        _ => false,
    };
    let timeout = match edits.as_ref().and_then(|e| e.timeout) {
        Some(route) => route.min(worker.config.request_timeout),
        None => worker.config.request_timeout,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut attempts = 0;
    // Our answer when the endpoint gives none: the connection is kept
    // only if the request's body has been read whole.
    macro_rules! fail {
        ($refusal:expr, $status:expr, $body_done:expr) => {{
            worker.observe(&log, $status, 0, Some(endpoint), started);
            return refused(client, out, &$refusal, keep_alive && $body_done, is_head).await;
        }};
    }
    let (mut upstream, head) = loop {
        attempts += 1;
        let (mut upstream, reused) = match worker.take_idle(endpoint) {
            Some(u) => (u, true),
            None => match tokio::time::timeout_at(deadline, worker.connect_raw(endpoint)).await {
                Ok(Ok(u)) => (u, false),
                Ok(Err(why)) => {
                    // Nothing was sent: another endpoint may take it,
                    // whatever the method.
                    tracing::debug!(%endpoint, "{why}");
                    worker.failed(endpoint);
                    if attempts < worker.config.max_attempts {
                        if let Some(other) = worker.pick_other(&backend, endpoint) {
                            endpoint = other;
                            continue;
                        }
                    }
                    fail!(BAD_GATEWAY, 502, body_sent)
                }
                Err(_) => fail!(GATEWAY_TIMEOUT, 504, body_sent),
            },
        };
        worker.started(endpoint);
        let sending = async {
            upstream
                .io
                .write_all(first)
                .await
                .map_err(BodyError::Write)?;
            if !body_sent {
                if expect_continue {
                    // We take the body on the endpoint's behalf (it gets
                    // no Expect).
                    client
                        .io
                        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                        .await
                        .map_err(BodyError::Read)?;
                    client.io.flush().await.map_err(BodyError::Read)?;
                }
                out.clear();
                copy_body(client, &mut upstream.io, out, framing, true).await?;
                upstream.io.write_all(out).await.map_err(BodyError::Write)?;
                out.clear();
            }
            Ok::<_, BodyError>(())
        };
        let sent = tokio::time::timeout_at(deadline, sending).await;
        let replayable = body_sent;
        let write_error = match sent {
            Err(_) => {
                worker.finished(endpoint);
                fail!(GATEWAY_TIMEOUT, 504, false)
            }
            Ok(Err(BodyError::Framing(m))) => {
                worker.finished(endpoint);
                worker.observe(&log, 400, 0, Some(endpoint), started);
                let _ = answer(
                    &mut client.io,
                    out,
                    &refuse(400, "Bad Request", m),
                    false,
                    false,
                )
                .await;
                return Next::Close;
            }
            Ok(Err(BodyError::Read(_))) => {
                // The client went away (or stalled) mid-body.
                worker.finished(endpoint);
                worker.observe(&log, 400, 0, Some(endpoint), started);
                return Next::Close;
            }
            Ok(Err(BodyError::Write(e))) => Some(e),
            Ok(Ok(())) => None,
        };
        body_sent = true;
        let head = match write_error {
            Some(e) => Err(e),
            None => {
                // The client's head is written while the endpoint's is
                // parsed (once).
                let write_head = |res: &httparse::Response<'_, '_>, head: &ResponseHead| {
                    out.clear();
                    if head.status == 101 {
                        response_head(res, out, Framing::Empty, http10, true, None);
                    } else {
                        let keep_alive = keeps_alive(keep_alive, head.framing, http10);
                        response_head(res, out, head.framing, http10, keep_alive, edits.as_deref());
                    }
                };
                timer
                    .within(
                        deadline,
                        read_response_head(&mut upstream, is_head, write_head),
                    )
                    .await
                    .unwrap_or_else(|| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")))
            }
        };
        match head {
            Ok(head) => break (upstream, head),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                worker.finished(endpoint);
                fail!(GATEWAY_TIMEOUT, 504, true)
            }
            Err(e) => {
                worker.finished(endpoint);
                // A kept-alive connection the endpoint closed as we sent
                // (nothing came back): the request goes again on a new
                // connection if doing it twice is harmless.
                let nothing_back = matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::BrokenPipe
                );
                if reused
                    && nothing_back
                    && replayable
                    && idempotent
                    && attempts <= worker.config.max_attempts
                {
                    tracing::debug!(%endpoint, "kept-alive connection closed under the request ({e}); sent again");
                    // The endpoint closed it: its other idle connections
                    // are likely closing too (it is stopping, or they
                    // were idle as long), and a removed endpoint is left
                    // for another (it stops listening next).
                    worker.failed(endpoint);
                    if !worker.serves(endpoint) {
                        if let Some(other) = worker.pick_other(&backend, endpoint) {
                            endpoint = other;
                        }
                    }
                    continue;
                }
                tracing::debug!(%endpoint, "request failed: {e}");
                fail!(BAD_GATEWAY, 502, true)
            }
        }
    };

    if head.status == 101 {
        worker.finished(endpoint);
        if !upgrade {
            fail!(BAD_GATEWAY, 502, true)
        }
        worker.observe(&log, 101, 0, Some(endpoint), started);
        // `out` holds the client's head (`read_response_head` wrote it).
        upstream.consume(head.len);
        if client.io.write_all(out).await.is_err() || client.io.flush().await.is_err() {
            return Next::Close;
        }
        out.clear();
        return Next::Upgraded(upstream);
    }

    // The response: chunked to an HTTP/1.1 client when the endpoint chose
    // it, decoded for HTTP/1.0 ones (which then see the end by the close).
    // `out` holds the client's head already.
    let chunked_out = head.framing == Framing::Chunked && !http10;
    let keep_alive = keeps_alive(keep_alive, head.framing, http10);
    upstream.consume(head.len);
    let head_bytes = out.len() as u64;
    let copied = copy_body(
        &mut upstream,
        &mut client.io,
        out,
        head.framing,
        chunked_out,
    )
    .await;
    worker.finished(endpoint);
    match copied {
        Ok(bytes) => {
            let flushed = client.io.write_all(out).await.and(client.io.flush().await);
            out.clear();
            if head.reusable {
                worker.put_idle(endpoint, upstream);
            }
            worker.observe(
                &log,
                head.status,
                bytes.saturating_sub(head_bytes),
                Some(endpoint),
                started,
            );
            if flushed.is_ok() && keep_alive {
                Next::KeepAlive
            } else {
                Next::Close
            }
        }
        Err(e) => {
            let why = match e {
                BodyError::Read(e) => format!("reading the response body failed: {e}"),
                BodyError::Write(e) => format!("the client went away: {e}"),
                BodyError::Framing(m) => format!("bad response framing: {}", m.trim_end()),
            };
            tracing::debug!(%endpoint, "{why}");
            out.clear();
            worker.observe(&log, head.status, 0, Some(endpoint), started);
            Next::Close
        }
    }
}

const BAD_GATEWAY: Refusal = refuse(502, "Bad Gateway", "the endpoint could not be reached\n");
const GATEWAY_TIMEOUT: Refusal = refuse(
    504,
    "Gateway Timeout",
    "the endpoint did not answer in time\n",
);

/// What the access log and the metrics say about a request.
pub(crate) struct RequestLog {
    pub(crate) client: IpAddr,
    pub(crate) method: String,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) route: Option<Arc<Backend>>,
}

/// Answer with one of ours; keep the connection if asked and it worked.
async fn refused<IO>(
    client: &mut Conn<IO>,
    out: &mut Vec<u8>,
    refusal: &Refusal,
    keep_alive: bool,
    is_head: bool,
) -> Next
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match answer(&mut client.io, out, refusal, keep_alive, is_head).await {
        Ok(()) if keep_alive => Next::KeepAlive,
        _ => Next::Close,
    }
}

/// Whether the client connection stays open after a response framed so:
/// one that ends by the close does not, nor a chunked one to an HTTP/1.0
/// client (which is sent decoded, ending by the close).
fn keeps_alive(asked: bool, framing: Framing, http10: bool) -> bool {
    asked && framing != Framing::Close && !(framing == Framing::Chunked && http10)
}

/// Read a response head (skipping interim 1xx ones other than 101), and
/// give the parsed final one to `parsed` (the head is parsed once: what
/// the client gets is written from it there).
pub(crate) async fn read_response_head(
    upstream: &mut Upstream,
    is_head: bool,
    mut parsed: impl FnMut(&httparse::Response<'_, '_>, &ResponseHead),
) -> io::Result<ResponseHead> {
    loop {
        if !upstream.buffered().is_empty() {
            let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut []);
            match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut res,
                upstream.buffered(),
                &mut headers,
            ) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = res.code.unwrap_or(0);
                    if (100..200).contains(&status) && status != 101 {
                        upstream.consume(len);
                        continue;
                    }
                    let http10 = res.version == Some(0);
                    let (mut te, mut length, mut lengths) = (None::<&[u8]>, None, 0);
                    let mut close = http10;
                    for h in res.headers.iter() {
                        if header_is(h.name, "transfer-encoding") {
                            te = Some(h.value);
                        } else if header_is(h.name, "content-length") {
                            lengths += 1;
                            length = Some(content_length(h.value).ok_or_else(|| {
                                io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length")
                            })?);
                        } else if header_is(h.name, "connection") {
                            if lists(h.value, "close") {
                                close = true;
                            } else if http10 && lists(h.value, "keep-alive") {
                                close = false;
                            }
                        }
                    }
                    let framing = if is_head || status == 204 || status == 304 || status == 101 {
                        Framing::Empty
                    } else if let Some(te) = te {
                        // Transfer-Encoding wins over Content-Length; a
                        // coding that does not end in chunked runs to the
                        // close.
                        let last = te.rsplit(|&b| b == b',').next().unwrap_or_default();
                        if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                            Framing::Chunked
                        } else {
                            Framing::Close
                        }
                    } else if lengths > 1 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "several Content-Lengths",
                        ));
                    } else {
                        match length {
                            Some(0) => Framing::Empty,
                            Some(n) => Framing::Length(n),
                            None => Framing::Close,
                        }
                    };
                    let head = ResponseHead {
                        len,
                        status,
                        reusable: !close && framing != Framing::Close && status != 101,
                        framing,
                    };
                    parsed(&res, &head);
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad response head: {e}"),
                    ))
                }
            }
        }
        match upstream.fill().await {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The response head for the client from the endpoint's: hop-by-hop
/// headers out, the framing and connection headers of this hop in.
fn response_head(
    res: &httparse::Response<'_, '_>,
    out: &mut Vec<u8>,
    framing: Framing,
    http10: bool,
    keep_alive: bool,
    edits: Option<&Edits>,
) {
    // Chunked to an HTTP/1.1 client when the endpoint chose it.
    let chunked_out = framing == Framing::Chunked && !http10;
    let status = res.code.unwrap_or(502);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa3(status).as_slice());
    out.push(b' ');
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut listed: Vec<&[u8]> = Vec::new();
    let mut upgrade = None;
    for h in res.headers.iter() {
        if header_is(h.name, "connection") {
            listed.extend(h.value.split(|&b| b == b',').map(|t| t.trim_ascii()));
        } else if header_is(h.name, "upgrade") {
            upgrade = Some(h.value);
        }
    }
    // ResponseHeaderModifiers work on a header map: the head is gathered
    // into one only when a rule has them (a header hyper's types cannot
    // hold is then left out).
    let mut modified = edits
        .filter(|e| !e.response.is_empty())
        .map(|_| HeaderMap::new());
    for h in res.headers.iter() {
        if hop_by_hop(h.name)
            || listed
                .iter()
                .any(|l| l.eq_ignore_ascii_case(h.name.as_bytes()))
            || header_is(h.name, "content-length") && framing == Framing::Chunked
        {
            continue;
        }
        if let Some(map) = &mut modified {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) {
                map.append(n, v);
            }
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if let (Some(mut map), Some(edits)) = (modified, edits) {
        edits.apply_response(&mut map);
        for (name, value) in &map {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    if status == 101 {
        out.extend_from_slice(b"connection: upgrade\r\n");
        if let Some(u) = upgrade {
            out.extend_from_slice(b"upgrade: ");
            out.extend_from_slice(u);
            out.extend_from_slice(b"\r\n");
        }
    } else {
        if chunked_out {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if http10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn itoa3(n: u16) -> [u8; 3] {
    let n = n.min(999);
    [
        b'0' + (n / 100) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]
}

/// Pass a body from `src` to `dst` as `framing` delimits it (re-chunked
/// if `chunked_out`, decoded if not); what is in `out` first goes before
/// it. Returns the bytes written, `out`'s included; the last of them are
/// left in `out` for the caller to write.
async fn copy_body<R, W>(
    src: &mut Conn<R>,
    dst: &mut W,
    out: &mut Vec<u8>,
    framing: Framing,
    chunked_out: bool,
) -> Result<u64, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut written = 0u64;
    macro_rules! flush {
        () => {{
            written += out.len() as u64;
            dst.write_all(out).await.map_err(BodyError::Write)?;
            out.clear();
        }};
    }
    macro_rules! more {
        () => {{
            if !out.is_empty() {
                flush!();
            }
            match src.fill().await {
                Ok(0) => return Err(BodyError::Read(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) => return Err(BodyError::Read(e)),
            }
        }};
    }
    match framing {
        Framing::Empty => {}
        Framing::Length(mut left) => loop {
            let take = (src.buffered().len() as u64).min(left) as usize;
            out.extend_from_slice(&src.buffered()[..take]);
            src.consume(take);
            left -= take as u64;
            if left == 0 {
                break;
            }
            if out.len() >= FLUSH_AT {
                flush!();
            }
            more!();
        },
        Framing::Close => loop {
            let take = src.buffered().len();
            out.extend_from_slice(src.buffered());
            src.consume(take);
            if !out.is_empty() {
                flush!();
            }
            match src.fill().await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(BodyError::Read(e)),
            }
        },
        Framing::Chunked => loop {
            // chunk-size [ chunk-ext ] CRLF
            let line_end = loop {
                if let Some(i) = src.buffered().windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if src.buffered().len() > MAX_CHUNK_LINE {
                    return Err(BodyError::Framing("chunk size line too long\n"));
                }
                more!();
            };
            let size = chunk_size(&src.buffered()[..line_end])?;
            src.consume(line_end + 2);
            if size == 0 {
                // Trailer fields, dropped, up to the empty line.
                let mut seen = 0;
                loop {
                    if let Some(i) = src.buffered().windows(2).position(|w| w == b"\r\n") {
                        src.consume(i + 2);
                        seen += i + 2;
                        if i == 0 {
                            break;
                        }
                        if seen > MAX_TRAILERS {
                            return Err(BodyError::Framing("trailers too large\n"));
                        }
                        continue;
                    }
                    if src.buffered().len() + seen > MAX_TRAILERS {
                        return Err(BodyError::Framing("trailers too large\n"));
                    }
                    more!();
                }
                if chunked_out {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                break;
            }
            if chunked_out {
                use std::io::Write;
                let _ = write!(out, "{size:x}\r\n");
            }
            let mut left = size;
            loop {
                let take = (src.buffered().len() as u64).min(left) as usize;
                out.extend_from_slice(&src.buffered()[..take]);
                src.consume(take);
                left -= take as u64;
                if left == 0 {
                    break;
                }
                if out.len() >= FLUSH_AT {
                    flush!();
                }
                more!();
            }
            while src.buffered().len() < 2 {
                more!();
            }
            if &src.buffered()[..2] != b"\r\n" {
                return Err(BodyError::Framing("chunk data not followed by CRLF\n"));
            }
            src.consume(2);
            if chunked_out {
                out.extend_from_slice(b"\r\n");
            }
            if out.len() >= FLUSH_AT {
                flush!();
            }
        },
    }
    Ok(written + out.len() as u64)
}

/// The size of a chunk-size line (hex digits, then optional extensions
/// after `;`, which are dropped).
fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let bad = BodyError::Framing("bad chunk size\n");
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(bad);
    }
    let rest = &line[digits..];
    let rest = rest.trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';')
        || rest.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
    {
        return Err(bad);
    }
    // Only hex digits: cannot fail, and 15 of them fit.
    let text =
        std::str::from_utf8(&line[..digits]).map_err(|_| BodyError::Framing("bad chunk size\n"))?;
    u64::from_str_radix(text, 16).map_err(|_| BodyError::Framing("bad chunk size\n"))
}

/// After a 101: bytes both ways until either side closes.
async fn tunnel<IO>(client: Conn<IO>, upstream: Upstream)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client, client_rest) = client.into_parts();
    let (mut upstream, upstream_rest) = upstream.into_parts();
    if !client_rest.is_empty() && upstream.write_all(&client_rest).await.is_err() {
        return;
    }
    if !upstream_rest.is_empty() && client.write_all(&upstream_rest).await.is_err() {
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!("upgraded connection ended: {e}");
    }
}

/// How long to wait for the rest of a head once it has begun, and for the
/// next request on a kept-alive connection.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(300);
