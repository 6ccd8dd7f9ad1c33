//! Gateway API through the real data plane on loopback (ports chosen by
//! the kernel): what the planner decides is what a client gets — header
//! modifiers on both ways, a redirect, a path rewrite, weights, the 500 of
//! an invalid backend share, a route timeout, a mirror.

mod common;
use common::loopback_slice;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1 as client;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use strait_ingress::{plan_all, Config, IngressServer, CONTROLLER, GATEWAY_CONTROLLER};
use strait_model::{parse_str, ClusterState, Format};
use tokio::net::{TcpListener, TcpStream};

/// A backend that answers `NAME URI` and the request headers it got (one
/// `name: value` a line), with a response header `x-backend: NAME`; or,
/// when `silent`, never answers. Counts the requests it got.
async fn backend(name: &'static str, silent: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counted = counted.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let counted = counted.clone();
                    async move {
                        counted.fetch_add(1, Ordering::SeqCst);
                        if silent {
                            std::future::pending::<()>().await;
                        }
                        let mut text = format!("{name} {}\n", req.uri());
                        for (n, v) in req.headers() {
                            text.push_str(&format!("{n}: {}\n", v.to_str().unwrap_or("?")));
                        }
                        let mut response = Response::new(Full::new(Bytes::from(text)));
                        response
                            .headers_mut()
                            .insert("x-backend", name.parse().unwrap());
                        response
                            .headers_mut()
                            .insert("x-remove-me", "yes".parse().unwrap());
                        Ok::<_, hyper::Error>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, requests)
}

const MANIFESTS: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: strait}
spec: {controllerName: strait.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: strait
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: '*.gw.test'}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [app.gw.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /headers}}]
    filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-set, value: by-route}], add: [{name: x-add, value: added}], remove: [x-drop]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-route, value: app}], remove: [x-remove-me]}}
    backendRefs: [{name: one, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: new.gw.test, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /api/v1}}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: internal.test, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v1}}}]
    backendRefs: [{name: one, port: 80}]
  - matches: [{path: {type: Exact, value: /split}}]
    backendRefs: [{name: one, port: 80, weight: 1}, {name: two, port: 80, weight: 1}]
  - matches: [{path: {type: Exact, value: /half-broken}}]
    backendRefs: [{name: one, port: 80}, {name: nowhere, port: 80}]
  - matches: [{path: {type: Exact, value: /slow}}]
    timeouts: {request: 200ms}
    backendRefs: [{name: silent, port: 80}]
  - matches: [{path: {type: Exact, value: /mirrored}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: mirror, port: 80}}}]
    backendRefs: [{name: one, port: 80}]
";

fn service(name: &str) -> String {
    format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{clusterIP: None, ports: [{{port: 80}}]}}\n")
}

