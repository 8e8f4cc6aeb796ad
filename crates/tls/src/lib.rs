//! Sluice's TLS, on rustls with the ring provider.
//!
//! - [`ServerTls`]: the certificates the server presents, chosen per
//!   handshake by SNI and by what the client can verify (ECDSA before RSA),
//!   in a configuration that [`ServerTls::reload`] replaces while
//!   connections run (each keeps the one it started with).
//! - [`ClientTls`]: verified and unverified client configurations for next
//!   hops, and [`ClientTls::is_trusted`] to tell afterwards.
//! - [`certs`]: PEM loading (PKCS#8, PKCS#1 and SEC1 keys; full chains) and
//!   what a certificate says ([`CertInfo`]), for logs and `check-config`.
//!
//! The protocol (STARTTLS) is `sluice-smtp`'s; the byte pumps around
//! `rustls::ServerConnection` and `ClientConnection` are the front end's and
//! the delivery threads'. This crate only says which keys and which trust.

pub mod certs;
mod client;
mod error;
mod server;

pub use certs::{CertInfo, CertPair};
pub use client::{ClientTls, provider};
pub use error::TlsError;
pub use server::{MinVersion, ServerTls, ServerTlsConfig};

/// The protocol version as logs and `Received:` headers name it
/// (`TLSv1.3`).
pub fn version_name(version: rustls::ProtocolVersion) -> String {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        other => format!("{other:?}"),
    }
}

/// The cipher suite's IANA name (`TLS_AES_256_GCM_SHA384`; rustls calls the
/// TLS 1.3 ones `TLS13_…`).
pub fn cipher_name(suite: rustls::SupportedCipherSuite) -> String {
    let suite = suite.suite();
    match suite.as_str() {
        Some(name) => match name.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => name.to_owned(),
        },
        None => format!("{suite:?}"),
    }
}

#[cfg(test)]
mod tests;
