//! Handshakes in memory between rustls clients and our server
//! configuration, with certificates from a test CA.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConnection, DigitallySignedStruct, ServerConnection, SignatureScheme};
use sluice_testkit::tls::{KeyKind, LeafSpec, TestCa, serial_hex, traditional_key_pem};

use super::*;

/// Moves TLS records both ways until neither side has more to say.
fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), String> {
    for _ in 0..20 {
        let mut moved = false;
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).map_err(|e| e.to_string())?;
        }
        if !buf.is_empty() {
            moved = true;
            let mut slice = &buf[..];
            while !slice.is_empty() {
                server.read_tls(&mut slice).map_err(|e| e.to_string())?;
                server
                    .process_new_packets()
                    .map_err(|e| format!("server: {e}"))?;
            }
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).map_err(|e| e.to_string())?;
        }
        if !buf.is_empty() {
            moved = true;
            let mut slice = &buf[..];
            while !slice.is_empty() {
                client.read_tls(&mut slice).map_err(|e| e.to_string())?;
                client
                    .process_new_packets()
                    .map_err(|e| format!("client: {e}"))?;
            }
        }
        if !moved {
            return if client.is_handshaking() || server.is_handshaking() {
                Err("stalled".into())
            } else {
                Ok(())
            };
        }
    }
    Err("too many rounds".into())
}

/// The serial of the certificate the client got.
fn served_serial(client: &ClientConnection) -> String {
    let leaf = &client.peer_certificates().expect("a certificate")[0];
    certs::inspect(Path::new("served"), std::slice::from_ref(leaf))
        .expect("it parses")
        .serial
}

struct Fixture {
    dir: tempfile::TempDir,
    ca: TestCa,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        ca.write_cert(&dir.path().join("ca.pem"));
        Fixture { dir, ca }
    }

    fn pair(&self, file: &str, spec: &LeafSpec<'_>) -> CertPair {
        let (cert, key) = self.ca.leaf(spec).write(self.dir.path(), file, &self.ca);
        CertPair { cert, key }
    }

    fn client(&self) -> ClientTls {
        ClientTls::new(Some(&self.dir.path().join("ca.pem"))).unwrap()
    }
}

fn connect(
    client: &ClientTls,
    verify: bool,
    server: &ServerTls,
    name: &str,
) -> Result<(ClientConnection, ServerConnection), String> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let mut c = ClientConnection::new(client.config(verify), name).unwrap();
    let mut s = ServerConnection::new(server.config()).unwrap();
    handshake(&mut c, &mut s)?;
    Ok((c, s))
}

#[test]
fn sni_picks_the_certificate_for_the_name_and_defaults_to_the_first() {
    let f = Fixture::new();
    let a = f.pair("a", &LeafSpec::new(&["mx.a.test"], 0xA));
    let b = f.pair("b", &LeafSpec::new(&["mx.b.test", "*.b.test"], 0xB));
    let server = ServerTls::load(ServerTlsConfig {
        pairs: vec![a, b],
        min_version: MinVersion::Tls12,
    })
    .unwrap();
    let client = f.client();
    let (c, s) = connect(&client, true, &server, "mx.b.test").unwrap();
    assert_eq!(served_serial(&c), serial_hex(0xB));
    assert_eq!(s.server_name(), Some("mx.b.test"));
    let (c, _) = connect(&client, true, &server, "other.b.test").unwrap();
    assert_eq!(served_serial(&c), serial_hex(0xB));
    // A name nobody has: the first pair (and a verifying client refuses it).
    assert!(connect(&client, true, &server, "mx.c.test").is_err());
    let (c, _) = connect(&client, false, &server, "mx.c.test").unwrap();
    assert_eq!(served_serial(&c), serial_hex(0xA));
    let name = ServerName::try_from("mx.c.test").unwrap();
    assert!(
        client.is_trusted(&c, &name).is_err(),
        "untrusted for that name"
    );
    let name = ServerName::try_from("mx.a.test").unwrap();
    assert_eq!(client.is_trusted(&c, &name), Ok(()));
}

/// A client that can only verify RSA signatures.
#[derive(Debug)]
struct RsaOnly(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for RsaOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256,
        ]
    }
}

#[test]
fn ecdsa_is_preferred_and_rsa_serves_clients_that_need_it() {
    let f = Fixture::new();
    let rsa = f.pair(
        "rsa",
        &LeafSpec {
            key: KeyKind::Rsa,
            ..LeafSpec::new(&["mx.example.test"], 0x1)
        },
    );
    let ecdsa = f.pair("ecdsa", &LeafSpec::new(&["mx.example.test"], 0x2));
    // RSA configured first (and listed first): ECDSA still goes to those
    // who can take it.
    let server = ServerTls::load(ServerTlsConfig {
        pairs: vec![rsa, ecdsa],
        min_version: MinVersion::Tls12,
    })
    .unwrap();
    let infos = server.certificates();
    assert_eq!(
        infos.iter().map(|i| i.key_type).collect::<Vec<_>>(),
        ["RSA", "ECDSA"]
    );
    let client = f.client();
    let (c, _) = connect(&client, true, &server, "mx.example.test").unwrap();
    assert_eq!(served_serial(&c), serial_hex(0x2));

    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new({
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs::read_certificates(&f.dir.path().join("ca.pem")).unwrap() {
                roots.add(cert).unwrap();
            }
            roots
        }),
        provider(),
    )
    .build()
    .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RsaOnly(verifier)))
        .with_no_client_auth();
    let mut c = ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("mx.example.test").unwrap(),
    )
    .unwrap();
    let mut s = ServerConnection::new(server.config()).unwrap();
    handshake(&mut c, &mut s).unwrap();
    assert_eq!(served_serial(&c), serial_hex(0x1));
}

