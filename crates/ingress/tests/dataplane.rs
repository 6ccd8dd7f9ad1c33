//! The data plane on real sockets (loopback, ports chosen by the kernel):
//! routing, round robin, keep-alive to endpoints, the error statuses, a
//! table swap under an open connection, TLS by SNI.

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
use strait_model::k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use strait_model::{parse_str, ClusterState, Format, Object};
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
            state.insert(Object::EndpointSlice(Arc::new(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("{service}-{i}")),
                    namespace: Some("default".into()),
                    labels: Some(
                        [("kubernetes.io/service-name".to_owned(), service.to_string())].into(),
                    ),
                    ..ObjectMeta::default()
                },
                address_type: "IPv4".into(),
                ports: Some(vec![EndpointPort {
                    name: Some("http".into()),
                    port: Some(address.port().into()),
                    protocol: Some("TCP".into()),
                    ..EndpointPort::default()
                }]),
                endpoints: vec![Endpoint {
                    addresses: vec![address.ip().to_string()],
                    ..Endpoint::default()
                }],
            })));
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
    let unreachable = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
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
    // The endpoint connections of the old table are kept too: back to it,
    // no new connection to a.
    server.swap(table(&before, endpoints));
    for client in &mut clients {
        assert!(get(client, "web.test", "/").await.1.starts_with("a "));
    }
    assert!(
        a.connections.load(Ordering::SeqCst) <= 2,
        "one per worker at most"
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
