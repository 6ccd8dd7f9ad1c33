//! The lab's own certificate authority, the server certificate it signs,
//! and kubeconfig files that trust it.
//!
//! The lab is a cluster of its own: like kubeadm it makes a CA
//! (`strait-lab-ca`), signs the API server's certificate for every address
//! a client may dial, and hands out kubeconfigs whose
//! `certificate-authority-data` is that CA — so kubectl and kube-rs verify
//! the server exactly as they verify a real cluster's, with no
//! `insecure-skip-tls-verify`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ApiError;

/// The CA's common name (kubeadm calls its own `kubernetes`).
pub const CA_COMMON_NAME: &str = "strait-lab-ca";
/// The server certificate's common name, as kubeadm names the API server's.
pub const SERVER_COMMON_NAME: &str = "kube-apiserver";

/// How long a server certificate is valid: about a year, as kubeadm's
/// leaf certificates are; the CA lives ten years, as kubeadm's does.
const SERVER_VALID_DAYS: i64 = 365;
const CA_VALID_DAYS: i64 = 3650;

/// File names under the directory [`Pki::save`] writes, as kubeadm names
/// them under /etc/kubernetes/pki.
const CA_CERT_FILE: &str = "ca.crt";
const CA_KEY_FILE: &str = "ca.key";
const SERVER_CERT_FILE: &str = "apiserver.crt";
const SERVER_KEY_FILE: &str = "apiserver.key";

/// A PEM file larger than this is not ours (ours are about 1 KB): refuse
/// it rather than read an unbounded file into memory.
const MAX_PEM_BYTES: u64 = 64 * 1024;

/// PEM texts of the lab's CA and of the API server's certificate.
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca_cert_pem: String,
    /// Kept so that a restarted server can sign again with the same CA.
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl Pki {
    /// A new CA and a server certificate for `hosts` (IP addresses and DNS
    /// names: `127.0.0.1`, `localhost`, the node addresses).
    pub fn create(hosts: &[String]) -> Result<Pki, ApiError> {
        let sans = subject_alt_names(hosts)?;
        let ca_key = KeyPair::generate().map_err(|e| tls_error("generating the CA key", e))?;
        let ca = ca_params(today())
            .self_signed(&ca_key)
            .map_err(|e| tls_error("self-signing the CA certificate", e))?;
        let (server_cert_pem, server_key_pem) = sign_server(&ca, &ca_key, sans)?;
        Ok(Pki {
            ca_cert_pem: ca.pem(),
            ca_key_pem: ca_key.serialize_pem(),
            server_cert_pem,
            server_key_pem,
        })
    }

    /// A new server certificate (and key) for `hosts`, signed by this CA:
    /// a restarted lab whose node addresses changed keeps its CA, so the
    /// kubeconfigs already handed out stay valid.
    pub fn reissue_server(&self, hosts: &[String]) -> Result<Pki, ApiError> {
        let sans = subject_alt_names(hosts)?;
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)
            .map_err(|e| tls_error("reading the CA key (ca.key)", e))?;
        // rcgen signs with the issuer's subject name and the key identifier
        // derived from the issuer's public key; both are the same as the
        // stored CA certificate's, so the new leaf chains to it. The stored
        // CA certificate itself is kept unchanged.
        let ca = ca_params(today())
            .self_signed(&ca_key)
            .map_err(|e| tls_error("rebuilding the CA issuer", e))?;
        let (server_cert_pem, server_key_pem) = sign_server(&ca, &ca_key, sans)?;
        Ok(Pki {
            ca_cert_pem: self.ca_cert_pem.clone(),
            ca_key_pem: self.ca_key_pem.clone(),
            server_cert_pem,
            server_key_pem,
        })
    }

    /// Writes the four PEM files into `dir` (created 0700 if missing),
    /// each 0600 and atomically (temporary file, fsync, rename), so that a
    /// crash leaves either the old file or the new one, never half of one.
    pub fn save(&self, dir: &Path) -> Result<(), ApiError> {
        ensure_private_dir(dir)?;
        for (name, text) in [
            (CA_CERT_FILE, &self.ca_cert_pem),
            (CA_KEY_FILE, &self.ca_key_pem),
            (SERVER_CERT_FILE, &self.server_cert_pem),
            (SERVER_KEY_FILE, &self.server_key_pem),
        ] {
            write_atomically(dir, name, text.as_bytes())?;
        }
        // The renames are durable only once the directory is synced.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, "syncing", e))?;
        Ok(())
    }

    /// Reads what [`Pki::save`] wrote. Refuses symlinks, anything not a
    /// regular file, files not owned by this user, and files readable by
    /// others: a key someone else could have planted or read is not ours.
    /// The result is checked by building the server configuration from it.
    pub fn load(dir: &Path) -> Result<Pki, ApiError> {
        check_private_dir(dir)?;
        let pki = Pki {
            ca_cert_pem: read_private(dir, CA_CERT_FILE)?,
            ca_key_pem: read_private(dir, CA_KEY_FILE)?,
            server_cert_pem: read_private(dir, SERVER_CERT_FILE)?,
            server_key_pem: read_private(dir, SERVER_KEY_FILE)?,
        };
        KeyPair::from_pem(&pki.ca_key_pem)
            .map_err(|e| tls_error(&format!("reading {}", dir.join(CA_KEY_FILE).display()), e))?;
        parse_certs(&pki.ca_cert_pem, CA_CERT_FILE)?;
        server_config(&pki)?;
        Ok(pki)
    }
}

