//! Why a certificate, a key or a trust store could not be used.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// A file could not be read.
    Read { path: PathBuf, error: String },
    /// The certificate file holds no PEM certificate.
    NoCertificate { path: PathBuf },
    /// A certificate that does not parse as X.509.
    BadCertificate { path: PathBuf, error: String },
    /// The key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    NoKey { path: PathBuf },
    /// A key the crypto provider cannot use.
    BadKey { path: PathBuf, error: String },
    /// The key is not the one the certificate was issued for.
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// No certificate was configured.
    NoPairs,
    /// rustls refused the configuration (a protocol version, say).
    Config(String),
    /// No trust anchors: neither a CA file nor the system's store.
    NoRoots(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            TlsError::NoCertificate { path } => {
                write!(f, "{}: no PEM certificate in the file", path.display())
            }
            TlsError::BadCertificate { path, error } => {
                write!(f, "{}: not a valid certificate: {error}", path.display())
            }
            TlsError::NoKey { path } => write!(
                f,
                "{}: no PEM private key in the file (PKCS#8, PKCS#1 or SEC1)",
                path.display()
            ),
            TlsError::BadKey { path, error } => {
                write!(f, "{}: unusable private key: {error}", path.display())
            }
            TlsError::KeyMismatch { cert, key } => write!(
                f,
                "the key in {} does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
            TlsError::NoPairs => f.write_str("no certificate is configured"),
            TlsError::Config(e) => write!(f, "TLS configuration refused: {e}"),
            TlsError::NoRoots(e) => write!(f, "no trust anchors: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}
