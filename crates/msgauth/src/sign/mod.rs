//! DKIM signing (RFC 6376, RFC 8463) of mail our users send, and making
//! the keys.
//!
//! Every key configured for the `From:` domain signs: two selectors during
//! a key rotation, or an RSA and an Ed25519 key side by side (RFC 8463 §4
//! suggests both, since not every verifier knows Ed25519 yet).

use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;
use mail_auth::common::crypto::SigningKey as _;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, Signature};

mod key;
mod message;
use key::PrivateKey;

/// The signature algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl Algorithm {
    /// The name in `a=` and in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// `k=` in the DNS record.
    fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }
}

/// One `[[dkim]]`: which key signs for which domain under which selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub domain: String,
    pub selector: String,
    pub key: PathBuf,
    pub algorithm: Algorithm,
}

/// Why a key cannot be used. Names the file: a start-up error must say
/// what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Unreadable { path: PathBuf, error: String },
    Invalid { path: PathBuf, error: String },
    Generate(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Unreadable { path, error } => {
                write!(f, "DKIM key {}: cannot read it: {error}", path.display())
            }
            KeyError::Invalid { path, error } => {
                write!(f, "DKIM key {}: {error}", path.display())
            }
            KeyError::Generate(e) => write!(f, "cannot make a DKIM key: {e}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// The header fields signed, in this order. `From` twice: the second
/// instance, absent from the message, is "oversigned", so nobody can add
/// a second `From:` later without breaking the signature. mail-auth adds
/// every listed field the message lacks to `h=` too, which oversigns
/// `Reply-To:` and the like the same way.
const SIGNED_FIELDS: &[&str] = &[
    "From",
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

struct LoadedKey {
    domain: String,
    selector: String,
    algorithm: Algorithm,
    key: PrivateKey,
    /// The signature but for what depends on the message: algorithm,
    /// domain, selector, the fields to sign, canonicalisation.
    template: message::Template,
}

/// The keys, by domain.
pub struct Signer {
    keys: Vec<LoadedKey>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.domain, &k.selector)))
            .finish()
    }
}