/// The rustls server configuration (HTTP/2 and HTTP/1.1 by ALPN).
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, ApiError> {
    let mut chain = parse_certs(&pki.server_cert_pem, SERVER_CERT_FILE)?;
    // The CA goes along in the chain as kube-apiserver's serving bundle
    // may; clients still need it as a root to trust it.
    chain.extend(parse_certs(&pki.ca_cert_pem, CA_CERT_FILE)?);
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes())
        .map_err(|e| ApiError::internal(format!("tls: {SERVER_KEY_FILE}: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::internal(format!("tls: protocol versions: {e}")))?
        // Clients authenticate with bearer tokens, not certificates.
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| ApiError::internal(format!("tls: server certificate and key: {e}")))?;
    // kubectl and client-go prefer HTTP/2 (watches multiplex on one
    // connection); HTTP/1.1 for curl and older clients.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A kubeconfig (YAML) for `server` (`https://127.0.0.1:6443`) trusting
/// `ca_cert_pem`, authenticating with `token` as `user`.
///
/// Laid out as `kubectl config view --raw` writes one (keys sorted, the
/// context named `USER@CLUSTER` as kubeadm names its admin context).
/// Values that YAML would read as something other than the same string
/// are written double-quoted, so no input can add a key.
pub fn kubeconfig(
    cluster: &str,
    server: &str,
    ca_cert_pem: &str,
    user: &str,
    token: &str,
) -> String {
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_cert_pem.as_bytes());
    let context = format!("{user}@{cluster}");
    format!(
        "apiVersion: v1\n\
         clusters:\n\
         - cluster:\n    \
             certificate-authority-data: {ca}\n    \
             server: {server}\n  \
           name: {cluster}\n\
         contexts:\n\
         - context:\n    \
             cluster: {cluster}\n    \
             user: {user}\n  \
           name: {context}\n\
         current-context: {context}\n\
         kind: Config\n\
         preferences: {{}}\n\
         users:\n\
         - name: {user}\n  \
           user:\n    \
             token: {token}\n",
        ca = yaml_scalar(&ca_data),
        server = yaml_scalar(server),
        cluster = yaml_scalar(cluster),
        user = yaml_scalar(user),
        context = yaml_scalar(&context),
        token = yaml_scalar(token),
    )
}

/// A fresh random bearer token (32 bytes, URL-safe base64).
///
/// The bytes come from the operating system (ring's `SystemRandom`, as
/// rustls' ring provider exposes it; `/dev/urandom` should that fail). If
/// neither can give randomness the process aborts: a guessable token would
/// let anyone in, and this signature has no way to report an error.
pub fn new_token() -> String {
    match try_new_token() {
        Ok(token) => token,
        Err(e) => {
            tracing::error!("no randomness for a bearer token: {e}");
            std::process::abort()
        }
    }
}

/// [`new_token`], with the failure to read randomness as an error.
pub fn try_new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    let provider = rustls::crypto::ring::default_provider();
    if provider.secure_random.fill(&mut bytes).is_err() {
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| ApiError::internal(format!("tls: reading /dev/urandom: {e}")))?;
    }
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn tls_error(what: &str, e: rcgen::Error) -> ApiError {
    ApiError::internal(format!("tls: {what}: {e}"))
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> ApiError {
    ApiError::internal(format!("tls: {what} {}: {e}", path.display()))
}

/// The CA's parameters. Deterministic but for the dates, so that
/// [`Pki::reissue_server`] can rebuild the issuer from the stored key.
fn ca_params(today: i64) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, today - 1, today + CA_VALID_DAYS);
    params
}