/// A client connection: HTTP/1.1 (strait's own loop) or h2c with prior
/// knowledge (hyper's server in strait).
enum Sender {
    H1(client::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

async fn connect(address: SocketAddr, h2: bool) -> Sender {
    let stream = TcpStream::connect(address).await.unwrap();
    if h2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        Sender::H2(sender)
    } else {
        let (sender, conn) = client::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        Sender::H1(sender)
    }
}

async fn get(
    sender: &mut Sender,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response<String> {
    let mut req = match sender {
        Sender::H1(_) => Request::builder().uri(path).header("host", host),
        Sender::H2(_) => Request::builder().uri(format!("http://{host}{path}")),
    };
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let response = match sender {
        Sender::H1(s) => {
            s.ready().await.unwrap();
            s.send_request(req).await.unwrap()
        }
        Sender::H2(s) => {
            s.ready().await.unwrap();
            s.send_request(req).await.unwrap()
        }
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn gateway_routes_are_served_as_planned() {
    served_as_planned(false).await;
}

#[tokio::test]
async fn gateway_routes_are_served_as_planned_over_h2c() {
    served_as_planned(true).await;
}

async fn served_as_planned(h2: bool) {
    let (one, _) = backend("one", false).await;
    let (two, _) = backend("two", false).await;
    let (silent, _) = backend("silent", true).await;
    let (mirror, mirrored) = backend("mirror", false).await;
    let mut yaml = String::from(MANIFESTS);
    for name in ["one", "two", "silent", "mirror"] {
        yaml.push_str(&service(name));
    }
    let loaded = parse_str("test.yaml", &yaml, Format::Yaml).unwrap();
    let mut state = ClusterState::from_objects(
        loaded
            .objects
            .into_iter()
            .map(|(o, origin)| (o, Some(origin))),
    )
    .unwrap();
    // Loopback endpoints are made here: admission (rightly) refuses them.
    for (name, address) in [
        ("one", one),
        ("two", two),
        ("silent", silent),
        ("mirror", mirror),
    ] {
        state.insert(loopback_slice(format!("{name}-1"), name, None, address));
    }
    let (table, _) = plan_all(&state, CONTROLLER, GATEWAY_CONTROLLER, None);
    assert!(!table.gateway.is_empty());
    let config = Config {
        http: Some("127.0.0.1:0".parse().unwrap()),
        workers: 1,
        ..Config::default()
    };
    let (server, _) = IngressServer::start(config, table).unwrap();
    let mut c = connect(server.http_address.unwrap(), h2).await;

    // Header modifiers, both ways.
    let r = get(
        &mut c,
        "app.gw.test",
        "/headers",
        &[("x-set", "client"), ("x-add", "client"), ("x-drop", "1")],
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.body());
    let body = r.body();
    assert!(body.starts_with("one /headers\n"), "{body}");
    assert!(
        body.contains("x-set: by-route\n") && !body.contains("x-set: client"),
        "{body}"
    );
    assert!(body.contains("x-add: client,added\n"), "{body}");
    assert!(!body.contains("x-drop"), "{body}");
    assert_eq!(r.headers()["x-route"], "app");
    assert_eq!(r.headers()["x-backend"], "one");
    assert!(!r.headers().contains_key("x-remove-me"));

    // A redirect, answered by strait itself.
    let r = get(&mut c, "app.gw.test", "/old/page?x=1", &[]).await;
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "http://new.gw.test/new/page?x=1");

    // A rewrite: the backend sees the new host and path.
    let r = get(&mut c, "app.gw.test", "/api/v1/users?id=7", &[]).await;
    assert!(r.body().starts_with("one /v1/users?id=7\n"), "{}", r.body());
    assert!(r.body().contains("host: internal.test\n"), "{}", r.body());

    // Weights 1:1, exactly alternating.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = get(&mut c, "app.gw.test", "/split", &[]).await;
        seen.push(r.headers()["x-backend"].to_str().unwrap().to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["one", "one", "two", "two"]);

    // Half the requests go to a backend that does not exist: 500.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            get(&mut c, "app.gw.test", "/half-broken", &[])
                .await
                .status()
                .as_u16(),
        );
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 500, 500]);

    // A host the listener covers but no route has: 404; one it does not
    // cover: 404 as well (no Ingress either).
    assert_eq!(
        get(&mut c, "other.gw.test", "/headers", &[]).await.status(),
        404
    );
    assert_eq!(
        get(&mut c, "app.elsewhere.test", "/headers", &[])
            .await
            .status(),
        404
    );

    // The route's timeout: 504 from a backend that never answers.
    let mut slow = connect(server.http_address.unwrap(), h2).await;
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        get(&mut slow, "app.gw.test", "/slow", &[]),
    )
    .await
    .expect("the route timeout answers first");
    assert_eq!(r.status(), 504);

    // A mirror gets a copy; the client gets the backend's answer.
    let r = get(&mut c, "app.gw.test", "/mirrored", &[]).await;
    assert_eq!(r.headers()["x-backend"], "one");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while mirrored.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mirror got nothing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
