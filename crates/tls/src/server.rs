//! The server side: certificates chosen by SNI and by what the client can
//! verify, in a configuration that can be replaced while connections run.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::TlsError;
use crate::certs::{CertInfo, CertPair, LoadedPair, load_pair};

/// The oldest protocol version offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    #[default]
    Tls12,
    Tls13,
}

/// What the server's TLS is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsConfig {
    /// The first pair is the default, for clients that send no SNI or a
    /// name no certificate has.
    pub pairs: Vec<CertPair>,
    pub min_version: MinVersion,
}

/// Picks the certificate for a handshake: among those valid for the SNI name
/// (all of them when none is, or no name was sent), the first whose key can
/// sign with a scheme the client offers, ECDSA before RSA (a far cheaper
/// signature for the server, and what modern clients prefer).
#[derive(Debug)]
struct Resolver {
    /// ECDSA and Ed25519 first, then RSA; otherwise in configured order.
    pairs: Vec<LoadedPair>,
}

impl Resolver {
    fn new(mut pairs: Vec<LoadedPair>) -> Resolver {
        pairs.sort_by_key(|p| p.info.key_type == "RSA");
        Resolver { pairs }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        let named: Vec<&LoadedPair> = match hello.server_name() {
            Some(name) => self.pairs.iter().filter(|p| p.info.matches(name)).collect(),
            None => Vec::new(),
        };
        let candidates: Vec<&LoadedPair> = if named.is_empty() {
            self.pairs.iter().collect()
        } else {
            named
        };
        candidates
            .into_iter()
            .find(|p| p.key.key.choose_scheme(schemes).is_some())
            .map(|p| p.key.clone())
    }
}

/// Identifies a file's content without reading it: certbot and friends
/// replace files (a new inode) or rewrite them (a new mtime or length).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    path: PathBuf,
    inode: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    // Through symlinks: /etc/letsencrypt/live/* are links into archive/.
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        path: path.clone(),
        inode: meta.ino(),
        len: meta.len(),
        mtime: meta.modified().ok(),
    })
}

#[derive(Debug)]
struct Loaded {
    config: Arc<rustls::ServerConfig>,
    infos: Vec<CertInfo>,
    stamps: Vec<Option<Stamp>>,
}

/// The server's TLS configuration, replaceable while it serves: each
/// handshake takes the current one, and a connection keeps the one it was
/// made with to its end.
#[derive(Debug)]
pub struct ServerTls {
    source: ServerTlsConfig,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
}

impl ServerTls {
    /// Loads every pair; any error is the caller's to report.
    pub fn load(source: ServerTlsConfig) -> Result<ServerTls, TlsError> {
        let provider = crate::provider();
        let loaded = build(&source, &provider)?;
        Ok(ServerTls {
            source,
            provider,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// The configuration for a new handshake.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current().config.clone()
    }

    /// The certificates in service.
    pub fn certificates(&self) -> Vec<CertInfo> {
        self.current().infos.clone()
    }

    fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again and puts the result in service. On error the
    /// certificates in service stay, and the error says why.
    pub fn reload(&self) -> Result<Vec<CertInfo>, TlsError> {
        let loaded = build(&self.source, &self.provider)?;
        let infos = loaded.infos.clone();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        Ok(infos)
    }

    /// [`reload`](Self::reload), if a file changed since the last load
    /// (renewal tools rewrite certificates without telling anyone). `None`
    /// when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<Vec<CertInfo>, TlsError>> {
        let current = self.current();
        let now: Vec<Option<Stamp>> = files(&self.source).iter().map(stamp).collect();
        if now == current.stamps {
            return None;
        }
        let result = self.reload();
        if result.is_err() {
            // Do not try a broken pair again every round; try once more
            // when the files change again.
            let kept = current.clone_with_stamps(now);
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(kept);
        }
        Some(result)
    }
}

impl Loaded {
    fn clone_with_stamps(&self, stamps: Vec<Option<Stamp>>) -> Loaded {
        Loaded {
            config: self.config.clone(),
            infos: self.infos.clone(),
            stamps,
        }
    }
}

fn files(source: &ServerTlsConfig) -> Vec<PathBuf> {
    source
        .pairs
        .iter()
        .flat_map(|p| [p.cert.clone(), p.key.clone()])
        .collect()
}

fn build(source: &ServerTlsConfig, provider: &Arc<CryptoProvider>) -> Result<Loaded, TlsError> {
    if source.pairs.is_empty() {
        return Err(TlsError::NoPairs);
    }
    // Stamps first: a file replaced while we read it shows as changed at
    // the next check rather than being missed.
    let stamps = files(source).iter().map(stamp).collect();
    let pairs = source
        .pairs
        .iter()
        .map(|pair| load_pair(pair, provider))
        .collect::<Result<Vec<_>, _>>()?;
    let infos = pairs.iter().map(|p| p.info.clone()).collect();
    let versions: &[&rustls::SupportedProtocolVersion] = match source.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver::new(pairs)));
    Ok(Loaded {
        config: Arc::new(config),
        infos,
        stamps,
    })
}