impl Signer {
    /// Reads every key; the first that cannot be used is the error.
    pub fn load(specs: &[KeySpec]) -> Result<Signer, KeyError> {
        let keys = specs
            .iter()
            .map(|spec| {
                let key = key::read(&spec.key, spec.algorithm)?;
                let template = Signature {
                    v: 1,
                    a: key.algorithm(),
                    d: spec.domain.to_ascii_lowercase(),
                    s: spec.selector.clone(),
                    h: SIGNED_FIELDS.iter().map(|h| h.to_string()).collect(),
                    ch: Canonicalization::Relaxed,
                    cb: Canonicalization::Relaxed,
                    ..Default::default()
                };
                Ok(LoadedKey {
                    domain: spec.domain.to_ascii_lowercase(),
                    selector: spec.selector.clone(),
                    algorithm: spec.algorithm,
                    key,
                    template: message::Template::new(template),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Signer { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether some key signs for `domain`.
    pub fn signs_for(&self, domain: &str) -> bool {
        self.keys
            .iter()
            .any(|k| k.domain.eq_ignore_ascii_case(domain))
    }

    /// Whether signing for `domain` is cheap enough to do in passing: every
    /// key of the domain is Ed25519 (tens of microseconds a message; an
    /// RSA-2048 signature costs half a millisecond and more).
    pub fn is_cheap_for(&self, domain: &str) -> bool {
        self.keys
            .iter()
            .filter(|k| k.domain.eq_ignore_ascii_case(domain))
            .all(|k| k.algorithm == Algorithm::Ed25519Sha256)
    }

    /// The `DKIM-Signature:` fields (CRLF included, one per key of
    /// `domain`) for the message whose pieces, in order, are `parts` (its
    /// header section and body as they will be delivered). Empty when no
    /// key signs for the domain.
    pub fn sign(&self, domain: &str, parts: &[&[u8]]) -> Result<String, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut fields = String::new();
        for key in self
            .keys
            .iter()
            .filter(|k| k.domain.eq_ignore_ascii_case(domain))
        {
            let signature = message::sign(&key.template, &key.key, parts, now)
                .map_err(|e| format!("{}/{}: {e}", key.domain, key.selector))?;
            fields.push_str(&signature.to_header());
        }
        Ok(fields)
    }
}

/// A new key pair, as `sluice dkim keygen` writes and prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    /// The private key in PEM (PKCS#8 for Ed25519, PKCS#1 for RSA).
    pub private_pem: String,
    /// The TXT record's value: `v=DKIM1; k=…; p=…`.
    pub dns_txt: String,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("dns_txt", &self.dns_txt)
            .finish_non_exhaustive()
    }
}

/// Makes a key: RSA-2048 or Ed25519.
pub fn generate(algorithm: Algorithm) -> Result<GeneratedKey, KeyError> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let (label, private_der, public) = match algorithm {
        Algorithm::RsaSha256 => {
            let pair = mail_auth::dkim::generate::DkimKeyPair::generate_rsa(2048)
                .map_err(|e| KeyError::Generate(e.to_string()))?;
            let (private, public_pkcs1) = pair.into_inner();
            // DNS records carry the SubjectPublicKeyInfo, as opendkim-genkey
            // and `openssl rsa -pubout` write it; every verifier reads it.
            ("RSA PRIVATE KEY", private, rsa_spki(&public_pkcs1))
        }
        Algorithm::Ed25519Sha256 => {
            let pair = mail_auth::dkim::generate::DkimKeyPair::generate_ed25519()
                .map_err(|e| KeyError::Generate(e.to_string()))?;
            let (private, public) = pair.into_inner();
            // RFC 8463 §4: p= is the bare 32-octet key.
            ("PRIVATE KEY", private, public)
        }
    };
    let mut private_pem = format!("-----BEGIN {label}-----\n");
    for line in b64(&private_der).as_bytes().chunks(64) {
        private_pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        private_pem.push('\n');
    }
    private_pem.push_str(&format!("-----END {label}-----\n"));
    Ok(GeneratedKey {
        private_pem,
        dns_txt: format!("v=DKIM1; k={}; p={}", algorithm.key_type(), b64(&public)),
    })
}

/// Wraps a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (RFC 5280 §4.1,
/// algorithm rsaEncryption with NULL parameters).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    const RSA_ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x00];
    bit_string.extend_from_slice(pkcs1);
    let mut body = RSA_ALGORITHM.to_vec();
    der(0x03, &bit_string, &mut body);
    let mut out = Vec::new();
    der(0x30, &body, &mut out);
    out
}

/// One DER TLV.
fn der(tag: u8, value: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec(dir: &Path, name: &str, algorithm: Algorithm, pem: &str) -> KeySpec {
        let key = dir.join(name);
        std::fs::write(&key, pem).unwrap();
        KeySpec {
            domain: "Example.test".into(),
            selector: name.into(),
            key,
            algorithm,
        }
    }

    #[test]
    fn generated_keys_load_and_sign_with_every_selector_of_the_domain() {
        let dir = tempfile::tempdir().unwrap();
        let ed = generate(Algorithm::Ed25519Sha256).unwrap();
        assert!(ed.dns_txt.starts_with("v=DKIM1; k=ed25519; p="), "{ed:?}");
        let ed_p = ed.dns_txt.rsplit("p=").next().unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(ed_p)
                .unwrap()
                .len(),
            32,
            "RFC 8463: the bare key"
        );
        let rsa = generate(Algorithm::RsaSha256).unwrap();
        assert!(
            rsa.dns_txt
                .starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"),
            "an SPKI of a 2048-bit key: {rsa:?}"
        );
        let signer = Signer::load(&[
            spec(dir.path(), "s1", Algorithm::Ed25519Sha256, &ed.private_pem),
            spec(dir.path(), "s2", Algorithm::RsaSha256, &rsa.private_pem),
        ])
        .unwrap();
        assert!(signer.signs_for("example.TEST"));
        assert!(!signer.is_cheap_for("example.test"), "an RSA key signs too");
        assert!(!signer.signs_for("other.test"));
        let header = b"From: a@example.test\r\nSubject: hi\r\n\r\n";
        let fields = signer.sign("example.test", &[header, b"body\r\n"]).unwrap();
        assert_eq!(fields.matches("DKIM-Signature: ").count(), 2, "{fields}");
        assert!(fields.contains("a=ed25519-sha256") && fields.contains("a=rsa-sha256"));
        assert!(fields.contains("s=s1") && fields.contains("s=s2"));
        assert!(fields.contains("c=relaxed/relaxed"), "{fields}");
        assert!(fields.ends_with("\r\n"));
        assert!(signer.sign("other.test", &[header]).unwrap().is_empty());
    }

    #[test]
    fn a_key_that_cannot_be_used_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = KeySpec {
            domain: "example.test".into(),
            selector: "s".into(),
            key: dir.path().join("nope.key"),
            algorithm: Algorithm::RsaSha256,
        };
        let e = Signer::load(&[missing]).unwrap_err().to_string();
        assert!(e.contains("nope.key") && e.contains("cannot read"), "{e}");
        let ed = generate(Algorithm::Ed25519Sha256).unwrap();
        let wrong = spec(dir.path(), "wrong", Algorithm::RsaSha256, &ed.private_pem);
        let e = Signer::load(&[wrong]).unwrap_err().to_string();
        assert!(e.contains("wrong") && e.contains("not an RSA key"), "{e}");
        let junk = spec(dir.path(), "junk", Algorithm::Ed25519Sha256, "hello");
        let e = Signer::load(&[junk]).unwrap_err().to_string();
        assert!(e.contains("no private key in PEM form"), "{e}");
    }
}
