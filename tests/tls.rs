//! TLS in (RFC 3207 STARTTLS, RFC 8314 implicit TLS) against the real
//! binary, with real clients: swaks, `openssl s_client`, Python's smtplib,
//! and a rustls client for exact-byte dialogs. Certificates come from a CA
//! made for each test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_e2e::tls::{TestCerts, TlsClient};
use sluice_e2e::{Client, HOSTNAME, Server, queue_by_id, run};
use sluice_testkit::tls::LeafSpec;

const LIMIT: Duration = Duration::from_secs(20);

/// A server with an smtp listener (STARTTLS), a submission listener and
/// an smtps listener; returns it with their addresses in that order.
fn server(certs: &TestCerts) -> (Server, [SocketAddr; 3]) {
    let server = Server::start_receiving(&format!(
        "{}\n[[listen]]\naddr = \"127.0.0.1:0\"\n\
         [[listen]]\naddr = \"127.0.0.1:0\"\nmode = \"submission\"\n\
         [[listen]]\naddr = \"127.0.0.1:0\"\nmode = \"smtps\"\n",
        certs.config()
    ));
    let addrs = server.listen_addrs(3);
    (server, [addrs[0], addrs[1], addrs[2]])
}

const CONTENT: &[u8] = b"Subject: over TLS\r\n\r\nsealed\r\n";

/// The message `id` was queued with its content, and its trace says it came
/// over TLS.
fn assert_esmtps(server: &Server, id: &str) {
    let queue = queue_by_id(server.spool_dir());
    let m = queue
        .get(id)
        .unwrap_or_else(|| panic!("{id} not queued: {queue:?}"));
    let received = m.received();
    assert!(received.contains(" with ESMTPS id "), "{received}");
    assert!(
        received.contains("(using TLSv1.3 with cipher TLS_"),
        "{received}"
    );
    let content = m.content();
    assert!(
        content.windows(8).any(|w| w == b"sealed\r\n"),
        "{}",
        String::from_utf8_lossy(content)
    );
}

fn queue_id_in(text: &str) -> String {
    text.split("queued as ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no queue id in {text}"))
        .to_owned()
}

#[test]
fn swaks_sends_over_starttls_and_implicit_tls() {
    let certs = TestCerts::new();
    let (server, [smtp, _, smtps]) = server(&certs);
    for (flag, addr) in [("--tls", smtp), ("--tlsc", smtps)] {
        let mut cmd = Command::new("swaks");
        cmd.args([
            flag,
            "--server",
            &addr.ip().to_string(),
            "--port",
            &addr.port().to_string(),
            "--from",
            "sender@example.org",
            "--to",
            "alice@example.test",
            "--data",
            "Subject: over TLS\r\n\r\nsealed\r\n",
            "--timeout",
            "10",
        ]);
        let out = run(cmd, b"", LIMIT);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "swaks {flag}:\n{stdout}\n{stderr}");
        assert!(stdout.contains("TLS started"), "{stdout}");
        assert_esmtps(&server, &queue_id_in(&stdout));
    }
}

#[test]
fn openssl_s_client_verifies_the_certificate_and_sends() {
    let certs = TestCerts::new();
    let (server, [smtp, _, _]) = server(&certs);
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-starttls",
        "smtp",
        "-connect",
        &smtp.to_string(),
        "-servername",
        HOSTNAME,
        "-CAfile",
        &certs.ca_file.display().to_string(),
        "-verify_return_error",
        "-verify_hostname",
        HOSTNAME,
        "-crlf",
        "-quiet",
    ]);
    // -quiet sends stdin as it comes; each line gets its reply before the
    // next is read by the server anyway (no pipelining without EHLO's word).
    let script = "EHLO openssl.example\nMAIL FROM:<sender@example.org>\n\
                  RCPT TO:<alice@example.test>\nDATA\nSubject: over TLS\n\nsealed\n.\nQUIT\n";
    let out = run(cmd, script.as_bytes(), LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("verify return:1"), "{stderr}");
    assert!(
        stdout.contains("250 2.0.0 Ok: queued as "),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("221 2.0.0"), "{stdout}");
    assert_esmtps(&server, &queue_id_in(&stdout));
}

