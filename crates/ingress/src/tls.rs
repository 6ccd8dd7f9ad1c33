//! Certificates by SNI: the `kubernetes.io/tls` Secrets of the route table,
//! parsed once per table and chosen per handshake.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::plan::TlsCertificate;

/// The parsed certificates of one route table.
#[derive(Debug, Default)]
pub struct Certificates {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By what follows `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// For names no other certificate has (and clients without SNI).
    default: Option<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Parse `certs`; a pair that does not parse, or whose key is not the
    /// certificate's, is left out and said (the Secret named), the others
    /// are served.
    pub fn load(certs: &[TlsCertificate]) -> (Certificates, Vec<String>) {
        let provider = ring::default_provider();
        let mut out = Certificates::default();
        let mut problems = Vec::new();
        for cert in certs {
            let key = match certified_key(cert, &provider) {
                Ok(k) => Arc::new(k),
                Err(why) => {
                    problems.push(format!("{}: {why}; not served", cert.secret));
                    continue;
                }
            };
            if cert.hosts.is_empty() {
                out.default.get_or_insert(key);
                continue;
            }
            for host in &cert.hosts {
                let host = host.to_ascii_lowercase();
                match host.strip_prefix("*.") {
                    Some(rest) => out.wildcard.entry(rest.to_owned()).or_insert(key.clone()),
                    None => out.exact.entry(host).or_insert(key.clone()),
                };
            }
        }
        (out, problems)
    }

    /// The certificate for a client asking for `name` (SNI): the exact
    /// name's, else the one-label wildcard's, else the default.
    pub fn choose(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = name {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(k) = self.exact.get(&name) {
                return Some(k.clone());
            }
            if let Some((first, rest)) = name.split_once('.') {
                if !first.is_empty() {
                    if let Some(k) = self.wildcard.get(rest) {
                        return Some(k.clone());
                    }
                }
            }
        }
        self.default.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }
}

fn certified_key(cert: &TlsCertificate, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&cert.key_pem)
        .map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("tls.crt and tls.key are not a usable pair: {e}"))
}
