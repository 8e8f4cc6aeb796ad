//! Email authentication per message: DKIM signing (RSA-2048, Ed25519) of a
//! 4 KiB message as a trusted client's mail is signed, and the full check
//! of a stranger's signed message (DKIM, ARC, DMARC) with the records in a
//! real dnsmasq on loopback, after the first lookups are cached, as on a
//! busy server.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_benches::corpus;
use sluice_msgauth::{Algorithm, Checker, Checks, KeySpec, Signer, generate};

/// A message from example.test, with the header fields a signature covers.
fn message() -> Vec<u8> {
    let corpus = corpus::message(4 << 10);
    // The corpus body, under a header of ours (its own names another
    // domain and carries a signature of its own).
    let at = corpus
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header section");
    let body = &corpus[at + 2..];
    let mut m = b"From: Bob <bob@example.test>\r\nTo: alice@example.org\r\n\
        Subject: bench\r\nDate: Tue, 14 May 2024 09:12:44 +0000\r\n\
        Message-ID: <bench@example.test>\r\n"
        .to_vec();
    m.extend_from_slice(body);
    m
}

fn signer(dir: &std::path::Path, algorithm: Algorithm, selector: &str) -> (Signer, String) {
    let key = generate(algorithm).expect("a key");
    let path = dir.join(selector);
    std::fs::write(&path, &key.private_pem).unwrap();
    let signer = Signer::load(&[KeySpec {
        domain: "example.test".into(),
        selector: selector.into(),
        key: path,
        algorithm,
    }])
    .expect("the key loads");
    (signer, key.dns_txt)
}

fn msgauth(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let message = message();
    let (rsa, rsa_txt) = signer(dir.path(), Algorithm::RsaSha256, "rsa");
    let (ed, ed_txt) = signer(dir.path(), Algorithm::Ed25519Sha256, "ed");

    let mut group = c.benchmark_group("dkim_sign_4KiB");
    for (name, signer) in [("rsa-sha256", &rsa), ("ed25519-sha256", &ed)] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(signer.sign("example.test", &[black_box(&message)]).unwrap()))
        });
    }
    // The same header with an empty body: what the signature itself costs,
    // apart from canonicalising and hashing the body.
    let header_only = &message[..message.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4];
    group.bench_function("ed25519-sha256_header_only", |b| {
        b.iter(|| black_box(ed.sign("example.test", &[black_box(header_only)]).unwrap()))
    });
    // A body of prose only, as the load generator sends (the corpus body
    // is three quarters base64, which has no word boundaries to look at).
    let prose = [header_only, &corpus::prose(4 << 10)].concat();
    group.bench_function("ed25519-sha256_prose", |b| {
        b.iter(|| black_box(ed.sign("example.test", &[black_box(&prose)]).unwrap()))
    });
    group.finish();

    // The records the checks look up, served for real.
    let chunks = |v: &str| -> String {
        v.as_bytes()
            .chunks(250)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(",")
    };
    let options = [
        "--local=/#/".to_string(),
        "--host-record=client.test,127.0.0.1".into(),
        "--ptr-record=1.0.0.127.in-addr.arpa,client.test".into(),
        "--txt-record=example.test,v=spf1 ip4:127.0.0.1 -all".into(),
        "--txt-record=_dmarc.example.test,v=DMARC1; p=reject".into(),
        format!(
            "--txt-record=rsa._domainkey.example.test,{}",
            chunks(&rsa_txt)
        ),
        format!(
            "--txt-record=ed._domainkey.example.test,{}",
            chunks(&ed_txt)
        ),
    ];
    let refs: Vec<&str> = options.iter().map(String::as_str).collect();
    let dns = sluice_testkit::Dnsmasq::start(&refs, "client.test");
    let resolver =
        sluice_dns::Resolver::new(&[dns.addr()], Duration::from_secs(2)).expect("a resolver");
    let checker = Checker::new(
        resolver,
        "mx.example.org",
        Checks::default(),
        Duration::from_secs(5),
    );
    let ip = "127.0.0.1".parse().unwrap();
    let sender = checker.sender(ip, "client.test", "bob@example.test", None);

    let mut group = c.benchmark_group("check_4KiB");
    group.bench_function("spf_and_iprev_at_mail", |b| {
        b.iter(|| black_box(checker.sender(ip, "client.test", "bob@example.test", None)))
    });
    for (name, signer) in [("rsa-sha256", &rsa), ("ed25519-sha256", &ed)] {
        let mut signed = signer
            .sign("example.test", &[&message])
            .unwrap()
            .into_bytes();
        signed.extend_from_slice(&message);
        let checked = checker.message(&signed, &sender);
        assert_eq!(
            checked.results.dmarc.map(|d| d.result),
            Some(sluice_filter::authres::AuthResult::Pass),
            "{}",
            checked.header
        );
        group.bench_function(format!("dkim_arc_dmarc_{name}"), |b| {
            b.iter(|| black_box(checker.message(black_box(&signed), &sender)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = msgauth
}
criterion_main!(benches);
