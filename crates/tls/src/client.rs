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
    /// `None` when there is nothing to trust: every verified handshake
    /// then fails, saying so.
    verifier: Option<Arc<WebPkiServerVerifier>>,
    roots: usize,
}

/// Why verification cannot succeed without trust anchors.
const NO_ROOTS: &str =
    "no trust anchors: the system's store is empty (install ca-certificates, or set ca_file)";

impl ClientTls {
    /// Trusts the certificates in `ca_file` (PEM), or the system's store
    /// when `None`. An empty system store is not an error here (mail at
    /// `may` needs no trust), but every verified handshake then fails.
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
                if roots.is_empty() {
                    return Err(TlsError::NoRoots(format!(
                        "{} holds no CA certificate",
                        path.display()
                    )));
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                for e in &native.errors {
                    tracing::warn!(error = %e, "system trust store: a certificate was not loaded");
                }
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    tracing::warn!("{NO_ROOTS}");
                }
            }
        }
        let count = roots.len();
        let verifier = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?,
            )
        };
        let builder = || {
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| TlsError::Config(e.to_string()))
        };
        let any = Arc::new(AnyCertificate(provider.clone()));
        let verified = match &verifier {
            Some(v) => builder()?.with_webpki_verifier(v.clone()),
            None => builder()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCertificate(any.clone()))),
        }
        .with_no_client_auth();
        let unverified = builder()?
            .dangerous()
            .with_custom_certificate_verifier(any)
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
        let Some(verifier) = &self.verifier else {
            return Err(NO_ROOTS.into());
        };
        let Some((leaf, intermediates)) = conn.peer_certificates().and_then(|c| c.split_first())
        else {
            return Err("no certificate".into());
        };
        verifier
            .verify_server_cert(leaf, intermediates, name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Accepts any certificate, but still checks that the server holds its
/// key (the handshake signature), so the session is at least encrypted to
/// whoever presented it.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Refuses every certificate: verification asked for, nothing to trust.
#[derive(Debug)]
struct NoCertificate(Arc<AnyCertificate>);

impl ServerCertVerifier for NoCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(NO_ROOTS.into()))
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