/// Signs a server certificate for `sans` with the CA; returns the PEM of
/// the certificate and of its new key.
fn sign_server(
    ca: &Certificate,
    ca_key: &KeyPair,
    sans: Vec<SanType>,
) -> Result<(String, String), ApiError> {
    let key = KeyPair::generate().map_err(|e| tls_error("generating the server key", e))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, SERVER_COMMON_NAME);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    // ECDSA (P-256) keys sign the handshake; they encipher no keys, so
    // keyEncipherment (which kubeadm's RSA certificates carry) is left out.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let today = today();
    // A day back: a client whose clock is a little behind still accepts it.
    set_validity(&mut params, today - 1, today + SERVER_VALID_DAYS);
    let cert = params
        .signed_by(&key, ca, ca_key)
        .map_err(|e| tls_error("signing the server certificate", e))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Each host as an IP SAN (it parses as an address) or a DNS SAN (it is a
/// valid DNS name, RFC 1123 labels); anything else is refused by name.
fn subject_alt_names(hosts: &[String]) -> Result<Vec<SanType>, ApiError> {
    if hosts.is_empty() {
        return Err(ApiError::bad_request(
            "tls: the server certificate needs at least one host name or address",
        ));
    }
    let mut sans = Vec::with_capacity(hosts.len());
    for (i, host) in hosts.iter().enumerate() {
        let san = if let Ok(ip) = host.parse::<IpAddr>() {
            SanType::IpAddress(ip)
        } else if is_dns_name(host) {
            let name = host
                .as_str()
                .try_into()
                .map_err(|e| ApiError::bad_request(format!("tls: hosts[{i}] {host:?}: {e}")))?;
            SanType::DnsName(name)
        } else {
            return Err(ApiError::bad_request(format!(
                "tls: hosts[{i}] {host:?} is neither an IP address nor a DNS name \
                 (RFC 1123: labels of a-z, 0-9 and '-', at most 63 characters each, 253 in all)"
            )));
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

/// A DNS name as RFC 1123 and kube's `IsDNS1123Subdomain` allow it (case
/// aside: certificates match names case-insensitively).
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= 63
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && bytes.first() != Some(&b'-')
                && bytes.last() != Some(&b'-')
        })
}

fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, ApiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::internal(format!("tls: {what}: {e}")))?;
    if certs.is_empty() {
        return Err(ApiError::internal(format!(
            "tls: {what}: no CERTIFICATE block"
        )));
    }
    Ok(certs)
}

/// Days since 1970-01-01 (UTC), today.
fn today() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i64::try_from(secs / 86_400).unwrap_or(0)
}

/// Sets the validity from day `from` to day `to` (days since 1970-01-01,
/// midnight UTC), through rcgen's own date helper so no date crate is
/// needed here.
fn set_validity(params: &mut CertificateParams, from: i64, to: i64) {
    let (y, m, d) = civil_from_days(from);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(to);
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

/// The (year, month, day) of a day number (days since 1970-01-01, UTC),
/// clamped to years 1–9999: always a valid date, which `date_time_ymd`
/// requires.
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    use strait_model::k8s_openapi::jiff::{tz::TimeZone, Timestamp};
    let t = days
        .checked_mul(86_400)
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or(if days < 0 {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        });
    let date = t.to_zoned(TimeZone::UTC).date();
    let year = i32::from(date.year()).clamp(1, 9999);
    (year, date.month() as u8, date.day() as u8)
}

/// A YAML scalar: plain when YAML reads it back as this very string,
/// double-quoted (a JSON string is a valid YAML double-quoted scalar)
/// otherwise.
fn yaml_scalar(s: &str) -> String {
    let plain_chars = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-/:@+=".contains(&b));
    let starts_plain = s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    let lower = s.to_ascii_lowercase();
    let looks_typed = matches!(
        lower.as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
    ) || s.parse::<f64>().is_ok()
        || s.bytes()
            .all(|b| b.is_ascii_digit() || b"_:.-+eExXoObB".contains(&b));
    if plain_chars && starts_plain && !looks_typed && !s.contains(": ") {
        s.to_owned()
    } else {
        serde_json::Value::String(s.to_owned()).to_string()
    }
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// `dir` exists (created 0700 otherwise) and passes [`check_private_dir`].
fn ensure_private_dir(dir: &Path) -> Result<(), ApiError> {
    match fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_error(dir, "creating", e))?;
        }
        Err(e) => return Err(io_error(dir, "reading", e)),
    }
    check_private_dir(dir)
}

