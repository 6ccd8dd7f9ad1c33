//! The lab's PKI as clients meet it: a rustls client that trusts only the
//! lab's CA completes a handshake (ALPN h2) over loopback; kubeconfigs are
//! the YAML kubectl and kube-rs read; saved PKI files are private and a
//! planted symlink is refused.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use strait_apiserver::tls::{self, Pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn hosts() -> Vec<String> {
    vec!["127.0.0.1".into(), "::1".into(), "localhost".into()]
}

/// A client configuration whose only root is `ca_pem`, offering h2 and http/1.1.
fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Serves one TLS connection on a loopback port bound to 0 (echoing one
/// line back); returns what the client saw: the negotiated ALPN protocol
/// and the echoed bytes, or the handshake error.
async fn handshake(
    server: &Pki,
    client_ca_pem: &str,
    name: &str,
) -> Result<(Option<Vec<u8>>, Vec<u8>), String> {
    let acceptor = TlsAcceptor::from(tls::server_config(server).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        if let Ok(mut stream) = acceptor.accept(tcp).await {
            let mut buf = [0u8; 5];
            if stream.read_exact(&mut buf).await.is_ok() {
                let _ = stream.write_all(&buf).await;
                let _ = stream.shutdown().await;
            }
        }
    });
    let connector = TlsConnector::from(client_config(client_ca_pem));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let result = match connector.connect(server_name, tcp).await {
        Ok(mut stream) => {
            let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            stream.write_all(b"hello").await.unwrap();
            let mut echoed = Vec::new();
            stream.read_to_end(&mut echoed).await.unwrap();
            Ok((alpn, echoed))
        }
        Err(e) => Err(e.to_string()),
    };
    serve.await.unwrap();
    result
}

#[tokio::test]
async fn client_trusting_only_the_lab_ca_completes_a_handshake_with_h2() {
    let pki = Pki::create(&hosts()).unwrap();
    for name in ["127.0.0.1", "localhost", "::1"] {
        let (alpn, echoed) = handshake(&pki, &pki.ca_cert_pem, name)
            .await
            .unwrap_or_else(|e| panic!("handshake as {name}: {e}"));
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "as {name}");
        assert_eq!(echoed, b"hello");
    }
}

#[tokio::test]
async fn a_name_outside_the_certificate_or_another_ca_is_refused() {
    let pki = Pki::create(&hosts()).unwrap();
    let err = handshake(&pki, &pki.ca_cert_pem, "10.9.8.7")
        .await
        .unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
    let err = handshake(&pki, &pki.ca_cert_pem, "kubernetes.default")
        .await
        .unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
    // A second lab's CA does not vouch for this lab's server.
    let other = Pki::create(&hosts()).unwrap();
    let err = handshake(&pki, &other.ca_cert_pem, "127.0.0.1")
        .await
        .unwrap_err();
    // Both CAs are named strait-lab-ca, so webpki finds the name and then
    // fails the signature: refused either way.
    assert!(
        err.contains("BadSignature") || err.contains("UnknownIssuer"),
        "{err}"
    );
}

#[tokio::test]
async fn reissued_server_certificate_chains_to_the_same_ca() {
    let pki = Pki::create(&["127.0.0.1".to_string()]).unwrap();
    let again = pki
        .reissue_server(&["127.0.0.1".into(), "10.0.0.1".into()])
        .unwrap();
    assert_eq!(again.ca_cert_pem, pki.ca_cert_pem);
    assert_ne!(again.server_key_pem, pki.server_key_pem);
    // The client holds the ORIGINAL CA certificate only.
    let (alpn, _) = handshake(&again, &pki.ca_cert_pem, "10.0.0.1")
        .await
        .unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
}

#[test]
fn bad_hosts_are_refused_by_name() {
    let err = Pki::create(&["127.0.0.1".into(), "evil\nhost".into()]).unwrap_err();
    assert_eq!(err.code, 400);
    assert!(err.message.contains("hosts[1]"), "{}", err.message);
}

