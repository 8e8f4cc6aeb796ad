//! Submission with SMTP AUTH against the real binary: swaks and Python's
//! smtplib logging in on 587 (STARTTLS) and 465 (implicit TLS), the
//! failures and their limit, fail2ban's reading of the log, every password
//! hash format, a file edited while the server runs, Dovecot as the
//! backend, and which senders a login may use.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use sluice_e2e::dovecot::{Dovecot, PASSWORD};
use sluice_e2e::tls::{TestCerts, TlsClient};
use sluice_e2e::{Client, Server, Sink, run, sluice_bin};

const LIMIT: Duration = Duration::from_secs(20);
const CONTENT: &[u8] = b"From: alice@example.test\r\nSubject: from a user\r\n\r\nhello\r\n";

/// A submission (587) and an smtps (465) listener, AUTH from `auth`
/// (an `[auth]` table body), relaying only for clients that log in, and
/// `remote.test` routed to `sink`.
fn server(certs: &TestCerts, auth: &str, sink: &Sink) -> (Server, SocketAddr, SocketAddr) {
    let server = Server::start(&format!(
        "{}\n[[listen]]\naddr = \"127.0.0.1:0\"\nmode = \"submission\"\n\
         [[listen]]\naddr = \"127.0.0.1:0\"\nmode = \"smtps\"\n\
         [relay]\ntrusted_networks = []\n\
         [delivery]\nroutes = {{ \"remote.test\" = \"{}\" }}\n\
         [auth]\nfailure_delay_ms = 100\n{auth}",
        certs.config(),
        sink.addr()
    ));
    let addrs = server.listen_addrs(2);
    (server, addrs[0], addrs[1])
}

/// A users file with `name:hash` lines.
fn users(certs: &TestCerts, lines: &[(&str, String)]) -> String {
    let path = certs.dir.path().join("users");
    let text: String = lines.iter().map(|(n, h)| format!("{n}:{h}\n")).collect();
    std::fs::write(&path, text).unwrap();
    format!("backend = \"file\"\nusers_file = \"{}\"\n", path.display())
}

/// [`server`] with a password file holding alice (password `s3cret`, set
/// with `sluice passwd`), and `extra` added to its `[auth]` table.
fn alice_server(certs: &TestCerts, extra: &str, sink: &Sink) -> (Server, SocketAddr, SocketAddr) {
    let file = certs.dir.path().join("users");
    passwd(&file, "alice", "s3cret");
    let auth = format!(
        "backend = \"file\"\nusers_file = \"{}\"\n{extra}",
        file.display()
    );
    server(certs, &auth, sink)
}

