//! A certificate authority made at test time, and the leaf certificates it
//! signs: no key is ever committed. ECDSA keys come from rcgen; RSA keys
//! from `openssl genrsa` (rcgen on ring cannot make RSA keys), which the
//! TLS tests need anyway for `openssl s_client`.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber,
};

/// The kind of key a leaf certificate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256.
    Ecdsa,
    /// RSA 2048.
    Rsa,
}

/// A leaf certificate and its key, in PEM.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    /// The serial, in upper-case hex without separators.
    pub serial: String,
}

impl Leaf {
    /// Writes `<name>.crt` (the leaf, then the CA: a full chain) and
    /// `<name>.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str, ca: &TestCa) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, format!("{}{}", self.cert_pem, ca.cert_pem()))
            .expect("write the certificate");
        std::fs::write(&key, &self.key_pem).expect("write the key");
        (cert, key)
    }
}

/// What a leaf is for and how it is made.
#[derive(Debug, Clone)]
pub struct LeafSpec<'a> {
    pub names: &'a [&'a str],
    pub key: KeyKind,
    /// Fixed, so that tests can tell certificates apart by serial.
    pub serial: u64,
    /// Valid from 2020 to 2020 only: for expiry warnings.
    pub expired: bool,
}

impl<'a> LeafSpec<'a> {
    pub fn new(names: &'a [&'a str], serial: u64) -> Self {
        LeafSpec {
            names,
            key: KeyKind::Ecdsa,
            serial,
            expired: false,
        }
    }
}

/// A throwaway certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "Sluice Test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("the CA certificate"),
        }
    }

    /// The CA certificate, for clients' trust stores.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `path`.
    pub fn write_cert(&self, path: &Path) {
        std::fs::write(path, self.cert_pem()).expect("write the CA certificate");
    }

    pub fn leaf(&self, spec: &LeafSpec<'_>) -> Leaf {
        let key_pem = match spec.key {
            KeyKind::Ecdsa => KeyPair::generate().expect("an ECDSA key").serialize_pem(),
            KeyKind::Rsa => rsa_key_pem(),
        };
        let key = KeyPair::from_pem(&key_pem).expect("the key parses");
        let names: Vec<String> = spec.names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        if let Some(first) = spec.names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.serial_number = Some(SerialNumber::from(spec.serial.to_be_bytes().to_vec()));
        if spec.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem,
            serial: serial_hex(spec.serial),
        }
    }
}

/// A serial as `openssl x509 -serial` prints it: upper-case hex, the
/// minimal even number of digits.
pub fn serial_hex(serial: u64) -> String {
    let hex = format!("{serial:X}");
    if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    }
}

/// A fresh RSA 2048 key in PKCS#8 PEM, from openssl.
fn rsa_key_pem() -> String {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("run openssl genpkey (Debian package openssl)");
    assert!(out.status.success(), "openssl genpkey failed");
    String::from_utf8(out.stdout).expect("PEM is ASCII")
}

/// The same key in its algorithm's own format: PKCS#1 for RSA, SEC1 for
/// EC (what `openssl pkey -traditional` writes, and older tools made).
pub fn traditional_key_pem(key_pem: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["pkey", "-traditional"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl pkey");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(key_pem.as_bytes())
        .expect("write the key");
    let out = child.wait_with_output().expect("openssl pkey ends");
    assert!(out.status.success(), "openssl pkey failed");
    String::from_utf8(out.stdout).expect("PEM is ASCII")
}