#[test]
fn python_smtplib_starttls_and_smtp_ssl() {
    let certs = TestCerts::new();
    let (server, [smtp, submission, smtps]) = server(&certs);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/smtplib_tls.py");
    for (how, addr) in [("starttls", smtp), ("starttls", submission), ("ssl", smtps)] {
        let mut cmd = Command::new("python3");
        cmd.args([
            script,
            how,
            &addr.ip().to_string(),
            &addr.port().to_string(),
            &certs.ca_file.display().to_string(),
            "sender@example.org",
            "alice@example.test",
        ]);
        let out = run(cmd, CONTENT, LIMIT);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{how} {addr}: {stdout}");
        assert!(stdout.starts_with("TLSv1.3\n"), "{stdout}");
    }
    let queue = queue_by_id(server.spool_dir());
    assert_eq!(queue.len(), 3, "{queue:?}");
    for id in queue.keys() {
        assert_esmtps(&server, id);
    }
}

/// CVE-2011-0411: a command pipelined after STARTTLS in clear must not run
/// inside TLS.
#[test]
fn commands_sent_in_clear_after_starttls_are_discarded() {
    let certs = TestCerts::new();
    let (server, [smtp, _, _]) = server(&certs);
    let mut plain = Client::connect(smtp);
    let ehlo = plain.command_expect("EHLO client.example", "250");
    assert!(
        ehlo.raw.contains("250-STARTTLS\r\n") || ehlo.raw.contains("250 STARTTLS\r\n"),
        "{ehlo:?}"
    );
    plain.send("STARTTLS\r\nRSET\r\n");
    plain.expect("220 2.0.0");
    let (stream, buffered) = plain.into_parts();
    assert_eq!(buffered, 0);
    let mut tls = TlsClient::handshake(stream, certs.client_config(), HOSTNAME).unwrap();
    // Had RSET run, its 250 would come first.
    tls.send("EHLO client.example\r\n");
    let ehlo = tls.read_reply();
    assert!(
        ehlo.raw
            .starts_with("250-mx.example.test Hello client.example\r\n"),
        "{ehlo:?}"
    );
    assert!(
        !ehlo.raw.contains("STARTTLS"),
        "not offered twice: {ehlo:?}"
    );
    tls.command_expect("STARTTLS", "503 5.5.1");
    server
        .wait_for_log("STARTTLS injection", LIMIT)
        .expect("the discarded bytes are logged");
}

#[test]
fn submission_wants_starttls_before_mail() {
    let certs = TestCerts::new();
    let (server, [_, submission, _]) = server(&certs);
    let mut plain = Client::connect(submission);
    plain.command_expect("EHLO client.example", "250");
    let refused = plain.command_expect("MAIL FROM:<sender@example.org>", "530 5.7.0");
    assert_eq!(
        refused.raw,
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    let mut tls = TlsClient::starttls(plain, certs.client_config());
    tls.command_expect("EHLO client.example", "250");
    let r = tls.transaction("sender@example.org", &["alice@example.test"], CONTENT);
    assert!(r.has_status("250 2.0.0"), "{r:?}");
    assert_esmtps(&server, &r.queue_id().expect("an id"));
}

/// A client that sends no ClientHello, or garbage instead, loses its
/// connection (after `handshake_timeout_secs`, 2 s here), and everyone else
/// is served meanwhile.
#[test]
fn a_stalled_or_garbage_handshake_is_closed_and_others_are_served() {
    let certs = TestCerts::new();
    let (_server, [smtp, _, smtps]) = server(&certs);
    let started = Instant::now();
    let mut stalled = TcpStream::connect(smtps).unwrap();
    stalled.set_read_timeout(Some(LIMIT)).unwrap();
    let mut after_starttls = Client::connect(smtp);
    after_starttls.command_expect("EHLO client.example", "250");
    after_starttls.command_expect("STARTTLS", "220 2.0.0");
    let (mut stalled_tls, _) = after_starttls.into_parts();

    let mut garbage = TcpStream::connect(smtps).unwrap();
    garbage.set_read_timeout(Some(LIMIT)).unwrap();
    garbage.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    // An alert, then the end; never an SMTP greeting.
    let _ = garbage.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"220"), "{buf:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "garbage is refused at once"
    );

    // Served while the two stall.
    let mut tls = TlsClient::connect(smtps, certs.client_config());
    tls.command_expect("EHLO client.example", "250");
    let r = tls.transaction("sender@example.org", &["alice@example.test"], CONTENT);
    assert!(r.has_status("250 2.0.0"), "{r:?}");

    for s in [&mut stalled, &mut stalled_tls] {
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "nothing is said to a client mid-handshake: {rest:?}"
        );
    }
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(10)).contains(&took),
        "closed after {took:?}"
    );
}

