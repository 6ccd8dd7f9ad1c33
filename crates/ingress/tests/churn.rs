//! Churn under load, on loopback (ports chosen by the kernel): while
//! clients send requests over kept-alive HTTP, over new HTTPS connections
//! and through a WebSocket, the route table changes every few milliseconds
//! — routes added, removed and modified, endpoints ("pods") added and
//! removed (then stopped as kubelet stops a terminating pod: in-flight
//! requests finish, idle connections are closed), the certificate rotated.
//! Not one response may be other than 200, not one request may fail, and
//! the WebSocket must echo throughout. `bench/l7-churn.sh` does the same
//! with processes in namespaces, beside nginx.

mod common;
use common::loopback_slice;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1 as client;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use strait_ingress::{plan, Config, IngressServer, RouteTable, CONTROLLER};
use strait_model::{parse_str, ClusterState, Format};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A backend that can be stopped as a terminating pod is: it stops
/// accepting, finishes the requests in flight and closes idle connections.
struct Pod {
    address: SocketAddr,
    stop: watch::Sender<bool>,
}

async fn pod() -> Pod {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let mut accepting = stopped.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => return,
                },
                _ = async { let _ = accepting.wait_for(|s| *s).await; } => return,
            };
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await?;
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = async { let _ = stopped.wait_for(|s| *s).await; } => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    });
    Pod { address, stop }
}

/// A WebSocket endpoint: answers the upgrade with 101, then echoes bytes.
async fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 1024];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let reply = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n";
                if stream.write_all(reply).await.is_err() {
                    return;
                }
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    address
}

struct Cert {
    pem: String,
    key: String,
    der: CertificateDer<'static>,
}

fn cert() -> Cert {
    let c = rcgen::generate_simple_self_signed(vec!["churn.test".to_owned()]).unwrap();
    Cert {
        pem: c.cert.pem(),
        key: c.key_pair.serialize_pem(),
        der: c.cert.der().clone(),
    }
}

/// What is served; each change makes a new table of it.
struct Served {
    web_a: Vec<SocketAddr>,
    web_b: Vec<SocketAddr>,
    ws: SocketAddr,
    /// The Service `/` goes to.
    root_to_b: bool,
    extra_path: Option<u32>,
    extra_hosts: Vec<u32>,
    cert: usize,
}

const CLASS: &str = "
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: strait
  annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}
spec: {controller: strait.dev/ingress}
";

