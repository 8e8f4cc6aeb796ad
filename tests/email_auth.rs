//! Email authentication against independent judges: SPF, DKIM, DMARC as
//! Sluice reports them in `Authentication-Results:` (read back with
//! authres), compared with pyspf and dkimpy on the same records, served by
//! a real dnsmasq; DMARC enforced by the shipped antispam plugin; forged
//! results removed; and Sluice's own signatures verified by dkimpy.

use std::net::{IpAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sluice_e2e::{
    Client, Dnsmasq, MaildirMessage, Server, Sink, Transaction, dot_stuff, judge, maildir_messages,
    run, sluice_bin, wait_for,
};

const LIMIT: Duration = Duration::from_secs(30);
const STRANGER: &str = "127.0.0.1";
const TRUSTED: &str = "127.0.0.2";

/// A DNS world: the client's name, SPF records for every result, DKIM keys
/// and DMARC policies, served by dnsmasq; and the keys on disk.
struct World {
    dns: Dnsmasq,
    dir: tempfile::TempDir,
    /// Held so that nothing else takes the port dnsmasq forwards
    /// `temperror.test` to: a server that never answers.
    _blackhole: UdpSocket,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A TXT record as dnsmasq takes it on its command line: strings of at
/// most 255 octets, separated by commas (the values here have none).
fn txt(name: &str, value: &str) -> String {
    assert!(!value.contains(','), "{value}");
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(250)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    format!("--txt-record={name},{}", strings.join(","))
}

/// `sluice dkim keygen`'s record for `selector._domainkey.domain`, as
/// printed: the quoted strings joined.
fn keygen(dir: &Path, domain: &str, selector: &str, algorithm: &str) -> String {
    let out = Command::new(sluice_bin())
        .args(["dkim", "keygen", "--domain", domain, "--selector", selector])
        .args(["--algorithm", algorithm, "--out"])
        .arg(dir.join(format!("{selector}.key")))
        .output()
        .expect("run sluice dkim keygen");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{selector}._domainkey.{domain}. IN TXT ")))
        .unwrap_or_else(|| panic!("no TXT line: {text}"));
    assert!(
        text.contains(&format!("[[dkim]]\ndomain = \"{domain}\"")),
        "{text}"
    );
    let quoted = line.split_once(" IN TXT ").unwrap().1;
    quoted
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect()
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The keys dkimpy signs with, as strangers' domains would.
        std::fs::write(
            d.join("rsa.key"),
            openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ]),
        )
        .unwrap();
        std::fs::write(
            d.join("ed.key"),
            openssl(&["genpkey", "-algorithm", "ed25519"]),
        )
        .unwrap();
        let rsa_key = d.join("rsa.key");
        let rsa_pub = b64(&openssl(&[
            "pkey",
            "-pubout",
            "-outform",
            "DER",
            "-in",
            rsa_key.to_str().unwrap(),
        ]));
        let ed_key = d.join("ed.key");
        let ed_der = openssl(&[
            "pkey",
            "-pubout",
            "-outform",
            "DER",
            "-in",
            ed_key.to_str().unwrap(),
        ]);
        let ed_pub = b64(&ed_der[ed_der.len() - 32..]);
        // Ours, made by the command an operator runs.
        let our_rsa = keygen(d, "sender.test", "rsa1", "rsa");
        let our_ed = keygen(d, "sender.test", "ed1", "ed25519");

        let blackhole = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = blackhole.local_addr().unwrap().port();
        let mut options: Vec<String> = vec![
            // Every name not given here does not exist (as under a real
            // root), rather than REFUSED.
            "--local=/#/".into(),
            "--host-record=client.test,127.0.0.1".into(),
            "--ptr-record=1.0.0.127.in-addr.arpa,client.test".into(),
            txt("client.test", "v=spf1 ip4:127.0.0.1 -all"),
            txt("pass.test", "v=spf1 ip4:127.0.0.1 -all"),
            txt("fail.test", "v=spf1 ip4:192.0.2.1 -all"),
            txt("softfail.test", "v=spf1 ~all"),
            txt("neutral.test", "v=spf1 ?all"),
            txt("none.test", "just some text"),
            // RFC 7208 §5.2: including a domain without an SPF record.
            txt("permerror.test", "v=spf1 include:none.test -all"),
            txt("include.test", "v=spf1 include:pass.test -all"),
            txt("redirect.test", "v=spf1 redirect=fail.test"),
            txt("macro.test", "v=spf1 exists:%{i}._ip.macro.test -all"),
            "--host-record=macro.test,127.0.0.1".into(),
            "--host-record=127.0.0.1._ip.macro.test,127.0.0.2".into(),
            format!("--server=/temperror.test/127.0.0.1#{dead}"),
            // DKIM and DMARC.
            txt(
                "s1._domainkey.signed.test",
                &format!("v=DKIM1; k=rsa; p={rsa_pub}"),
            ),
            txt(
                "e1._domainkey.signed.test",
                &format!("v=DKIM1; k=ed25519; p={ed_pub}"),
            ),
            txt("_dmarc.signed.test", "v=DMARC1; p=reject"),
            txt(
                "s1._domainkey.lax.test",
                &format!("v=DKIM1; k=rsa; p={rsa_pub}"),
            ),
            txt("_dmarc.lax.test", "v=DMARC1; p=none"),
            txt("bank.test", "v=spf1 -all"),
            txt("_dmarc.bank.test", "v=DMARC1; p=reject"),
            txt("rsa1._domainkey.sender.test", &our_rsa),
            txt("ed1._domainkey.sender.test", &our_ed),
        ];
        // Sender domains exist (the antispam plugin asks at MAIL).
        for domain in [
            "pass",
            "fail",
            "softfail",
            "neutral",
            "none",
            "permerror",
            "include",
            "redirect",
            "signed",
            "lax",
            "bank",
            "sender",
        ] {
            options.push(format!("--address=/{domain}.test/127.0.0.1"));
        }
        let refs: Vec<&str> = options.iter().map(String::as_str).collect();
        let dns = Dnsmasq::start(&refs, "client.test");
        World {
            dns,
            dir,
            _blackhole: blackhole,
        }
    }

    fn port(&self) -> String {
        self.dns.port().to_string()
    }

    /// The server: the shipped plugins, 127.0.0.2 trusted (and signed
    /// for), everyone else a stranger whose mail is checked; `remote.test`
    /// routed to `sink`.
    fn server(&self, sink: &Sink, extra: &str) -> Server {
        let d = self.dir.path();
        Server::builder()
            .default_plugins()
            .config(&format!(
                "[relay]\ntrusted_networks = [\"{TRUSTED}/32\"]\n\
                 [dns]\nnameservers = [\"{}\"]\n\
                 [delivery]\nroutes = {{ \"remote.test\" = \"{}\" }}\n\
                 [authentication]\ntimeout_secs = 3\n\
                 [[dkim]]\ndomain = \"sender.test\"\nselector = \"rsa1\"\nkey = \"{}\"\n\
                 [[dkim]]\ndomain = \"sender.test\"\nselector = \"ed1\"\nkey = \"{}\"\n\
                 algorithm = \"ed25519-sha256\"\n{extra}",
                self.dns.addr(),
                sink.addr(),
                d.join("rsa1.key").display(),
                d.join("ed1.key").display(),
            ))
            .start()
    }

    /// dkimpy's signature on `message` with the stranger's key.
    fn dkimpy_sign(
        &self,
        key: &str,
        domain: &str,
        selector: &str,
        canon: &str,
        message: &[u8],
    ) -> Vec<u8> {
        let key = self.dir.path().join(key);
        let out = judge(
            &["sign", key.to_str().unwrap(), domain, selector, canon],
            message,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// Sends `content` from `ip` with HELO client.test; the reply to DATA (or
/// the first refusal).
fn send_from(server: &Server, ip: &str, from: &str, to: &str, content: &[u8]) -> sluice_e2e::Reply {
    let mut client = Client::connect_from(ip.parse::<IpAddr>().unwrap(), server.addr());
    client.command_expect("EHLO client.test", "250");
    client
        .try_transaction(from, &[to], &dot_stuff(content))
        .expect("the connection stays up")
}

/// The delivered message to alice whose subject is `subject`.
fn delivered(server: &Server, subject: &str) -> MaildirMessage {
    wait_for(LIMIT, || {
        maildir_messages(&server.maildir("alice"))
            .into_iter()
            .find(|m| m.text().contains(&format!("\r\nSubject: {subject}\r\n")))
    })
    .unwrap_or_else(|| panic!("no message {subject:?} for alice"))
}

/// authres's reading of every `Authentication-Results:` field.
fn authres(message: &MaildirMessage) -> serde_json::Value {
    let out = judge(&["authres"], &message.bytes);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from authres")
}

/// Our field's results for `method`, as (result, properties).
fn ours<'a>(fields: &'a serde_json::Value, method: &str) -> Vec<&'a serde_json::Value> {
    let mine: Vec<&serde_json::Value> = fields
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["authserv_id"] == "mx.example.test")
        .collect();
    assert_eq!(mine.len(), 1, "exactly one field of ours: {fields}");
    mine[0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == method)
        .collect()
}

