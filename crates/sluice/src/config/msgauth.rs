//! `[authentication]` (checks of inbound mail) and `[[dkim]]` (signing keys).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sluice_dns::Resolver;
use sluice_msgauth::{Algorithm, Checker, Checks, KeySpec, Signer};

/// `[authentication]`: what is checked on mail from clients that are
/// neither trusted nor logged in. All on by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Authentication {
    pub spf: bool,
    pub dkim: bool,
    pub dmarc: bool,
    pub arc: bool,
    /// The client's address has a PTR name that resolves back to it.
    pub iprev: bool,
    /// The longest one check may take, its DNS lookups included.
    pub timeout_secs: u64,
    /// Threads that run the checks and the DKIM signatures.
    pub threads: usize,
}

impl Default for Authentication {
    fn default() -> Self {
        Authentication {
            spf: true,
            dkim: true,
            dmarc: true,
            arc: true,
            iprev: true,
            timeout_secs: 10,
            threads: 4,
        }
    }
}

/// One `[[dkim]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dkim {
    /// Mail whose `From:` is in this domain is signed with this key.
    pub domain: String,
    pub selector: String,
    /// The private key in PEM (PKCS#8, or PKCS#1 for RSA).
    pub key: PathBuf,
    #[serde(default)]
    pub algorithm: DkimAlgorithm,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum DkimAlgorithm {
    #[default]
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    #[serde(rename = "ed25519-sha256")]
    Ed25519Sha256,
}

impl From<DkimAlgorithm> for Algorithm {
    fn from(a: DkimAlgorithm) -> Algorithm {
        match a {
            DkimAlgorithm::RsaSha256 => Algorithm::RsaSha256,
            DkimAlgorithm::Ed25519Sha256 => Algorithm::Ed25519Sha256,
        }
    }
}

impl Authentication {
    pub fn checks(&self) -> Checks {
        Checks {
            spf: self.spf,
            dkim: self.dkim,
            dmarc: self.dmarc,
            arc: self.arc,
            iprev: self.iprev,
        }
    }

    /// The checker, when anything is checked; `authserv_id` is our hostname.
    pub fn checker(&self, dns: &Resolver, authserv_id: String) -> Option<Checker> {
        let checks = self.checks();
        checks.any().then(|| {
            Checker::new(
                dns.clone(),
                authserv_id,
                checks,
                Duration::from_secs(self.timeout_secs),
            )
        })
    }

    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.timeout_secs == 0 {
            problems.push("authentication.timeout_secs must be at least 1".into());
        }
        if self.threads == 0 {
            problems.push("authentication.threads must be at least 1".into());
        }
        problems
    }
}

/// What `validate` reports about `[[dkim]]` (the keys themselves are read
/// by [`signer`], at start and by `check-config`).
pub fn dkim_problems(keys: &[Dkim]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if sluice_smtp::Domain::parse(&k.domain).is_none() || k.domain.starts_with('[') {
            problems.push(format!("dkim[{i}].domain: {:?} is not a domain", k.domain));
        }
        let selector_ok = !k.selector.is_empty()
            && k.selector.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !selector_ok {
            problems.push(format!(
                "dkim[{i}].selector: {:?} is not a DNS label (letters, digits, -)",
                k.selector
            ));
        }
        if keys[..i].iter().any(|o| {
            o.domain.eq_ignore_ascii_case(&k.domain) && o.selector.eq_ignore_ascii_case(&k.selector)
        }) {
            problems.push(format!(
                "dkim[{i}]: {} selector {} is configured twice",
                k.domain, k.selector
            ));
        }
    }
    problems
}

/// The signing keys, read now: a key that cannot be used is an error
/// naming its file.
pub fn signer(keys: &[Dkim]) -> Result<Option<Arc<Signer>>, String> {
    if keys.is_empty() {
        return Ok(None);
    }
    let specs: Vec<KeySpec> = keys
        .iter()
        .map(|k| KeySpec {
            domain: k.domain.clone(),
            selector: k.selector.clone(),
            key: k.key.clone(),
            algorithm: k.algorithm.into(),
        })
        .collect();
    Signer::load(&specs)
        .map(|s| Some(Arc::new(s)))
        .map_err(|e| e.to_string())
}