fn table(served: &Served, certs: &[Cert]) -> RouteTable {
    let mut yaml = CLASS.to_owned();
    for name in ["web-a", "web-b", "ws"] {
        yaml += &format!(
            "---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec: {{clusterIP: None, ports: [{{name: http, port: 80}}]}}
"
        );
    }
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let cert = &certs[served.cert];
    yaml += &format!(
        "---
apiVersion: v1
kind: Secret
metadata: {{name: churn-tls, namespace: default}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{}  tls.key: |
{}",
        indent(&cert.pem),
        indent(&cert.key)
    );
    let path = |path: &str, kind: &str, svc: &str| {
        format!("      - {{pathType: {kind}, path: '{path}', backend: {{service: {{name: {svc}, port: {{name: http}}}}}}}}\n")
    };
    yaml += "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: churn, namespace: default}
spec:
  tls: [{hosts: [churn.test], secretName: churn-tls}]
  rules:
  - host: churn.test
    http:
      paths:
";
    yaml += &path(
        "/",
        "Prefix",
        if served.root_to_b { "web-b" } else { "web-a" },
    );
    yaml += &path("/ws", "Prefix", "ws");
    if let Some(n) = served.extra_path {
        yaml += &path(&format!("/extra-{n}"), "Exact", "web-b");
    }
    for n in &served.extra_hosts {
        yaml += &format!(
            "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: extra-{n}, namespace: default}}
spec:
  rules:
  - host: x{n}.test
    http:
      paths:
{}",
            path("/", "Prefix", "web-b")
        );
    }
    let loaded = parse_str("churn.yaml", &yaml, Format::Yaml).unwrap();
    let mut state = ClusterState::from_objects(
        loaded
            .objects
            .into_iter()
            .map(|(o, origin)| (o, Some(origin))),
    )
    .unwrap();
    // One slice per endpoint (their ports differ), made here: admission
    // refuses loopback endpoints, and this test serves only on loopback.
    let endpoints = [
        ("web-a", served.web_a.clone()),
        ("web-b", served.web_b.clone()),
        ("ws", vec![served.ws]),
    ];
    for (service, addresses) in endpoints {
        for address in addresses {
            state.insert(loopback_slice(
                format!("{service}-{}", address.port()),
                service,
                Some("http"),
                address,
            ));
        }
    }
    let table = plan(&state, CONTROLLER);
    assert!(table.problems.is_empty(), "{:?}", table.problems);
    table
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    /// Every response other than 200, and every failed request, said.
    failures: Mutex<Vec<String>>,
    handshakes: AtomicUsize,
    certificates: Mutex<std::collections::HashSet<Vec<u8>>>,
    echoes: AtomicUsize,
}

impl Seen {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

type Sender = client::SendRequest<Full<Bytes>>;

async fn get(sender: &mut Sender, close: bool) -> Result<u16, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = Request::builder()
        .uri("/")
        .header("host", "churn.test")
        .header("connection", if close { "close" } else { "keep-alive" })
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}

/// Kept-alive requests, one after another, until `done`.
async fn http_client(address: SocketAddr, seen: Arc<Seen>, done: Arc<AtomicBool>) {
    let mut sender: Option<Sender> = None;
    while !done.load(Ordering::Relaxed) {
        if sender.is_none() {
            let stream = TcpStream::connect(address).await.unwrap();
            let (s, conn) = client::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            sender = Some(s);
        }
        let Some(s) = sender.as_mut() else { continue };
        match get(s, false).await {
            Ok(200) => {
                seen.requests.fetch_add(1, Ordering::Relaxed);
            }
            Ok(status) => seen.fail(format!("HTTP: status {status}")),
            Err(e) => {
                seen.fail(format!("HTTP: {e}"));
                sender = None;
            }
        }
    }
}

/// A new TLS connection per request, verified for churn.test against
/// either certificate, until `done`.
async fn https_client(
    address: SocketAddr,
    roots: RootCertStore,
    seen: Arc<Seen>,
    done: Arc<AtomicBool>,
) {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Full handshakes: a resumed one (the server gives tickets) presents
    // no certificate, and the rotation would not be seen.
    config.resumption = tokio_rustls::rustls::client::Resumption::disabled();
    let connector = TlsConnector::from(Arc::new(config));
    while !done.load(Ordering::Relaxed) {
        let stream = TcpStream::connect(address).await.unwrap();
        let tls = match connector
            .connect(ServerName::try_from("churn.test").unwrap(), stream)
            .await
        {
            Ok(tls) => tls,
            Err(e) => {
                seen.fail(format!("TLS handshake: {e}"));
                continue;
            }
        };
        seen.handshakes.fetch_add(1, Ordering::Relaxed);
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        seen.certificates.lock().unwrap().insert(presented);
        let (mut sender, conn) = client::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        match get(&mut sender, true).await {
            Ok(200) => {
                seen.requests.fetch_add(1, Ordering::Relaxed);
            }
            Ok(status) => seen.fail(format!("HTTPS: status {status}")),
            Err(e) => seen.fail(format!("HTTPS: {e}")),
        }
    }
}

/// One WebSocket, opened once, echoing until `done`.
async fn websocket(address: SocketAddr, seen: Arc<Seen>, done: Arc<AtomicBool>) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: churn.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "closed before 101"
        );
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{head:?}");
    let mut i = 0u64;
    while !done.load(Ordering::Relaxed) {
        i += 1;
        let message = format!("message {i}\n");
        let mut back = vec![0u8; message.len()];
        let echoed = async {
            stream.write_all(message.as_bytes()).await?;
            stream.read_exact(&mut back).await
        };
        // A bound on a hang (a failure), not a synchronisation.
        match tokio::time::timeout(Duration::from_secs(20), echoed).await {
            Ok(Ok(_)) if back == message.as_bytes() => {
                seen.echoes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(_)) => return seen.fail(format!("WebSocket: {back:?} for {message:?}")),
            Ok(Err(e)) => return seen.fail(format!("WebSocket: {e}")),
            Err(_) => return seen.fail("WebSocket: no echo".into()),
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_endpoints_and_certificates_change_under_load_without_an_error() {
    let certs = [cert(), cert()];
    let mut roots = RootCertStore::empty();
    for c in &certs {
        roots.add(c.der.clone()).unwrap();
    }
    let mut pods_a = vec![pod().await, pod().await];
    let mut pods_b = vec![pod().await, pod().await];
    let mut served = Served {
        web_a: pods_a.iter().map(|p| p.address).collect(),
        web_b: pods_b.iter().map(|p| p.address).collect(),
        ws: echo_backend().await,
        root_to_b: false,
        extra_path: None,
        extra_hosts: Vec::new(),
        cert: 0,
    };
    let config = Config {
        http: Some("127.0.0.1:0".parse().unwrap()),
        https: Some("127.0.0.1:0".parse().unwrap()),
        workers: 2,
        ..Config::default()
    };
    let (server, problems) = IngressServer::start(config, table(&served, &certs)).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let (http, https) = (server.http_address.unwrap(), server.https_address.unwrap());

    let seen = Arc::new(Seen::default());
    let done = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(tokio::spawn(http_client(http, seen.clone(), done.clone())));
    }
    clients.push(tokio::spawn(https_client(
        https,
        roots,
        seen.clone(),
        done.clone(),
    )));
    clients.push(tokio::spawn(websocket(http, seen.clone(), done.clone())));

    // The changes: routes, endpoints and the certificate in turn. A
    // removed pod is stopped a little later (its grace period: requests
    // routed just before the change are still on their way to it).
    let mut stopping = Vec::new();
    let mut next_extra = 0;
    let changes = 180;
    for i in 0..changes {
        match i % 3 {
            0 => match (i / 3) % 4 {
                0 => {
                    next_extra += 1;
                    served.extra_hosts.push(next_extra);
                }
                1 => {
                    if !served.extra_hosts.is_empty() {
                        served.extra_hosts.remove(0);
                    }
                }
                2 => served.root_to_b = !served.root_to_b,
                _ => {
                    served.extra_path = match served.extra_path {
                        Some(_) => None,
                        None => Some(i),
                    }
                }
            },
            1 => {
                let (pods, addresses) = if (i / 3) % 2 == 0 {
                    (&mut pods_a, &mut served.web_a)
                } else {
                    (&mut pods_b, &mut served.web_b)
                };
                if pods.len() < 2 || (pods.len() < 3 && (i / 6) % 2 == 0) {
                    // Ready before it is an endpoint, as a pod is.
                    pods.push(pod().await);
                } else {
                    let gone = pods.remove((i / 6) as usize % pods.len());
                    stopping.push(tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = gone.stop.send(true);
                    }));
                }
                *addresses = pods.iter().map(|p| p.address).collect();
            }
            _ => served.cert = (served.cert + 1) % certs.len(),
        }
        assert!(server.swap(table(&served, &certs)).is_empty());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for s in stopping {
        s.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = std::mem::take(&mut *seen.failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} failures during {changes} changes, {} requests served; the first: {:?}",
        failures.len(),
        seen.requests.load(Ordering::Relaxed),
        &failures[..failures.len().min(10)]
    );
    // The load ran through the changes: requests on all clients, both
    // certificates presented, the WebSocket echoing throughout.
    assert!(seen.requests.load(Ordering::Relaxed) > changes as usize);
    assert!(seen.handshakes.load(Ordering::Relaxed) > 0);
    assert!(seen.echoes.load(Ordering::Relaxed) > changes as usize / 2);
    // Rotation was served: the HTTPS client saw both certificates, and
    // the one served now is the last rotated in (trusting only it).
    assert_eq!(seen.certificates.lock().unwrap().len(), 2);
    let mut only = RootCertStore::empty();
    only.add(certs[served.cert].der.clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(only)
        .with_no_client_auth();
    let stream = TcpStream::connect(https).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("churn.test").unwrap(), stream)
        .await
        .expect("the last certificate rotated in is served");
}
