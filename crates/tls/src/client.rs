//! The client side, for the delivery threads (and the MTA-STS policy
//! fetch): one configuration that verifies the next hop's certificate, one
//! that does not (opportunistic TLS: encrypting against a passive listener
//! is worth it even when nobody can vouch for the key), and a way to tell,
//! after an unverified handshake, whether the certificate would have passed.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::TlsError;
use crate::certs::read_certificates;

/// Client configurations for next hops, built once and shared.
#[derive(Debug, Clone)]
pub struct ClientTls {
    verified: Arc<rustls::ClientConfig>,
    unverified: Arc<rustls::ClientConfig>,
    verifier: Arc<WebPkiServerVerifier>,
    roots: usize,
}

impl ClientTls {
    /// Trusts the certificates in `ca_file` (PEM), or the system's store
    /// when `None`.
    pub fn new(ca_file: Option<&Path>) -> Result<ClientTls, TlsError> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                for cert in read_certificates(path)? {
                    roots.add(cert).map_err(|e| TlsError::BadCertificate {
                        path: path.to_owned(),
                        error: e.to_string(),
                    })?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                for e in &native.errors {
                    tracing::warn!(error = %e, "system trust store: a certificate was not loaded");
                }
                roots.add_parsable_certificates(native.certs);
            }
        }
        if roots.is_empty() {
            return Err(TlsError::NoRoots(
                "the system's trust store is empty (install ca-certificates, or set ca_file)"
                    .into(),
            ));
        }
        let count = roots.len();
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = || {
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| TlsError::Config(e.to_string()))
        };
        let verified = builder()?
            .with_webpki_verifier(verifier.clone())
            .with_no_client_auth();
        let unverified = builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(verifier.clone())))
            .with_no_client_auth();
        Ok(ClientTls {
            verified: Arc::new(verified),
            unverified: Arc::new(unverified),
            verifier,
            roots: count,
        })
    }

    /// The configuration for a handshake that must (`verify`) or need not
    /// present a certificate valid for the server name.
    pub fn config(&self, verify: bool) -> Arc<rustls::ClientConfig> {
        if verify {
            self.verified.clone()
        } else {
            self.unverified.clone()
        }
    }

    /// How many trust anchors there are.
    pub fn roots(&self) -> usize {
        self.roots
    }

    /// After a handshake: whether the server's certificate chains to a
    /// trusted root and is valid for `name` now. For the log ("Trusted" or
    /// "Untrusted", as Postfix says) after an unverified handshake.
    pub fn is_trusted(&self, conn: &ClientConnection, name: &ServerName<'_>) -> Result<(), String> {
        let Some((leaf, intermediates)) = conn.peer_certificates().and_then(|c| c.split_first())
        else {
            return Err("no certificate".into());
        };
        self.verifier
            .verify_server_cert(leaf, intermediates, name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Accepts any certificate, but still checks that the server holds its
/// key (the handshake signature), so the session is at least encrypted to
/// whoever presented it.
#[derive(Debug)]
struct AnyCertificate(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The provider every Sluice TLS configuration uses: ring, which the build
/// already has through hickory and which needs only a C compiler. rustls
/// 0.23.48 marks it deprecated because it has no post-quantum key exchange
/// (that needs aws-lc-rs); mail servers' peers rarely offer one yet, and a
/// second provider would double the crypto in the build.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
