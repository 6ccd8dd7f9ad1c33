//! The data plane on real sockets (loopback, ports chosen by the kernel):
//! routing, round robin, keep-alive to endpoints, the error statuses, a
//! table swap under an open connection, TLS by SNI.

mod common;
use common::loopback_slice;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1 as client;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use strait_ingress::{plan, Config, IngressServer, RouteTable, CONTROLLER};
use strait_model::{parse_str, ClusterState, Format};
use tokio::net::{TcpListener, TcpStream};

/// A backend that answers `NAME METHOD PATH BODY-LENGTH` and shows the
/// forwarded headers; counts the connections it accepted.
struct Backend {
    address: SocketAddr,
    connections: Arc<AtomicUsize>,
}

async fn backend(name: &'static str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    let header = |n: &str| {
                        req.headers()
                            .get(n)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default()
                    };
                    let line = format!(
                        "{name} {} {} host={} xff={} proto={} connection={}",
                        req.method(),
                        req.uri(),
                        header("host"),
                        header("x-forwarded-for"),
                        header("x-forwarded-proto"),
                        header("connection"),
                    );
                    let body = req.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(format!(
                        "{line} body={}",
                        body.len()
                    )))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Backend {
        address,
        connections,
    }
}

/// The route table of `yaml` plus the endpoints of each Service named in
/// `endpoints`. The slices are made here, not admitted from a manifest:
/// admission (rightly) refuses loopback endpoints, and these tests serve
/// only on loopback.
fn table(yaml: &str, endpoints: &[(&str, &[SocketAddr])]) -> RouteTable {
    let loaded = parse_str("test.yaml", yaml, Format::Yaml).unwrap();
    let mut state = ClusterState::from_objects(
        loaded
            .objects
            .into_iter()
            .map(|(o, origin)| (o, Some(origin))),
    )
    .unwrap();
    for (service, addresses) in endpoints {
        // One slice per endpoint: their ports differ.
        for (i, address) in addresses.iter().enumerate() {
            state.insert(loopback_slice(
                format!("{service}-{i}"),
                service,
                Some("http"),
                *address,
            ));
        }
    }
    let table = plan(&state, CONTROLLER);
    assert!(table.problems.is_empty(), "{:?}", table.problems);
    table
}

const CLASS: &str = "
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: strait
  annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}
spec: {controller: strait.dev/ingress}
";

/// Service `name`, port 80 named http.
fn service(name: &str) -> String {
    format!(
        "---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec: {{clusterIP: None, ports: [{{name: http, port: 80}}]}}
"
    )
}

fn ingress(host: &str, paths: &[(&str, &str)]) -> String {
    let mut out = format!(
        "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, namespace: default}}
spec:
  rules:
  - host: {host}
    http:
      paths:
"
    );
    for (path, svc) in paths {
        out += &format!(
            "      - {{pathType: Prefix, path: '{path}', backend: {{service: {{name: {svc}, port: {{name: http}}}}}}}}\n"
        );
    }
    out
}

fn start(table: RouteTable) -> IngressServer {
    let config = Config {
        http: Some("127.0.0.1:0".parse().unwrap()),
        https: Some("127.0.0.1:0".parse().unwrap()),
        workers: 2,
        ..Config::default()
    };
    let (server, problems) = IngressServer::start(config, table).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    server
}

type Sender = client::SendRequest<Full<Bytes>>;