/// `sluice passwd NAME --file F` with the password on standard input.
fn passwd(file: &std::path::Path, name: &str, password: &str) {
    let mut cmd = Command::new(sluice_bin());
    cmd.args(["passwd", name, "--file"]).arg(file);
    let out = run(cmd, format!("{password}\n").as_bytes(), LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// STARTTLS and EHLO on the submission port.
fn inside(addr: SocketAddr, certs: &TestCerts) -> TlsClient {
    let mut plain = Client::connect(addr);
    plain.command_expect("EHLO client.example", "250");
    let mut tls = TlsClient::starttls(plain, certs.client_config());
    tls.command_expect("EHLO client.example", "250");
    tls
}

fn login(tls: &mut TlsClient, user: &str, password: &str) -> sluice_e2e::Reply {
    tls.send(format!(
        "AUTH PLAIN {}\r\n",
        b64(&format!("\0{user}\0{password}"))
    ));
    tls.read_reply()
}

#[test]
fn swaks_and_smtplib_log_in_and_relay() {
    let certs = TestCerts::new();
    let sink = Sink::start();
    let (server, submission, smtps) = alice_server(&certs, "", &sink);
    for (flag, mechanism, addr) in [("--tls", "PLAIN", submission), ("--tlsc", "LOGIN", smtps)] {
        let mut cmd = Command::new("swaks");
        cmd.args([
            flag,
            "--server",
            &addr.ip().to_string(),
            "--port",
            &addr.port().to_string(),
            "--auth",
            mechanism,
            "--auth-user",
            "alice",
            "--auth-password",
            "s3cret",
            "--from",
            "alice@example.test",
            "--to",
            "bob@remote.test",
            "--timeout",
            "10",
        ]);
        let out = run(cmd, b"", LIMIT);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "swaks {flag}:\n{stdout}");
        assert!(
            stdout.contains("235 2.7.0 Authentication successful"),
            "{stdout}"
        );
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/smtplib_auth.py");
    for (how, addr) in [("starttls", submission), ("ssl", smtps)] {
        let mut cmd = Command::new("python3");
        cmd.args([
            script,
            how,
            &addr.ip().to_string(),
            &addr.port().to_string(),
            &certs.ca_file.display().to_string(),
            "alice",
            "s3cret",
            "alice@example.test",
            "bob@remote.test",
        ]);
        let out = run(cmd, CONTENT, LIMIT);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{how}: {stdout}");
    }
    let accepted = sink
        .wait_accepted(4, LIMIT)
        .unwrap_or_else(|| panic!("not all relayed; logs:\n{}", server.logs().join("\n")));
    for t in &accepted {
        let text = String::from_utf8_lossy(&t.data);
        assert!(text.contains(" with ESMTPSA id "), "{text}");
    }
}

#[test]
fn failures_are_refused_slowly_then_the_connection_goes() {
    let certs = TestCerts::new();
    let sink = Sink::start();
    let (server, submission, _) = alice_server(&certs, "max_failures = 3\n", &sink);
    // Outside TLS: 538; MAIL before STARTTLS: 530.
    let mut plain = Client::connect(submission);
    let ehlo = plain.command_expect("EHLO client.example", "250");
    assert!(!ehlo.raw.contains("AUTH"), "{ehlo:?}");
    plain.command_expect(
        &format!("AUTH PLAIN {}", b64("\0alice\0s3cret")),
        "538 5.7.11",
    );
    let mut tls = TlsClient::starttls(plain, certs.client_config());
    let ehlo = tls.command_expect("EHLO client.example", "250");
    assert!(ehlo.raw.contains("AUTH PLAIN LOGIN"), "{ehlo:?}");
    let refused = tls.command_expect("MAIL FROM:<alice@example.test>", "530 5.7.0");
    assert_eq!(refused.raw, "530 5.7.0 Authentication required\r\n");
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let r = login(&mut tls, "alice", "wrong");
        assert_eq!(r.raw, "535 5.7.8 Authentication credentials invalid\r\n");
        assert!(
            started.elapsed() >= Duration::from_millis(90),
            "not delayed"
        );
    }
    // The fourth failure is answered, then the connection closes.
    let r = login(&mut tls, "alice", "wrong");
    assert!(r.raw.starts_with("535 5.7.8"), "{r:?}");
    let bye = tls.read_reply();
    assert!(bye.raw.starts_with("421 4.7.0 "), "{bye:?}");
    assert!(tls.try_read_reply().is_err(), "closed");

    // fail2ban's own tool reads the failure lines with the shipped filter.
    let failures = server.wait_for_log_lines(&["auth failed"], 4, LIMIT);
    assert_eq!(failures.len(), 4, "{failures:#?}");
    let log = certs.dir.path().join("sluice.log");
    std::fs::write(&log, server.logs().join("\n") + "\n").unwrap();
    let filter = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/fail2ban/filter.d/sluice-auth.conf"
    );
    let mut cmd = Command::new("fail2ban-regex");
    cmd.arg(&log).arg(filter);
    let out = run(cmd, b"", LIMIT);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains(" 4 matched,"), "{report}");
    assert!(report.contains("127.0.0.1"), "{report}");
}