/// A directory, not a symlink, owned by us and not writable by others
/// (who could otherwise swap our files under us).
fn check_private_dir(dir: &Path) -> Result<(), ApiError> {
    let meta = fs::symlink_metadata(dir).map_err(|e| io_error(dir, "reading", e))?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err(ApiError::internal(format!(
            "tls: {} is not a directory (symlinks are refused)",
            dir.display()
        )));
    }
    if meta.uid() != euid() {
        return Err(ApiError::internal(format!(
            "tls: {} is owned by uid {}, not by us (uid {})",
            dir.display(),
            meta.uid(),
            euid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(ApiError::internal(format!(
            "tls: {} is writable by group or others (mode {:o})",
            dir.display(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Writes `dir/name` through a fresh temporary file (O_EXCL, O_NOFOLLOW,
/// 0600) renamed over it: readers see the old file or the whole new one.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ApiError> {
    let target = dir.join(name);
    let mut suffix = [0u8; 8];
    let provider = rustls::crypto::ring::default_provider();
    // A unique temporary name; create_new refuses an existing one anyway.
    let _ = provider.secure_random.fill(&mut suffix);
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        u64::from_le_bytes(suffix)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&tmp)?;
        // The mode given to open is masked by the umask; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &target)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(&target, "writing", e));
    }
    Ok(())
}

/// Reads `dir/name` without following a symlink, checking the opened file
/// itself (fstat, not the path): a regular file, ours, not readable or
/// writable by group or others, and small.
fn read_private(dir: &Path, name: &str) -> Result<String, ApiError> {
    let path = dir.join(name);
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                ApiError::internal(format!(
                    "tls: {} is a symlink; refusing to follow it",
                    path.display()
                ))
            } else {
                io_error(&path, "opening", e)
            }
        })?;
    let meta = file.metadata().map_err(|e| io_error(&path, "reading", e))?;
    if !meta.is_file() {
        return Err(ApiError::internal(format!(
            "tls: {} is not a regular file",
            path.display()
        )));
    }
    if meta.uid() != euid() {
        return Err(ApiError::internal(format!(
            "tls: {} is owned by uid {}, not by us (uid {}); refusing it",
            path.display(),
            meta.uid(),
            euid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(ApiError::internal(format!(
            "tls: {} has mode {:o}; it must be 0600 (no access for group or others)",
            path.display(),
            meta.mode() & 0o7777
        )));
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(ApiError::internal(format!(
            "tls: {} is {} bytes, more than a PEM file of ours ({MAX_PEM_BYTES})",
            path.display(),
            meta.len()
        )));
    }
    let mut text = String::new();
    file.take(MAX_PEM_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| io_error(&path, "reading", e))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_422), (2025, 11, 30));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn yaml_scalars_quote_what_yaml_would_retype() {
        assert_eq!(yaml_scalar("admin"), "admin");
        assert_eq!(
            yaml_scalar("https://127.0.0.1:6443"),
            "https://127.0.0.1:6443"
        );
        assert_eq!(yaml_scalar("true"), "\"true\"");
        assert_eq!(yaml_scalar("6443"), "\"6443\"");
        assert_eq!(yaml_scalar("1e3"), "\"1e3\"");
        assert_eq!(yaml_scalar("a\nb: c"), "\"a\\nb: c\"");
        assert_eq!(yaml_scalar("-x"), "\"-x\"");
        assert_eq!(yaml_scalar(""), "\"\"");
    }

    #[test]
    fn hosts_become_ip_or_dns_sans_and_bad_ones_are_named() {
        let sans = subject_alt_names(&[
            "127.0.0.1".into(),
            "::1".into(),
            "localhost".into(),
            "lab-node-1.example".into(),
            "localhost".into(),
        ])
        .unwrap();
        assert_eq!(sans.len(), 4);
        assert!(matches!(sans[0], SanType::IpAddress(_)));
        assert!(matches!(sans[1], SanType::IpAddress(_)));
        assert!(matches!(sans[2], SanType::DnsName(_)));
        let err = subject_alt_names(&["ok".into(), "bad host".into()]).unwrap_err();
        assert!(err.message.contains("hosts[1]"), "{}", err.message);
        assert!(subject_alt_names(&[]).is_err());
        assert!(subject_alt_names(&["-a.b".into()]).is_err());
        assert!(subject_alt_names(&["a..b".into()]).is_err());
    }

    #[test]
    fn tokens_are_32_random_bytes_url_safe() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&a)
            .unwrap();
        assert_eq!(bytes.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