async fn connect(address: SocketAddr) -> Sender {
    let stream = TcpStream::connect(address).await.unwrap();
    let (sender, conn) = client::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(
    sender: &mut Sender,
    method: &str,
    host: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    sender.ready().await.unwrap();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("connection", "keep-alive")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn get(sender: &mut Sender, host: &str, path: &str) -> (u16, String) {
    send(sender, "GET", host, path, "").await
}

#[tokio::test]
async fn routes_round_robin_over_kept_alive_endpoint_connections() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let yaml = format!(
        "{CLASS}{}{}{}",
        service("web"),
        service("other"),
        ingress("web.test", &[("/", "web"), ("/other", "other")]),
    );
    let server = start(table(
        &yaml,
        &[("web", &[a.address, b.address]), ("other", &[c.address])],
    ));
    let mut client = connect(server.http_address.unwrap()).await;
    let mut names = Vec::new();
    for _ in 0..6 {
        let (status, body) = get(&mut client, "Web.Test:80", "/x?q=1").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.ends_with(
                " GET /x?q=1 host=Web.Test:80 xff=127.0.0.1 proto=http connection= body=0"
            ),
            "{body}"
        );
        names.push(body[..1].to_owned());
    }
    // Round robin: the six requests of one connection alternate (which
    // endpoint is first depends on the ports the kernel gave).
    assert!(names.windows(2).all(|w| w[0] != w[1]), "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "a").count(), 3);
    let (status, body) = send(&mut client, "POST", "web.test", "/other/y", "hello").await;
    assert_eq!(status, 200);
    assert!(
        body.starts_with("c POST /other/y ") && body.ends_with(" body=5"),
        "{body}"
    );
    // Requests one after the other reuse one connection per endpoint.
    assert_eq!(a.connections.load(Ordering::SeqCst), 1);
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
    // X-Forwarded-For is appended to.
    client.ready().await.unwrap();
    let req = Request::builder()
        .uri("/")
        .header("host", "web.test")
        .header("x-forwarded-for", "192.0.2.7")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let body = client
        .send_request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.contains(" xff=192.0.2.7, 127.0.0.1 "), "{body}");
}

#[tokio::test]
async fn no_route_is_404_no_endpoint_503_unreachable_endpoint_502() {
    // Bound, not listening: refused, and not handed to a parallel test.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let unreachable = reserved.local_addr().unwrap();
    let yaml = format!(
        "{CLASS}{}{}{}",
        service("empty"),
        service("gone"),
        ingress("web.test", &[("/empty", "empty"), ("/gone", "gone")]),
    );
    let server = start(table(&yaml, &[("gone", &[unreachable])]));
    let mut client = connect(server.http_address.unwrap()).await;
    assert_eq!(get(&mut client, "other.test", "/empty").await.0, 404);
    assert_eq!(get(&mut client, "web.test", "/elsewhere").await.0, 404);
    assert_eq!(get(&mut client, "web.test", "/empty").await.0, 503);
    let (status, body) = get(&mut client, "web.test", "/gone").await;
    assert_eq!(
        (status, body.as_str()),
        (502, "the endpoint could not be reached\n")
    );
    // The client's connection survived all three.
    assert_eq!(get(&mut client, "web.test", "/empty").await.0, 503);
}

#[tokio::test]
async fn a_swapped_table_is_served_on_open_connections() {
    let (a, c) = (backend("a").await, backend("c").await);
    let before = format!(
        "{CLASS}{}{}{}",
        service("web"),
        service("other"),
        ingress("web.test", &[("/", "web")]),
    );
    let endpoints: &[(&str, &[SocketAddr])] = &[("web", &[a.address]), ("other", &[c.address])];
    let server = start(table(&before, endpoints));
    let mut clients = vec![connect(server.http_address.unwrap()).await];
    // Several connections, so that both workers hold one.
    for _ in 0..3 {
        clients.push(connect(server.http_address.unwrap()).await);
    }
    for client in &mut clients {
        assert!(get(client, "web.test", "/").await.1.starts_with("a "));
    }
    let after = before.replace(
        "backend: {service: {name: web,",
        "backend: {service: {name: other,",
    );
    let problems = server.swap(table(&after, endpoints));
    assert!(problems.is_empty());
    for client in &mut clients {
        let (status, body) = get(client, "web.test", "/").await;
        assert_eq!(status, 200);
        assert!(body.starts_with("c "), "{body}");
    }
    // Back to the first table: a's idle connections were closed when it
    // left the table (a removed endpoint drains), so each worker opens at
    // most one again, and keeps it for the sequential requests.
    let opened = a.connections.load(Ordering::SeqCst);
    assert!(opened <= 2, "one per worker at most");
    server.swap(table(&before, endpoints));
    for _ in 0..3 {
        for client in &mut clients {
            assert!(get(client, "web.test", "/").await.1.starts_with("a "));
        }
    }
    assert!(
        a.connections.load(Ordering::SeqCst) <= opened + 2,
        "one new per worker at most"
    );
}