/// Every hash a users file may hold, and a file changed under a running
/// server.
#[test]
fn every_hash_format_logs_in_and_edits_take_effect_at_once() {
    let certs = TestCerts::new();
    let sink = Sink::start();
    let shell = |cmd: &[&str]| {
        let mut c = Command::new(cmd[0]);
        c.args(&cmd[1..]);
        let out = run(c, b"", LIMIT);
        assert!(out.status.success(), "{cmd:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let bcrypt = shell(&[
        "python3",
        "-W",
        "ignore",
        "-c",
        "import crypt; print(crypt.crypt('pw-bcrypt', crypt.mksalt(crypt.METHOD_BLOWFISH)))",
    ]);
    assert!(bcrypt.starts_with("$2b$"), "{bcrypt}");
    let sha512 = shell(&["openssl", "passwd", "-6", "pw-sha512"]);
    let sha256 = shell(&["openssl", "passwd", "-5", "pw-sha256"]);
    let auth = users(
        &certs,
        &[("bcrypt", bcrypt), ("sha512", sha512), ("sha256", sha256)],
    );
    let file = certs.dir.path().join("users");
    passwd(&file, "argon", "pw-argon");
    let (_server, submission, _) = server(&certs, &auth, &sink);
    for user in ["bcrypt", "sha512", "sha256", "argon"] {
        let mut tls = inside(submission, &certs);
        let r = login(&mut tls, user, &format!("pw-{user}"));
        assert_eq!(r.raw, "235 2.7.0 Authentication successful\r\n", "{user}");
        let mut tls = inside(submission, &certs);
        assert!(
            login(&mut tls, user, "pw-other").raw.starts_with("535 "),
            "{user}"
        );
    }
    // A new password, written while the server runs.
    passwd(&file, "argon", "pw-changed");
    let mut tls = inside(submission, &certs);
    assert!(login(&mut tls, "argon", "pw-argon").raw.starts_with("535 "));
    let mut tls = inside(submission, &certs);
    assert!(
        login(&mut tls, "argon", "pw-changed")
            .raw
            .starts_with("235 ")
    );
}

#[test]
fn dovecot_checks_the_passwords() {
    let dovecot = Dovecot::builder().user("alice").start();
    let certs = TestCerts::new();
    let sink = Sink::start();
    let (_server, submission, _) = server(
        &certs,
        &format!(
            "backend = \"dovecot\"\ndovecot_socket = \"{}\"\n",
            dovecot.auth_socket().display()
        ),
        &sink,
    );
    let mut tls = inside(submission, &certs);
    assert!(
        login(&mut tls, "alice", "wrong")
            .raw
            .starts_with("535 5.7.8")
    );
    let mut tls = inside(submission, &certs);
    let r = login(&mut tls, "alice", PASSWORD);
    assert_eq!(r.raw, "235 2.7.0 Authentication successful\r\n");
    let r = tls.transaction("alice@example.test", &["bob@remote.test"], CONTENT);
    assert!(r.has_status("250 2.0.0"), "{r:?}");
    sink.wait_accepted(1, LIMIT).expect("relayed");
}

/// RFC 6409 §6.1 and §8: a user sends as its own addresses, in the
/// envelope and in From:; what the message lacks is added.
#[test]
fn a_user_sends_only_as_its_own_addresses() {
    let certs = TestCerts::new();
    let sink = Sink::start();
    let (_server, submission, _) = alice_server(
        &certs,
        "[auth.senders]\nalice = [\"alice@example.test\", \"sales@example.test\"]\n",
        &sink,
    );
    let mut tls = inside(submission, &certs);
    assert!(login(&mut tls, "alice", "s3cret").raw.starts_with("235 "));
    let r = tls.command_expect("MAIL FROM:<bob@example.test>", "553 5.7.1");
    assert_eq!(
        r.raw,
        "553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user alice\r\n"
    );
    // The envelope is hers, the From: is not.
    let forged = b"From: Bob <bob@example.test>\r\nSubject: x\r\n\r\nhi\r\n";
    let r = tls.transaction("alice@example.test", &["carol@remote.test"], forged);
    assert!(r.has_status("553 5.7.1"), "{r:?}");
    // As sales@, with neither Date: nor Message-ID:.
    let bare = b"From: Sales <sales@example.test>\r\nSubject: offer\r\n\r\nbuy\r\n";
    let r = tls.transaction("sales@example.test", &["carol@remote.test"], bare);
    assert!(r.has_status("250 2.0.0"), "{r:?}");
    let id = r.queue_id().unwrap();
    let accepted = sink.wait_accepted(1, LIMIT).expect("relayed");
    assert_eq!(accepted.len(), 1, "the forged one was not sent");
    let text = String::from_utf8_lossy(&accepted[0].data);
    assert!(text.contains("\r\nDate: "), "{text}");
    assert!(text.contains(&format!("\r\nMessage-ID: <{id}@")), "{text}");
    assert!(text.ends_with("\r\n\r\nbuy\r\n"), "{text}");
}

