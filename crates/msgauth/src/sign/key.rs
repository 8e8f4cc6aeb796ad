//! The private keys that sign, on AWS-LC rather than mail-auth's ring.
//!
//! mail-auth signs through any [`SigningKey`]; its own keys use the crypto
//! library it was built with, ring here (which also serves rustls and the
//! verification side). A signature is made for every message a signing
//! domain sends, on the event loop that accepted it, so its cost is paid
//! at the full message rate: AWS-LC's Ed25519 takes a third of ring's time
//! and its RSA-2048 less than half (docs/benchmarks.md, "With DKIM
//! signing"). What is signed is mail-auth's business (the canonical header
//! fields and the signature field without `b=`); only the last step is
//! here, as RFC 6376 §3.3 and RFC 8463 §3 define it.

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use mail_auth::common::crypto::{self, HashContext, HashImpl, Sha256};
use mail_auth::common::headers::Writable;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use super::{Algorithm, KeyError};

/// One domain's private key, ready to sign.
pub(super) enum PrivateKey {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl crypto::SigningKey for PrivateKey {
    /// The body hash (`bh=`) and Ed25519's prehash are SHA-256 for both.
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        let failed = |e: String| mail_auth::Error::Crypto(crypto::CryptoError::Library(e));
        match self {
            // RSASSA-PKCS1-v1_5 with SHA-256 over the data itself.
            PrivateKey::Rsa(key) => {
                let mut data = Vec::with_capacity(512);
                input.write(&mut data);
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    &data,
                    &mut signature,
                )
                .map_err(|e| failed(e.to_string()))?;
                Ok(signature)
            }
            // RFC 8463 §3: Ed25519 (pure) over the SHA-256 of the data.
            PrivateKey::Ed25519(key) => {
                let mut hash = Sha256::hasher();
                input.write(&mut hash);
                Ok(key.sign(hash.complete().as_ref()).as_ref().to_vec())
            }
        }
    }

    fn algorithm(&self) -> crypto::Algorithm {
        match self {
            PrivateKey::Rsa(_) => crypto::Algorithm::RsaSha256,
            PrivateKey::Ed25519(_) => crypto::Algorithm::Ed25519Sha256,
        }
    }
}

/// Reads a PEM key file for `algorithm`; every error names the file.
pub(super) fn read(path: &Path, algorithm: Algorithm) -> Result<PrivateKey, KeyError> {
    let pem = std::fs::read(path).map_err(|e| KeyError::Unreadable {
        path: path.to_path_buf(),
        error: e.to_string(),
    })?;
    let invalid = |error: String| KeyError::Invalid {
        path: path.to_path_buf(),
        error,
    };
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| invalid(format!("no private key in PEM form ({e})")))?;
    let not_rsa =
        |e: aws_lc_rs::error::KeyRejected| invalid(format!("not an RSA key for rsa-sha256 ({e})"));
    match (algorithm, der) {
        (Algorithm::RsaSha256, PrivateKeyDer::Pkcs1(der)) => {
            RsaKeyPair::from_der(der.secret_pkcs1_der())
                .map(PrivateKey::Rsa)
                .map_err(not_rsa)
        }
        (Algorithm::RsaSha256, PrivateKeyDer::Pkcs8(der)) => {
            RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
                .map(PrivateKey::Rsa)
                .map_err(not_rsa)
        }
        (Algorithm::RsaSha256, _) => Err(invalid(
            "an RSA key must be PKCS#1 (BEGIN RSA PRIVATE KEY) or PKCS#8 (BEGIN PRIVATE KEY)"
                .into(),
        )),
        // OpenSSL writes PKCS#8 v1 (no public key in the file).
        (Algorithm::Ed25519Sha256, PrivateKeyDer::Pkcs8(der)) => {
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
                .map(PrivateKey::Ed25519)
                .map_err(|e| invalid(format!("not an Ed25519 key for ed25519-sha256 ({e})")))
        }
        (Algorithm::Ed25519Sha256, _) => Err(invalid(
            "an Ed25519 key must be PKCS#8 (BEGIN PRIVATE KEY)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::KeyPair;
    use mail_auth::common::crypto::SigningKey as _;
    use ring::signature::{ED25519, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    fn pem(label: &str, der: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    fn load(pem: &str, algorithm: Algorithm) -> PrivateKey {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, pem).unwrap();
        read(&path, algorithm).unwrap()
    }

    /// ring, the other implementation in the build, is the judge.
    #[test]
    fn signatures_verify_with_ring_as_rfc_8463_and_rfc_6376_define_them() {
        let data: &[u8] = b"from:a@example.test\r\ndkim-signature:v=1; a=...; b=";

        let ed = super::super::generate(Algorithm::Ed25519Sha256).unwrap();
        let key = load(&ed.private_pem, Algorithm::Ed25519Sha256);
        let PrivateKey::Ed25519(pair) = &key else {
            panic!("not Ed25519")
        };
        let public = pair.public_key().as_ref().to_vec();
        let signature = key.sign(data).unwrap();
        // Ed25519 over SHA-256(data), not over the data.
        let prehash = ring::digest::digest(&ring::digest::SHA256, data);
        UnparsedPublicKey::new(&ED25519, &public)
            .verify(prehash.as_ref(), &signature)
            .expect("Ed25519 over the SHA-256 of the data");
        assert!(
            UnparsedPublicKey::new(&ED25519, &public)
                .verify(data, &signature)
                .is_err()
        );

        // RSA: PKCS#1 files (what keygen writes) and PKCS#8 ones alike.
        let rsa = super::super::generate(Algorithm::RsaSha256).unwrap();
        let pkcs1 = load(&rsa.private_pem, Algorithm::RsaSha256);
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8_der =
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
        let pkcs8 = load(
            &pem("PRIVATE KEY", pkcs8_der.as_ref()),
            Algorithm::RsaSha256,
        );
        for key in [pkcs1, pkcs8] {
            let PrivateKey::Rsa(pair) = &key else {
                panic!("not RSA")
            };
            let public = pair.public_key().as_ref().to_vec();
            let signature = key.sign(data).unwrap();
            assert_eq!(signature.len(), 256);
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
                .verify(data, &signature)
                .expect("RSASSA-PKCS1-v1_5 with SHA-256");
        }
    }

    #[test]
    fn a_key_of_the_other_kind_is_refused() {
        let rsa = super::super::generate(Algorithm::RsaSha256).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rsa.pem");
        std::fs::write(&path, &rsa.private_pem).unwrap();
        let e = read(&path, Algorithm::Ed25519Sha256)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("rsa.pem") && e.contains("PKCS#8"), "{e}");
    }
}