mod tls {
    use super::*;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    use tokio_rustls::TlsConnector;

    struct Cert {
        pem: String,
        key: String,
        der: CertificateDer<'static>,
    }

    fn cert(names: &[&str]) -> Cert {
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        Cert {
            pem: c.cert.pem(),
            key: c.key_pair.serialize_pem(),
            der: c.cert.der().clone(),
        }
    }

    fn secret(name: &str, cert: &Cert) -> String {
        let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
        format!(
            "---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: default}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{}  tls.key: |
{}",
            indent(&cert.pem),
            indent(&cert.key)
        )
    }

    /// A TLS connection asking for `sni`, trusting `roots`; the
    /// certificate the server presented.
    async fn handshake(
        address: SocketAddr,
        sni: &str,
        roots: &[&Cert],
    ) -> Result<(Sender, CertificateDer<'static>), String> {
        let mut store = RootCertStore::empty();
        for r in roots {
            store.add(r.der.clone()).unwrap();
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
        let stream = TcpStream::connect(address).await.unwrap();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(sni.to_owned()).unwrap(), stream)
            .await
            .map_err(|e| e.to_string())?;
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (sender, conn) = client::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        Ok((sender, presented))
    }

    #[tokio::test]
    async fn h2_is_negotiated_by_alpn() {
        let a = backend("a").await;
        let site = cert(&["a.test"]);
        let yaml = format!(
            "{CLASS}{}{}{}",
            service("web"),
            secret("site", &site),
            ingress("a.test", &[("/", "web")]).replace(
                "spec:\n",
                "spec:\n  tls: [{hosts: [a.test], secretName: site}]\n"
            ),
        );
        let server = start(table(&yaml, &[("web", &[a.address])]));
        let mut store = RootCertStore::empty();
        store.add(site.der.clone()).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let stream = TcpStream::connect(server.https_address.unwrap())
            .await
            .unwrap();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("a.test").unwrap(), stream)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = Request::builder()
            .uri("https://a.test/over-h2")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.starts_with("a GET /over-h2 host=a.test"), "{body}");
        assert!(body.contains(" proto=https "), "{body}");
    }

    #[tokio::test]
    async fn certificates_are_chosen_by_sni() {
        let a = backend("a").await;
        let (site, wild) = (cert(&["a.test"]), cert(&["*.b.test"]));
        let yaml = format!(
            "{CLASS}{}{}{}{}",
            service("web"),
            secret("site", &site),
            secret("wild", &wild),
            ingress("a.test", &[("/", "web")]).replace(
                "spec:\n",
                "spec:\n  tls: [{hosts: [a.test], secretName: site}, {hosts: ['*.b.test'], secretName: wild}]\n",
            ),
        );
        let endpoints: &[(&str, &[SocketAddr])] = &[("web", &[a.address])];
        let server = start(table(&yaml, endpoints));
        let https = server.https_address.unwrap();
        let (mut client, presented) = handshake(https, "a.test", &[&site, &wild]).await.unwrap();
        assert_eq!(presented, site.der);
        let (status, body) = get(&mut client, "a.test", "/").await;
        assert_eq!(status, 200);
        assert!(body.contains(" proto=https "), "{body}");
        let (_, presented) = handshake(https, "x.b.test", &[&site, &wild]).await.unwrap();
        assert_eq!(presented, wild.der);
        // No certificate for the name and no default one: no handshake.
        assert!(handshake(https, "c.test", &[&site, &wild]).await.is_err());
        // A wildcard covers one label only.
        assert!(handshake(https, "x.y.b.test", &[&site, &wild])
            .await
            .is_err());
        // A certificate swapped in is presented on the next handshake.
        let newer = cert(&["a.test"]);
        let rotated = yaml.replace(&secret("site", &site), &secret("site", &newer));
        assert!(server.swap(table(&rotated, endpoints)).is_empty());
        let (_, presented) = handshake(https, "a.test", &[&newer]).await.unwrap();
        assert_eq!(presented, newer.der);
        // A pair that does not match is refused and said; the rest is served.
        let mismatched = Cert {
            key: wild.key.clone(),
            ..cert(&["a.test"])
        };
        let broken = yaml.replace(&secret("site", &site), &secret("site", &mismatched));
        let problems = server.swap(table(&broken, endpoints));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0]
                .starts_with("Secret default/site: tls.crt and tls.key are not a usable pair"),
            "{problems:?}"
        );
        assert!(handshake(https, "x.b.test", &[&wild]).await.is_ok());
        assert!(handshake(https, "a.test", &[&site, &mismatched])
            .await
            .is_err());
    }
}