fn msg(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\
         Date: Sun, 06 Dec 2026 08:00:00 +0000\r\nMessage-ID: <{}@x.test>\r\n\r\n{body}",
        subject.replace(' ', ".")
    )
    .into_bytes()
}

#[test]
fn spf_results_agree_with_pyspf_for_every_outcome() {
    let world = World::new();
    let sink = Sink::start();
    let server = world.server(&sink, "");
    for (domain, expected) in [
        ("pass.test", "pass"),
        ("fail.test", "fail"),
        ("softfail.test", "softfail"),
        ("neutral.test", "neutral"),
        ("none.test", "none"),
        ("permerror.test", "permerror"),
        ("include.test", "pass"),
        ("redirect.test", "fail"),
        ("macro.test", "pass"),
        ("temperror.test", "temperror"),
    ] {
        let sender = format!("user@{domain}");
        let subject = format!("spf {domain}");
        let reply = send_from(
            &server,
            STRANGER,
            &sender,
            "alice@example.test",
            &msg(&sender, &subject, "x\r\n"),
        );
        assert!(reply.has_status("250 2.0.0"), "{domain}: {reply:?}");
        let fields = authres(&delivered(&server, &subject));
        let spf: Vec<_> = ours(&fields, "spf")
            .into_iter()
            .filter(|r| r["props"]["smtp.mailfrom"].as_str().is_some())
            .collect();
        assert_eq!(spf.len(), 1, "{domain}: {fields}");
        assert_eq!(
            spf[0]["props"]["smtp.mailfrom"],
            sender.as_str(),
            "{fields}"
        );
        let pyspf = judge(
            &["spf", &world.port(), STRANGER, &sender, "client.test"],
            b"",
        );
        let judged = String::from_utf8_lossy(&pyspf.stdout).trim().to_string();
        assert_eq!(
            judged,
            expected,
            "pyspf on {domain}: {}",
            String::from_utf8_lossy(&pyspf.stderr)
        );
        assert_eq!(
            spf[0]["result"],
            judged.as_str(),
            "Sluice and pyspf on {domain}: {fields}"
        );
        // The HELO identity and the reverse DNS are reported too.
        let helo = ours(&fields, "spf")
            .into_iter()
            .find(|r| r["props"]["smtp.helo"] == "client.test")
            .unwrap_or_else(|| panic!("no smtp.helo result: {fields}"));
        assert_eq!(helo["result"], "pass");
        assert_eq!(ours(&fields, "iprev")[0]["result"], "pass", "{fields}");
    }
}