#[test]
fn keys_in_every_pem_format_load_and_a_wrong_key_is_named() {
    let f = Fixture::new();
    for (kind, file) in [(KeyKind::Ecdsa, "ec"), (KeyKind::Rsa, "rsa")] {
        let leaf = f.ca.leaf(&LeafSpec {
            key: kind,
            ..LeafSpec::new(&["mx.example.test"], 7)
        });
        let (cert, key) = leaf.write(f.dir.path(), file, &f.ca);
        // SEC1 ("EC PRIVATE KEY") and PKCS#1 ("RSA PRIVATE KEY").
        let traditional = traditional_key_pem(&leaf.key_pem);
        assert!(!traditional.contains("BEGIN PRIVATE KEY"), "{traditional}");
        std::fs::write(&key, traditional).unwrap();
        let pair = CertPair { cert, key };
        let loaded = certs::load_pair(&pair, &provider()).unwrap();
        assert_eq!(loaded.info.chain_len, 2, "the full chain is kept");
    }
    let a = f.pair("a", &LeafSpec::new(&["a.test"], 1));
    let b = f.pair("b", &LeafSpec::new(&["b.test"], 2));
    let crossed = CertPair {
        cert: a.cert.clone(),
        key: b.key.clone(),
    };
    assert_eq!(
        certs::load_pair(&crossed, &provider()).unwrap_err(),
        TlsError::KeyMismatch {
            cert: a.cert.clone(),
            key: b.key.clone()
        }
    );
    let missing = CertPair {
        cert: f.dir.path().join("missing.crt"),
        key: a.key.clone(),
    };
    assert!(matches!(
        certs::load_pair(&missing, &provider()).unwrap_err(),
        TlsError::Read { .. }
    ));
    std::fs::write(f.dir.path().join("empty.key"), "not a key\n").unwrap();
    let keyless = CertPair {
        cert: a.cert.clone(),
        key: f.dir.path().join("empty.key"),
    };
    assert!(matches!(
        certs::load_pair(&keyless, &provider()).unwrap_err(),
        TlsError::NoKey { .. }
    ));
}

#[test]
fn an_expired_certificate_says_so() {
    let f = Fixture::new();
    let pair = f.pair(
        "old",
        &LeafSpec {
            expired: true,
            ..LeafSpec::new(&["mx.example.test"], 3)
        },
    );
    let loaded = certs::load_pair(&pair, &provider()).unwrap();
    assert!(loaded.info.expired_at(std::time::SystemTime::now()));
    assert_eq!(loaded.info.names, ["mx.example.test"]);
}

#[test]
fn reload_puts_new_files_in_service_and_keeps_the_old_on_error() {
    let f = Fixture::new();
    let pair = f.pair("live", &LeafSpec::new(&["mx.example.test"], 0x10));
    let server = ServerTls::load(ServerTlsConfig {
        pairs: vec![pair.clone()],
        min_version: MinVersion::Tls13,
    })
    .unwrap();
    let client = f.client();
    assert!(server.reload_if_changed().is_none(), "nothing changed");
    // A connection made now keeps its certificate across the reload.
    let (before, _) = connect(&client, true, &server, "mx.example.test").unwrap();

    // A renewal rewrites both files.
    f.pair("live", &LeafSpec::new(&["mx.example.test"], 0x11));
    let infos = server.reload_if_changed().expect("a change").unwrap();
    assert_eq!(infos[0].serial, serial_hex(0x11));
    let (after, _) = connect(&client, true, &server, "mx.example.test").unwrap();
    assert_eq!(served_serial(&after), serial_hex(0x11));
    assert_eq!(served_serial(&before), serial_hex(0x10));
    assert_eq!(
        after.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // A broken renewal: the key of another certificate.
    let other = f.ca.leaf(&LeafSpec::new(&["x.test"], 0x12));
    std::fs::write(&pair.key, other.key_pem).unwrap();
    let failed = server.reload_if_changed().expect("a change");
    assert!(
        matches!(failed, Err(TlsError::KeyMismatch { .. })),
        "{failed:?}"
    );
    assert!(
        server.reload_if_changed().is_none(),
        "not retried until it changes"
    );
    let (still, _) = connect(&client, true, &server, "mx.example.test").unwrap();
    assert_eq!(served_serial(&still), serial_hex(0x11));
}

#[test]
fn names_of_versions_and_suites() {
    let f = Fixture::new();
    let pair = f.pair("n", &LeafSpec::new(&["mx.example.test"], 1));
    let server = ServerTls::load(ServerTlsConfig {
        pairs: vec![pair],
        min_version: MinVersion::Tls12,
    })
    .unwrap();
    let (c, _) = connect(&f.client(), true, &server, "mx.example.test").unwrap();
    assert_eq!(version_name(c.protocol_version().unwrap()), "TLSv1.3");
    let suite = cipher_name(c.negotiated_cipher_suite().unwrap());
    assert!(
        suite.starts_with("TLS_AES_") || suite.starts_with("TLS_CHACHA20"),
        "{suite}"
    );
}