#[test]
fn kubeconfig_is_what_kubectl_writes_and_kube_rs_reads() {
    let pki = Pki::create(&hosts()).unwrap();
    let token = tls::new_token();
    let text = tls::kubeconfig(
        "strait-lab",
        "https://127.0.0.1:6443",
        &pki.ca_cert_pem,
        "admin",
        &token,
    );
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(doc["apiVersion"], "v1");
    assert_eq!(doc["kind"], "Config");
    assert_eq!(doc["current-context"], "admin@strait-lab");
    let cluster = &doc["clusters"][0];
    assert_eq!(cluster["name"], "strait-lab");
    assert_eq!(cluster["cluster"]["server"], "https://127.0.0.1:6443");
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(
            cluster["cluster"]["certificate-authority-data"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(ca, pki.ca_cert_pem.as_bytes());
    assert_eq!(doc["users"][0]["name"], "admin");
    assert_eq!(doc["users"][0]["user"]["token"], token.as_str());
    assert_eq!(doc["contexts"][0]["name"], "admin@strait-lab");
    assert_eq!(doc["contexts"][0]["context"]["cluster"], "strait-lab");
    assert_eq!(doc["contexts"][0]["context"]["user"], "admin");

    let parsed = kube::config::Kubeconfig::from_yaml(&text).unwrap();
    assert_eq!(parsed.current_context.as_deref(), Some("admin@strait-lab"));
    let named = &parsed.clusters[0];
    let c = named.cluster.as_ref().unwrap();
    assert_eq!(c.server.as_deref(), Some("https://127.0.0.1:6443"));
    assert!(c.certificate_authority_data.is_some());
    let auth = parsed.auth_infos[0].auth_info.as_ref().unwrap();
    assert!(auth.token.is_some());
}

#[test]
fn kubeconfig_values_cannot_inject_keys() {
    let text = tls::kubeconfig(
        "lab\nusers: []",
        "https://127.0.0.1:6443",
        "pem",
        "true",
        "tok: en",
    );
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(doc["clusters"][0]["name"], "lab\nusers: []");
    assert_eq!(doc["users"][0]["name"], "true");
    assert_eq!(doc["users"][0]["user"]["token"], "tok: en");
    assert_eq!(doc["users"].as_array().unwrap().len(), 1);
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "strait-apiserver-tls-{tag}-{}-{}",
            std::process::id(),
            tls::new_token()
        ));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn saved_pki_is_private_and_loads_back() {
    let tmp = TempDir::new("save");
    let dir = tmp.0.join("pki");
    let pki = Pki::create(&hosts()).unwrap();
    pki.save(&dir).unwrap();
    assert_eq!(
        std::fs::metadata(&dir).unwrap().mode() & 0o777,
        0o700,
        "created directory"
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    // No temporary file is left behind.
    assert_eq!(
        names,
        ["apiserver.crt", "apiserver.key", "ca.crt", "ca.key"]
    );
    for name in &names {
        let mode = std::fs::metadata(dir.join(name)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    let loaded = Pki::load(&dir).unwrap();
    assert_eq!(loaded.ca_cert_pem, pki.ca_cert_pem);
    assert_eq!(loaded.ca_key_pem, pki.ca_key_pem);
    assert_eq!(loaded.server_cert_pem, pki.server_cert_pem);
    assert_eq!(loaded.server_key_pem, pki.server_key_pem);
    // Saving again replaces the files in place.
    let other = Pki::create(&hosts()).unwrap();
    other.save(&dir).unwrap();
    assert_eq!(Pki::load(&dir).unwrap().ca_cert_pem, other.ca_cert_pem);
}

#[test]
fn load_refuses_symlinks_loose_modes_and_garbage() {
    let tmp = TempDir::new("load");
    let dir = tmp.0.join("pki");
    let pki = Pki::create(&hosts()).unwrap();
    pki.save(&dir).unwrap();

    // A key planted as a symlink to a file elsewhere.
    let elsewhere = tmp.0.join("elsewhere.key");
    std::fs::write(&elsewhere, &pki.ca_key_pem).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(dir.join("ca.key")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("ca.key")).unwrap();
    let err = Pki::load(&dir).unwrap_err();
    assert!(err.message.contains("symlink"), "{}", err.message);
    std::fs::remove_file(dir.join("ca.key")).unwrap();

    // Readable by others.
    pki.save(&dir).unwrap();
    std::fs::set_permissions(
        dir.join("apiserver.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = Pki::load(&dir).unwrap_err();
    assert!(err.message.contains("mode 644"), "{}", err.message);

    // Not PEM.
    pki.save(&dir).unwrap();
    std::fs::write(dir.join("apiserver.crt"), "not a certificate").unwrap();
    let err = Pki::load(&dir).unwrap_err();
    assert!(err.message.contains("apiserver.crt"), "{}", err.message);

    // The directory itself a symlink.
    let link = tmp.0.join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let err = Pki::load(&link).unwrap_err();
    assert!(err.message.contains("not a directory"), "{}", err.message);
}

#[test]
fn load_refuses_files_owned_by_someone_else() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to give a file to another user");
        return;
    }
    let tmp = TempDir::new("owner");
    let dir = tmp.0.join("pki");
    Pki::create(&hosts()).unwrap().save(&dir).unwrap();
    std::os::unix::fs::chown(dir.join("ca.crt"), Some(65534), Some(65534)).unwrap();
    let err = Pki::load(&dir).unwrap_err();
    assert!(
        err.message.contains("owned by uid 65534"),
        "{}",
        err.message
    );
}