#[test]
fn dkimpy_signatures_verify_and_a_changed_body_fails() {
    let world = World::new();
    let sink = Sink::start();
    let server = world.server(&sink, "");
    // Canonicalization edge cases: trailing whitespace, an empty body, a
    // folded header; relaxed and simple; RSA and Ed25519.
    let cases: Vec<(&str, &str, &str, Vec<u8>)> = vec![
        ("rsa.key", "s1", "relaxed", msg("Bob <bob@signed.test>", "dkim relaxed rsa", "Hello   \r\n\tworld \r\n\r\n\r\n")),
        ("rsa.key", "s1", "simple", msg("bob@signed.test", "dkim simple rsa", "Hello  \r\nworld\r\n")),
        ("ed.key", "e1", "relaxed", msg("bob@signed.test", "dkim relaxed ed25519", "Hello\r\n")),
        ("rsa.key", "s1", "relaxed", msg("bob@signed.test", "dkim empty body", "")),
        (
            "rsa.key",
            "s1",
            "relaxed",
            b"From: bob@signed.test\r\nTo: alice@example.test\r\nSubject: dkim folded\r\n  header over\r\n\tthree lines\r\n\
              Date: Sun, 06 Dec 2026 08:00:00 +0000\r\nMessage-ID: <folded@x.test>\r\n\r\nbody\r\n"
                .to_vec(),
        ),
    ];
    for (key, selector, canon, message) in &cases {
        let signed = world.dkimpy_sign(key, "signed.test", selector, canon, message);
        // A bounce address elsewhere: DMARC can pass only through DKIM.
        let reply = send_from(
            &server,
            STRANGER,
            "bounces@pass.test",
            "alice@example.test",
            &signed,
        );
        assert!(
            reply.has_status("250 2.0.0"),
            "{selector} {canon}: {reply:?}"
        );
    }
    for subject in [
        "dkim relaxed rsa",
        "dkim simple rsa",
        "dkim relaxed ed25519",
        "dkim empty body",
        "dkim folded\r\n  header over\r\n\tthree lines",
    ] {
        let fields = authres(&delivered(&server, subject));
        let dkim = ours(&fields, "dkim");
        assert_eq!(dkim.len(), 1, "{subject}: {fields}");
        assert_eq!(dkim[0]["result"], "pass", "{subject}: {fields}");
        let dmarc = ours(&fields, "dmarc");
        assert_eq!(
            dmarc[0]["result"], "pass",
            "aligned DKIM passes DMARC: {fields}"
        );
        assert_eq!(dmarc[0]["props"]["header.from"], "signed.test");
    }

    // Changed after signing: dkim=fail; under p=none the message only
    // gets the verdict in its header.
    let original = msg("bob@lax.test", "tampered", "Pay 10 euros\r\n");
    let signed = world.dkimpy_sign("rsa.key", "lax.test", "s1", "relaxed", &original);
    let tampered = String::from_utf8(signed)
        .unwrap()
        .replace("Pay 10 euros", "Pay 9999 euros");
    let reply = send_from(
        &server,
        STRANGER,
        "bob@lax.test",
        "alice@example.test",
        tampered.as_bytes(),
    );
    assert!(reply.has_status("250 2.0.0"), "{reply:?}");
    let fields = authres(&delivered(&server, "tampered"));
    assert_eq!(ours(&fields, "dkim")[0]["result"], "fail", "{fields}");
    let dmarc = ours(&fields, "dmarc");
    assert_eq!(dmarc[0]["result"], "fail", "{fields}");
    assert_eq!(dmarc[0]["props"]["policy.dmarc"], "none", "{fields}");
}