/// Failures are counted per address and login in the key-value store:
/// past `lockout_failures`, even the right password gets 454 for a while.
#[test]
fn too_many_failures_lock_the_login_out_for_a_while() {
    let certs = TestCerts::new();
    let sink = Sink::start();
    let (_server, submission, _) =
        alice_server(&certs, "lockout_failures = 2\nlockout_secs = 60\n", &sink);
    for _ in 0..2 {
        let mut tls = inside(submission, &certs);
        assert!(
            login(&mut tls, "alice", "wrong")
                .raw
                .starts_with("535 5.7.8")
        );
    }
    let mut tls = inside(submission, &certs);
    let r = login(&mut tls, "alice", "s3cret");
    assert_eq!(
        r.raw,
        "454 4.7.0 Too many failed logins; try again later\r\n"
    );
}

/// Relaying through a provider that wants a login: the next hop is another
/// Sluice taking mail only from users who log in over STARTTLS.
#[test]
fn a_smarthost_login_is_sent_inside_tls_and_a_refusal_defers() {
    let certs = TestCerts::new();
    let file = certs.dir.path().join("relay-users");
    passwd(&file, "acct", "provider-pass");
    let relay = Server::start_receiving(&format!(
        "{}\n[[listen]]\naddr = \"127.0.0.1:0\"\nmode = \"submission\"\n\
         [local]\ndomains = [\"remote.test\"]\nusers = [\"postmaster\", \"bob\"]\n\
         [auth]\nbackend = \"file\"\nusers_file = \"{}\"\nfailure_delay_ms = 10\n\
         [auth.senders]\nacct = [\"alice@example.test\"]\n",
        certs.config(),
        file.display()
    ));
    let relay_addr = relay.addr();
    let sender = |password: &str| {
        let pass = certs.dir.path().join(format!("{password}.pass"));
        std::fs::write(&pass, format!("{password}\n")).unwrap();
        Server::start(&format!(
            "[delivery]\nroutes = {{ \"remote.test\" = \"{relay_addr}\" }}\n\
             retry_schedule_secs = [60]\n\
             [delivery.tls]\nca_file = \"{}\"\n\
             [delivery.credentials]\n\"{relay_addr}\" = {{ username = \"acct\", password_file = \"{}\" }}\n",
            certs.ca_file.display(),
            pass.display()
        ))
    };
    let server = sender("provider-pass");
    let id = sluice_e2e::submit(
        server.addr(),
        "alice@example.test",
        "",
        &["bob@remote.test"],
        CONTENT,
    );
    server.wait_delivery(&id, "bob@remote.test", "delivered", LIMIT);
    let queued = sluice_e2e::queue_by_id(relay.spool_dir());
    let m = queued.values().next().expect("the relay took it");
    assert!(
        m.received().contains(" with ESMTPSA id "),
        "{}",
        m.received()
    );

    let wrong = sender("not-the-password");
    let id = sluice_e2e::submit(
        wrong.addr(),
        "alice@example.test",
        "",
        &["bob@remote.test"],
        CONTENT,
    );
    let line = wrong.wait_delivery(&id, "bob@remote.test", "deferred", LIMIT);
    assert!(
        line.contains("451 4.7.0 Login to the next hop refused: 535 5.7.8"),
        "{line}"
    );
    let show = wrong.queue_ok(&["show", &id]);
    assert!(
        show.contains("Login to the next hop refused: 535 5.7.8"),
        "{show}"
    );
}
