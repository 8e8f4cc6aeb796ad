//! Certificates and keys from PEM files, and what an operator needs to know
//! about a certificate: its names, serial and validity.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::TlsError;

/// A certificate chain and its private key, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    /// The chain, leaf first (a "fullchain.pem").
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What the leaf certificate of a pair says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub cert: PathBuf,
    /// DNS names from subjectAltName (the subject's CN when there is none),
    /// lower-cased; `*.example.com` for a wildcard.
    pub names: Vec<String>,
    /// The serial number in hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// `RSA`, `ECDSA` or `Ed25519`.
    pub key_type: &'static str,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Certificates in the chain, leaf included.
    pub chain_len: usize,
}

impl CertInfo {
    /// Whether the certificate is outside its validity at `now`.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        now > self.not_after || now < self.not_before
    }

    /// Whether the certificate is valid for `name` (an SNI host name): an
    /// exact match, or a wildcard that stands for exactly one label.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            Some(parent) => name
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => *n == name,
        })
    }
}

/// A pair loaded and checked: the key matches the certificate.
#[derive(Debug, Clone)]
pub struct LoadedPair {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.to_owned(),
        error: e.to_string(),
    })
}

/// Reads every PEM certificate in `path`, in order.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            error: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Loads a pair with `provider`, checking that the key is the certificate's.
pub fn load_pair(pair: &CertPair, provider: &CryptoProvider) -> Result<LoadedPair, TlsError> {
    let chain = read_certificates(&pair.cert)?;
    let info = inspect(&pair.cert, &chain)?;
    let key_pem = read(&pair.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey {
        path: pair.key.clone(),
    })?;
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::BadKey {
                path: pair.key.clone(),
                error: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                cert: pair.cert.clone(),
                key: pair.key.clone(),
            });
        }
        // The provider cannot tell (no public key from this key type):
        // a mismatch will show as failed handshakes, which rustls logs.
        Err(_) => {}
    }
    Ok(LoadedPair {
        key: Arc::new(certified),
        info,
    })
}

/// Reads the leaf of `chain` (from the file `path`).
pub fn inspect(path: &Path, chain: &[CertificateDer<'_>]) -> Result<CertInfo, TlsError> {
    let bad = |error: String| TlsError::BadCertificate {
        path: path.to_owned(),
        error,
    };
    let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate {
        path: path.to_owned(),
    })?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| bad(e.to_string()))?;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(bad(e.to_string())),
    };
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let key_type = match cert
        .public_key()
        .algorithm
        .algorithm
        .to_id_string()
        .as_str()
    {
        "1.2.840.113549.1.1.1" => "RSA",
        "1.2.840.10045.2.1" => "ECDSA",
        "1.3.101.112" => "Ed25519",
        _ => "other",
    };
    let time = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    Ok(CertInfo {
        cert: path.to_owned(),
        names,
        serial: cert
            .raw_serial_as_string()
            .replace(':', "")
            .to_ascii_uppercase(),
        key_type,
        not_before: time(cert.validity().not_before.timestamp()),
        not_after: time(cert.validity().not_after.timestamp()),
        chain_len: chain.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(names: &[&str]) -> CertInfo {
        CertInfo {
            cert: PathBuf::new(),
            names: names.iter().map(|s| s.to_string()).collect(),
            serial: String::new(),
            key_type: "ECDSA",
            not_before: UNIX_EPOCH,
            not_after: UNIX_EPOCH + Duration::from_secs(100),
            chain_len: 1,
        }
    }

    #[test]
    fn a_wildcard_stands_for_one_label() {
        let c = info(&["*.example.com", "example.com"]);
        assert!(c.matches("mx.example.com"));
        assert!(c.matches("MX.Example.COM."));
        assert!(c.matches("example.com"));
        assert!(!c.matches("a.b.example.com"));
        assert!(!c.matches("example.org"));
        assert!(!c.matches(".example.com"));
    }

    #[test]
    fn validity_is_a_closed_window() {
        let c = info(&[]);
        assert!(!c.expired_at(UNIX_EPOCH + Duration::from_secs(50)));
        assert!(c.expired_at(UNIX_EPOCH + Duration::from_secs(101)));
    }
}