#[test]
fn dmarc_reject_refuses_a_forged_from_and_forged_results_are_removed() {
    let world = World::new();
    let sink = Sink::start();
    let server = world.server(&sink, "");
    // SPF passes for pass.test, but From: says bank.test, which has
    // p=reject and signed nothing: the shipped antispam refuses it.
    let forged = msg("CEO <ceo@bank.test>", "wire the money", "now\r\n");
    let reply = send_from(
        &server,
        STRANGER,
        "x@pass.test",
        "alice@example.test",
        &forged,
    );
    assert!(reply.has_status("550 5.7.1"), "{reply:?}");
    assert!(
        reply.text().contains("DMARC policy of bank.test"),
        "{reply:?}"
    );
    assert!(
        maildir_messages(&server.maildir("alice"))
            .iter()
            .all(|m| !m.text().contains("wire the money")),
        "refused, not delivered"
    );

    // A client writing our verdict itself: ours replaces it; another
    // server's stays.
    let faked = format!(
        "Authentication-Results: MX.example.test;\r\n\tdkim=pass header.d=bank.test;\r\n\tdmarc=pass header.from=bank.test\r\n\
         Authentication-Results: other.example; spf=pass smtp.mailfrom=x@pass.test\r\n{}",
        String::from_utf8(msg("x@pass.test", "faked results", "hi\r\n")).unwrap()
    );
    let reply = send_from(
        &server,
        STRANGER,
        "x@pass.test",
        "alice@example.test",
        faked.as_bytes(),
    );
    assert!(reply.has_status("250 2.0.0"), "{reply:?}");
    let message = delivered(&server, "faked results");
    let fields = authres(&message);
    let ids: Vec<&str> = fields
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["authserv_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["mx.example.test", "other.example"], "{fields}");
    assert!(
        !message.text().contains("header.d=bank.test"),
        "{}",
        message.text()
    );
    assert_eq!(
        ours(&fields, "dmarc")[0]["result"],
        "none",
        "pass.test has no policy: {fields}"
    );
    assert_eq!(ours(&fields, "spf").len(), 2, "helo and mailfrom: {fields}");
}

/// A trusted client's message to reader@remote.test, taken (and so signed
/// when a key signs for `from`'s domain).
fn relay_for_trusted(server: &Server, from: &str, message: &str) {
    let reply = send_from(
        server,
        TRUSTED,
        from,
        "reader@remote.test",
        message.as_bytes(),
    );
    assert!(reply.has_status("250 2.0.0"), "{message}: {reply:?}");
}

/// The transactions the next hop took, once there are `n`.
fn relayed(sink: &Sink, n: usize) -> Vec<Transaction> {
    wait_for(LIMIT, || {
        let t = sink.accepted();
        (t.len() == n).then_some(t)
    })
    .expect("every message reaches the next hop")
}

#[test]
fn sluice_signs_for_its_domain_and_dkimpy_verifies_both_keys() {
    let world = World::new();
    let sink = Sink::start();
    let server = world.server(&sink, "");
    let message = String::from(
        "From: Newsletter <news@sender.test>\r\nTo: reader@remote.test\r\nSubject: Monthly news\r\n\
         Date: Sun, 06 Dec 2026 08:00:00 +0000\r\nMessage-ID: <n1@sender.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Hello  \r\n.leading dot\r\n\r\n",
    );
    relay_for_trusted(&server, "news@sender.test", &message);
    // Mail from another domain is not signed.
    let other = message
        .replace("news@sender.test", "news@other.test")
        .replace("Monthly", "Other");
    relay_for_trusted(&server, "news@other.test", &other);
    let got = relayed(&sink, 2);
    let signed = got
        .iter()
        .find(|t| t.reverse_path == "news@sender.test")
        .unwrap();
    let text = String::from_utf8_lossy(&signed.data).into_owned();
    assert_eq!(text.matches("DKIM-Signature: ").count(), 2, "{text}");
    assert!(
        !text.contains("Authentication-Results"),
        "our own users' mail is not checked: {text}"
    );
    let out = judge(&["verify", &world.port()], &signed.data);
    let verdict = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dkimpy: {verdict}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        verdict.contains("pass a=rsa-sha256 d=sender.test"),
        "{verdict}"
    );
    assert!(
        verdict.contains("pass a=ed25519-sha256 d=sender.test"),
        "{verdict}"
    );
    let unsigned = got
        .iter()
        .find(|t| t.reverse_path == "news@other.test")
        .unwrap();
    assert!(!String::from_utf8_lossy(&unsigned.data).contains("DKIM-Signature"));
    // Each signature lists From twice: a second From: cannot be added.
    let unfolded = text.replace("\r\n ", " ").replace("\r\n\t", " ");
    let lists: Vec<&str> = unfolded
        .lines()
        .filter_map(|l| l.strip_prefix("DKIM-Signature: "))
        .filter_map(|v| {
            v.split(';')
                .map(str::trim)
                .find_map(|t| t.strip_prefix("h="))
        })
        .collect();
    assert_eq!(lists.len(), 2, "{text}");
    for list in lists {
        let froms = list
            .split(':')
            .filter(|n| n.trim().eq_ignore_ascii_case("from"))
            .count();
        assert_eq!(froms, 2, "h={list}");
    }
}