/// Renewal tools rewrite the files and tell nobody: new handshakes get the
/// new certificate, a connection made before keeps going; a broken renewal
/// leaves the old one in service.
#[test]
fn renewed_certificates_are_picked_up_without_dropping_connections() {
    let mut certs = TestCerts::new();
    let (server, [_, _, smtps]) = server(&certs);
    let first = certs.serial.clone();
    let mut held = TlsClient::connect(smtps, certs.client_config());
    held.command_expect("EHLO client.example", "250");
    assert_eq!(held.peer_serial(), first);

    let renewed = certs.renew(&LeafSpec::new(&[HOSTNAME, "127.0.0.1"], 2));
    server
        .wait_for_log(&format!("serial={renewed}"), LIMIT)
        .expect("the renewal is logged");
    let fresh = TlsClient::connect(smtps, certs.client_config());
    assert_eq!(fresh.peer_serial(), renewed);
    // The held connection finishes its transaction on the old session.
    let r = held.transaction("sender@example.org", &["alice@example.test"], CONTENT);
    assert!(r.has_status("250 2.0.0"), "{r:?}");

    // A renewal gone wrong: the key of another certificate.
    let other = certs.ca.leaf(&LeafSpec::new(&["other.test"], 3));
    std::fs::write(&certs.key, other.key_pem).unwrap();
    server
        .wait_for_log("do not load: the old ones stay in service", LIMIT)
        .expect("the broken renewal is logged");
    let still = TlsClient::connect(smtps, certs.client_config());
    assert_eq!(still.peer_serial(), renewed);
    // And SIGHUP says so too.
    server.send_signal("HUP");
    server
        .wait_for_log("TLS certificates not reloaded", LIMIT)
        .expect("SIGHUP tries again and says why not");
}

#[test]
fn check_config_names_what_is_wrong_with_a_certificate() {
    let certs = TestCerts::new();
    let dir = certs.dir.path();
    let check = |tls: &str| {
        let config = dir.join("check.toml");
        std::fs::write(
            &config,
            format!(
                "hostname = \"{HOSTNAME}\"\nspool_dir = \"{}\"\nplugin = []\n{tls}",
                dir.join("spool").display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(sluice_e2e::sluice_bin());
        cmd.arg("check-config").arg(&config).stdin(Stdio::null());
        let out = run(cmd, b"", LIMIT);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = check(&certs.config());
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("ECDSA {HOSTNAME}, serial {}", certs.serial)),
        "{text}"
    );
    assert!(!text.contains("warning"), "{text}");

    let missing = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.join("nowhere.pem").display(),
        certs.key.display()
    );
    let (ok, text) = check(&missing);
    assert!(!ok);
    assert!(
        text.contains("nowhere.pem") && text.contains("cannot read"),
        "{text}"
    );

    let other = certs.ca.leaf(&LeafSpec::new(&["other.test"], 9));
    let (other_cert, other_key) = other.write(dir, "other", &certs.ca);
    let crossed = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        certs.cert.display(),
        other_key.display()
    );
    let (ok, text) = check(&crossed);
    assert!(!ok);
    assert!(text.contains("does not match the certificate"), "{text}");

    let old = certs.ca.leaf(&LeafSpec {
        expired: true,
        ..LeafSpec::new(&[HOSTNAME], 10)
    });
    let (old_cert, old_key) = old.write(dir, "old", &certs.ca);
    let expired = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        old_cert.display(),
        old_key.display()
    );
    let (ok, text) = check(&expired);
    assert!(ok, "an expired certificate is a warning: {text}");
    assert!(
        text.contains("warning: the certificate in") && text.contains("outside its validity"),
        "{text}"
    );
    let wrong_name = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        other_cert.display(),
        other_key.display()
    );
    let (ok, text) = check(&wrong_name);
    assert!(ok, "{text}");
    assert!(
        text.contains("no certificate is valid for the hostname"),
        "{text}"
    );
}
