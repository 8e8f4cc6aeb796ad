//! `[tls]`: the certificates the server presents, and `[delivery.tls]`: how
//! it speaks TLS to next hops.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use sluice_tls::{CertPair, MinVersion, ServerTlsConfig};

/// `[tls]`. With a certificate, `smtp` listeners offer STARTTLS, and
/// `submission` and `smtps` listeners can exist.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// The certificate chain (leaf first, a "fullchain.pem"), or a list of
    /// `{ cert, key }` tables: the one for the client's SNI name is chosen,
    /// ECDSA before RSA for the same name, the first by default.
    pub cert: Option<Certs>,
    /// The private key of `cert` when it is a single file (PKCS#8, PKCS#1
    /// or SEC1 PEM).
    pub key: Option<PathBuf>,
    /// "1.2" (default) or "1.3".
    pub min_version: Option<String>,
    /// How long a client may take over its handshake.
    pub handshake_timeout_secs: Option<u64>,
    /// How often the certificate files are looked at for a renewal (0: only
    /// on SIGHUP). Default 60.
    pub reload_check_secs: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Certs {
    One(PathBuf),
    Many(Vec<PairTable>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairTable {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Tls {
    pub fn handshake_timeout_secs(&self) -> u64 {
        self.handshake_timeout_secs.unwrap_or(30)
    }

    pub fn reload_check_secs(&self) -> u64 {
        self.reload_check_secs.unwrap_or(60)
    }

    /// The certificates as the TLS crate takes them; `Ok(None)` without
    /// `[tls] cert`; `Err` for what `validate` reports.
    pub fn server_config(&self) -> Result<Option<ServerTlsConfig>, String> {
        let pairs = match (&self.cert, &self.key) {
            (None, None) => return Ok(None),
            (None, Some(_)) => return Err("tls.key is set, but tls.cert is not".into()),
            (Some(Certs::One(cert)), Some(key)) => vec![CertPair {
                cert: cert.clone(),
                key: key.clone(),
            }],
            (Some(Certs::One(_)), None) => {
                return Err("tls.cert names one file: tls.key must name its key".into());
            }
            (Some(Certs::Many(list)), None) if !list.is_empty() => list
                .iter()
                .map(|p| CertPair {
                    cert: p.cert.clone(),
                    key: p.key.clone(),
                })
                .collect(),
            (Some(Certs::Many(_)), None) => {
                return Err("tls.cert is an empty list".into());
            }
            (Some(Certs::Many(_)), Some(_)) => {
                return Err(
                    "tls.key goes with a single tls.cert file; in a list, each entry has its key"
                        .into(),
                );
            }
        };
        let min_version = match self.min_version.as_deref() {
            None | Some("1.2") => MinVersion::Tls12,
            Some("1.3") => MinVersion::Tls13,
            Some(other) => {
                return Err(format!(
                    "tls.min_version = {other:?}: \"1.2\" or \"1.3\" (older versions are not spoken)"
                ));
            }
        };
        if self.handshake_timeout_secs == Some(0) {
            return Err("tls.handshake_timeout_secs must be at least 1".into());
        }
        Ok(Some(ServerTlsConfig { pairs, min_version }))
    }
}

/// Postfix's `smtp_tls_security_level`, per destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityLevel {
    /// Never STARTTLS.
    None,
    /// STARTTLS when offered, not verified; in clear when not offered or
    /// when the handshake fails (Postfix's default since 3.11).
    #[default]
    May,
    /// TLS required, the certificate not verified.
    Encrypt,
    /// TLS required, and a certificate valid for the MX host name.
    Verify,
    /// As `verify` (Postfix's `secure` also pins the names to match; with
    /// the MX host name as the name, the two are the same here).
    Secure,
}

/// `[delivery.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryTls {
    pub security_level: SecurityLevel,
    /// PEM file of the CAs to trust; empty: the system's store.
    pub ca_file: PathBuf,
    /// Look up and honour MTA-STS policies (RFC 8461).
    pub mta_sts: bool,
    /// Destination domain → level, over `security_level`.
    pub policy: BTreeMap<String, SecurityLevel>,
    /// The port MTA-STS policies are fetched from. Always 443 on the
    /// Internet; tests point it at a loopback server on another port.
    pub mta_sts_port: u16,
}

impl Default for DeliveryTls {
    fn default() -> Self {
        DeliveryTls {
            security_level: SecurityLevel::May,
            ca_file: PathBuf::new(),
            mta_sts: true,
            policy: BTreeMap::new(),
            mta_sts_port: 443,
        }
    }
}