/// What relaxed canonicalisation changes, and what it does not, in the
/// messages Sluice signs: dkimpy verifies every signature. (Sluice hashes a
/// body that needs no more than spaces taken off line ends and blank lines
/// off its end by itself, and hands any other to mail-auth.)
#[test]
fn sluice_signs_bodies_of_every_shape_so_that_dkimpy_verifies_them() {
    let world = World::new();
    let sink = Sink::start();
    let server = world.server(&sink, "");
    let bodies: &[(&str, &str)] = &[
        ("plain", "Hello Bob,\r\n\r\nthe report is attached.\r\n"),
        (
            "flowed",
            "a paragraph that goes \r\non and on \r\nand ends.\r\n-- \r\nAlice\r\n\r\n  \r\n\r\n",
        ),
        ("blank middle", "above\r\n    \r\nbelow\r\n"),
        (
            "tabs and runs",
            "tabs\tand  runs   of spaces \r\n\tindented\r\n",
        ),
        ("empty", ""),
    ];
    for (name, body) in bodies {
        let message = format!(
            "From: news@sender.test\r\nTo: reader@remote.test\r\nSubject: shape\r\n {name}\r\n\
             Date: Sun, 06 Dec 2026 08:00:00 +0000\r\nMessage-ID: <{}@sender.test>\r\n\r\n{body}",
            name.replace(' ', "-")
        );
        relay_for_trusted(&server, "news@sender.test", &message);
    }
    let got = relayed(&sink, bodies.len());
    for (name, _) in bodies {
        let signed = got
            .iter()
            .find(|t| {
                String::from_utf8_lossy(&t.data).contains(&format!("Subject: shape\r\n {name}\r\n"))
            })
            .unwrap_or_else(|| panic!("{name} delivered"));
        let out = judge(&["verify", &world.port()], &signed.data);
        let verdict = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && verdict.contains("pass a=rsa-sha256 d=sender.test")
                && verdict.contains("pass a=ed25519-sha256 d=sender.test"),
            "{name}: dkimpy: {verdict}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn an_unreadable_key_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[[dkim]]\ndomain = \"example.test\"\nselector = \"s1\"\nkey = \"{}\"\n",
            dir.path().join("missing.key").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(sluice_bin());
    cmd.arg("check-config").arg(&config);
    let out = run(cmd, b"", LIMIT);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("missing.key") && said.contains("cannot read"),
        "{said}"
    );
}