/// What a raw backend does with a request.
enum Reply {
    /// Write these bytes and read the next request.
    Bytes(Vec<u8>),
    /// Write these bytes, then echo whatever comes (a tunnel).
    Echo(Vec<u8>),
    /// Never answer (the connection stays open).
    Hang,
}

type Answer = dyn Fn(&str, &[u8]) -> Reply + Send + Sync;

/// A backend on raw sockets, for what a well-behaved HTTP library would
/// not send: `answer` gets each request's head (as text) and its body
/// (decoded), and says what to write.
async fn raw_backend(answer: Arc<Answer>) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // The head.
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    buf.drain(..end);
                    // The body: Content-Length only (the proxy's requests
                    // to these backends carry no chunked bodies).
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                    while buf.len() < length {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Vec<u8> = buf.drain(..length).collect();
                    match answer(&head, &body) {
                        Reply::Bytes(b) => {
                            if stream.write_all(&b).await.is_err() {
                                return;
                            }
                        }
                        Reply::Echo(b) => {
                            if stream.write_all(&b).await.is_err() {
                                return;
                            }
                            let (mut r, mut w) = stream.split();
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                            return;
                        }
                        Reply::Hang => {
                            let mut rest = [0u8; 1];
                            let _ = stream.read(&mut rest).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    address
}

/// Send `bytes` on a new connection and read until the proxy closes it.
async fn raw(address: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    // A bound on a hang (a failure), not a synchronisation.
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut out),
    )
    .await
    .expect("the proxy did not close the connection")
    .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Read from `stream` until `out` holds `needle`.
async fn read_until(stream: &mut TcpStream, out: &mut Vec<u8>, needle: &[u8]) {
    use tokio::io::AsyncReadExt;
    let reading = async {
        while !out.windows(needle.len()).any(|w| w == needle) {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed before {:?}: {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(out)
            );
            out.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), reading)
        .await
        .expect("no answer");
}

fn one_backend(addresses: &[SocketAddr]) -> RouteTable {
    let yaml = format!(
        "{CLASS}{}{}",
        service("web"),
        ingress("a.test", &[("/", "web")])
    );
    table(&yaml, &[("web", addresses)])
}

fn start_with(table: RouteTable, change: impl FnOnce(&mut Config)) -> IngressServer {
    let mut config = Config {
        http: Some("127.0.0.1:0".parse().unwrap()),
        https: Some("127.0.0.1:0".parse().unwrap()),
        workers: 1,
        ..Config::default()
    };
    change(&mut config);
    let (server, problems) = IngressServer::start(config, table).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    server
}

#[tokio::test]
async fn chunked_bodies_both_ways_and_pipelined_requests() {
    let a = backend("a").await;
    let chunky = raw_backend(Arc::new(|head: &str, _: &[u8]| {
        assert!(!head.contains("transfer-encoding"), "{head}");
        Reply::Bytes(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n"
                .to_vec(),
        )
    }))
    .await;
    let yaml = format!(
        "{CLASS}{}{}{}",
        service("web"),
        service("chunky"),
        ingress("a.test", &[("/", "web"), ("/chunky", "chunky")])
    );
    let server = start(table(
        &yaml,
        &[("web", &[a.address]), ("chunky", &[chunky])],
    ));
    let http = server.http_address.unwrap();

    // A chunked request (extensions, a trailer), and a second request
    // pipelined behind it in the same write.
    let out = raw(
        http,
        b"POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\n\
          GET /second HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let first = out.find("a POST /upload").expect(&out);
    let second = out.find("a GET /second").expect(&out);
    assert!(first < second, "{out}");
    assert!(out.contains("body=11"), "{out}");
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");

    // A chunked response, to an HTTP/1.1 client on a kept-alive
    // connection: decoded by it, and the connection still serves.
    let mut client = connect(http).await;
    for _ in 0..2 {
        assert_eq!(
            get(&mut client, "a.test", "/chunky").await,
            (200, "abcdefg".into())
        );
    }
    // To an HTTP/1.0 client: decoded by the proxy, the end told by the close.
    let out = raw(http, b"GET /chunky HTTP/1.0\r\nHost: a.test\r\n\r\n").await;
    assert!(out.ends_with("\r\n\r\nabcdefg"), "{out:?}");
    assert!(!out.to_lowercase().contains("transfer-encoding"), "{out}");
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body() {
    use tokio::io::AsyncWriteExt;
    let a = backend("a").await;
    let server = start(one_backend(&[a.address]));
    let mut stream = TcpStream::connect(server.http_address.unwrap())
        .await
        .unwrap();
    stream
        .write_all(b"PUT /file HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    read_until(&mut stream, &mut out, b"HTTP/1.1 100 Continue\r\n\r\n").await;
    stream.write_all(b"hello").await.unwrap();
    read_until(&mut stream, &mut out, b"body=5").await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("a PUT /file"), "{out}");
}

#[tokio::test]
async fn head_204_and_304_responses_have_no_body() {
    let b = raw_backend(Arc::new(|head: &str, _: &[u8]| {
        let reply: &[u8] = if head.starts_with("get /204 ") {
            b"HTTP/1.1 204 No Content\r\n\r\n"
        } else if head.starts_with("get /304 ") {
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"
        } else if head.starts_with("head ") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"
        };
        Reply::Bytes(reply.to_vec())
    }))
    .await;
    let server = start(one_backend(&[b]));
    let mut client = connect(server.http_address.unwrap()).await;
    // Each followed by a request on the same connection: a body wrongly
    // expected (or sent) would be read as the next response.
    for (method, path, status) in [
        ("GET", "/204", 204),
        ("GET", "/304", 304),
        ("HEAD", "/", 200),
    ] {
        assert_eq!(
            send(&mut client, method, "a.test", path, "").await,
            (status, String::new()),
            "{method} {path}"
        );
        assert_eq!(
            get(&mut client, "a.test", "/x").await,
            (200, "0123456789".into())
        );
    }
}

#[tokio::test]
async fn ambiguous_framing_is_refused() {
    let a = backend("a").await;
    let server = start(one_backend(&[a.address]));
    let http = server.http_address.unwrap();
    let cases: &[(&[u8], &str)] = &[
        (b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        (b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "400"),
        (b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: +3\r\n\r\nabc", "400"),
        (b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        (b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "501"),
        (b"POST / HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost : a.test\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: a.test\r\n folded\r\n\r\n", "400"),
    ];
    for (request, status) in cases {
        let out = raw(http, request).await;
        assert!(
            out.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?} -> {out:?}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(
        a.connections.load(Ordering::SeqCst),
        0,
        "none reached the endpoint"
    );
    // A bad chunk: the head went on, the body is refused and the
    // connection closed.
    for body in [
        "zz\r\nab\r\n0\r\n\r\n",
        "2\r\nabc\r\n0\r\n\r\n",
        "2\nab\r\n0\r\n\r\n",
    ] {
        let request =
            format!("POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let out = raw(http, request.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{body:?} -> {out:?}");
    }
}

#[tokio::test]
async fn h2c_prior_knowledge_to_http1_endpoints() {
    let a = backend("a").await;
    let server = start(one_backend(&[a.address]));
    let stream = TcpStream::connect(server.http_address.unwrap())
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let req = Request::builder()
            .method("POST")
            .uri(format!("http://a.test/h2/{i}"))
            .body(Full::new(Bytes::from_static(b"abc")))
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.starts_with(&format!("a POST /h2/{i} host=a.test")),
            "{body}"
        );
        assert!(body.ends_with("body=3"), "{body}");
    }
}

/// Write `message` and read it back.
async fn echo(stream: &mut TcpStream, message: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_exact(&mut back),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(back, message);
}

#[tokio::test]
async fn websocket_upgrade_is_a_tunnel_that_survives_a_table_swap() {
    use tokio::io::AsyncWriteExt;
    let ws = raw_backend(Arc::new(|head: &str, _: &[u8]| {
        assert!(head.contains("upgrade: websocket"), "{head}");
        assert!(head.contains("connection: upgrade"), "{head}");
        Reply::Echo(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n".to_vec(),
        )
    }))
    .await;
    let server = start(one_backend(&[ws]));
    let mut stream = TcpStream::connect(server.http_address.unwrap())
        .await
        .unwrap();
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    read_until(&mut stream, &mut out, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&out).to_lowercase();
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    echo(&mut stream, b"\x81\x05hello").await;
    // Routes change (the endpoint is gone from them): the tunnel stays.
    let other = backend("b").await;
    assert!(server.swap(one_backend(&[other.address])).is_empty());
    echo(&mut stream, b"\x81\x05again").await;
}

#[tokio::test]
async fn a_refused_endpoint_is_retried_on_another() {
    // A port bound and not listening: connections are refused, and the
    // port stays ours (a closed listener's port could be handed to another
    // test's backend running in parallel).
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let refused = reserved.local_addr().unwrap();
    let a = backend("a").await;
    let server = start(one_backend(&[refused, a.address]));
    let mut client = connect(server.http_address.unwrap()).await;
    // POST too: nothing of a refused connection's request was sent.
    for i in 0..6 {
        let (status, body) = send(&mut client, "POST", "a.test", &format!("/{i}"), "x").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("a POST"), "{body}");
    }
}

#[tokio::test]
async fn an_endpoint_too_slow_is_answered_504() {
    let silent = raw_backend(Arc::new(|_: &str, _: &[u8]| Reply::Hang)).await;
    let server = start_with(one_backend(&[silent]), |c| {
        c.request_timeout = std::time::Duration::from_millis(300)
    });
    let mut client = connect(server.http_address.unwrap()).await;
    let (status, _) = get(&mut client, "a.test", "/").await;
    assert_eq!(status, 504);
    // The connection serves on.
    let (status, _) = get(&mut client, "a.test", "/").await;
    assert_eq!(status, 504);
}

/// A backend that tells `seen` about each request it gets; while `holds`
/// is above zero, a request takes one from it and waits for a permit of
/// `release` before its answer (its name).
async fn held_backend(
    name: &'static str,
    seen: tokio::sync::mpsc::UnboundedSender<&'static str>,
    release: Arc<tokio::sync::Semaphore>,
    holds: Arc<AtomicUsize>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let first = holds;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (seen, release, first) = (seen.clone(), release.clone(), first.clone());
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<Incoming>| {
                    let (seen, release, first) = (seen.clone(), release.clone(), first.clone());
                    async move {
                        let _ = seen.send(name);
                        let hold = first
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        if hold {
                            release.acquire().await.unwrap().forget();
                        }
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(name))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

#[tokio::test]
async fn a_removed_endpoint_drains() {
    let (seen, mut saw) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let old = held_backend(
        "old",
        seen,
        release.clone(),
        Arc::new(AtomicUsize::new(usize::MAX)),
    )
    .await;
    let new = backend("new").await;
    let server = start_with(one_backend(&[old]), |_| {});
    let http = server.http_address.unwrap();
    let mut client = connect(http).await;
    let in_flight = tokio::spawn(async move {
        let answer = get(&mut client, "a.test", "/slow").await;
        (answer, client)
    });
    assert_eq!(saw.recv().await, Some("old"));
    // The endpoint leaves the table while its request is in flight.
    assert!(server.swap(one_backend(&[new.address])).is_empty());
    let mut other = connect(http).await;
    let (status, body) = get(&mut other, "a.test", "/").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("new GET"), "{body}");
    // The request in flight finishes, and the next on its connection goes
    // to the new endpoint (the old one's connection is not kept).
    release.add_permits(1);
    let ((status, body), mut client) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "old"));
    let (status, body) = get(&mut client, "a.test", "/").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("new GET"), "{body}");
    assert!(
        saw.try_recv().is_err(),
        "the old endpoint got no other request"
    );
}

#[tokio::test]
async fn least_request_avoids_the_busy_endpoint() {
    let (seen, mut saw) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    // The first request (to either) is held; the others are answered.
    let holds = Arc::new(AtomicUsize::new(1));
    let x = held_backend("x", seen.clone(), release.clone(), holds.clone()).await;
    let y = held_backend("y", seen, release.clone(), holds).await;
    let server = start_with(one_backend(&[x, y]), |c| {
        c.balance = strait_ingress::Balance::LeastRequest
    });
    let http = server.http_address.unwrap();
    let mut first = connect(http).await;
    let held = tokio::spawn(async move { get(&mut first, "a.test", "/").await });
    let busy = saw.recv().await.unwrap();
    let idle = if busy == "x" { "y" } else { "x" };
    // Every next request goes to the other endpoint while the busy one has
    // a request in flight (round robin would send half of them there).
    let mut client = connect(http).await;
    for _ in 0..8 {
        assert_eq!(
            get(&mut client, "a.test", "/").await,
            (200, idle.to_owned())
        );
    }
    release.add_permits(1);
    assert_eq!(held.await.unwrap(), (200, busy.to_owned()));
}

#[tokio::test]
async fn requests_are_counted_by_route_and_status() {
    let a = backend("a").await;
    let server = start_with(one_backend(&[a.address]), |c| {
        c.metrics = Some("127.0.0.1:0".parse().unwrap());
        c.access_log = true;
    });
    let mut client = connect(server.http_address.unwrap()).await;
    assert_eq!(get(&mut client, "a.test", "/").await.0, 200);
    assert_eq!(get(&mut client, "a.test", "/").await.0, 200);
    assert_eq!(get(&mut client, "nowhere.test", "/").await.0, 404);
    let metrics = raw(
        server.metrics_address.unwrap(),
        b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
    )
    .await;
    for line in [
        "strait_ingress_requests_total{route=\"default/web:http\",code=\"200\"} 2",
        "strait_ingress_requests_total{route=\"\",code=\"404\"} 1",
        "strait_ingress_request_duration_seconds_count{route=\"default/web:http\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
}

#[tokio::test]
async fn idle_and_slow_client_connections_are_closed_busy_ones_kept() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = backend("a").await;
    let keep_alive = std::time::Duration::from_millis(1200);
    let server = start_with(one_backend(&[a.address]), |c| {
        c.keep_alive_timeout = keep_alive;
        c.header_read_timeout = std::time::Duration::from_millis(300);
    });
    let address = server.http_address.unwrap();
    let request = b"GET / HTTP/1.1\r\nhost: a.test\r\n\r\n";
    // Requests spread over more than one keep-alive timeout, each well
    // within it: the connection's timer is moved on, not fired.
    let mut stream = TcpStream::connect(address).await.unwrap();
    let began = std::time::Instant::now();
    let mut served = 0;
    while began.elapsed() < keep_alive * 2 {
        stream.write_all(request).await.unwrap();
        let mut out = Vec::new();
        read_until(&mut stream, &mut out, b"a GET /").await;
        served += 1;
        tokio::time::sleep(keep_alive / 8).await;
    }
    assert!(served >= 4, "{served}");
    // Then idle: closed (EOF) after the keep-alive timeout.
    let idle = std::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut rest),
    )
    .await
    .expect("an idle connection was not closed")
    .unwrap();
    assert!(idle.elapsed() >= keep_alive / 2, "{:?}", idle.elapsed());
    // A head begun and not finished: closed after the header timeout,
    // without an answer.
    let mut slow = TcpStream::connect(address).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: a.te")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        slow.read_to_end(&mut rest),
    )
    .await
    .expect("a slow head's connection was not closed")
    .unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}
