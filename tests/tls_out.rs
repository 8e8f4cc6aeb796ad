//! TLS out: Sluice delivering to next hops over STARTTLS at Postfix's
//! security levels, and REQUIRETLS. The next hops are real: another
//! Sluice with a certificate from a test CA, or the test sink (plain, or
//! with a STARTTLS that breaks).

use std::time::Duration;

use sluice_e2e::tls::{PolicyServer, TestCerts, TlsClient};
use sluice_e2e::{Client, Dnsmasq, Server, Sink, queue_by_id, submit, wait_for_maildir};
use sluice_testkit::tls::LeafSpec;

const LIMIT: Duration = Duration::from_secs(20);

/// The next hop: a Sluice for `remote.test` with STARTTLS, keeping what it
/// receives in its queue. `tls` is its `[tls]` table.
fn next_hop(tls: &str) -> Server {
    Server::start_receiving(&format!(
        "{tls}\n[local]\ndomains = [\"remote.test\"]\nusers = [\"postmaster\", \"bob\"]\n"
    ))
}

/// The sender: routes `remote.test` to `hop`, trusts `ca`, and adds `extra`.
fn sender(hop: std::net::SocketAddr, ca: &TestCerts, tls: &str) -> Server {
    Server::start(&format!(
        "[delivery]\nroutes = {{ \"remote.test\" = \"{hop}\" }}\nretry_schedule_secs = [1]\n\
         [delivery.tls]\nca_file = \"{}\"\n{tls}",
        ca.ca_file.display()
    ))
}

const CONTENT: &[u8] = b"Subject: to the next hop\r\n\r\nover TLS, we hope\r\n";

#[test]
fn may_encrypts_when_the_next_hop_offers_starttls() {
    let certs = TestCerts::new();
    let hop = next_hop(&certs.config());
    let server = sender(hop.addr(), &certs, "");
    let id = submit(
        server.addr(),
        "alice@example.test",
        "",
        &["bob@remote.test"],
        CONTENT,
    );
    let line = server.wait_delivery(&id, "bob@remote.test", "delivered", LIMIT);
    assert!(line.contains("250 2.0.0 Ok: queued as"), "{line}");
    server
        .wait_for_log("Trusted TLS connection established", LIMIT)
        .expect("the handshake is logged");
    let received = queue_by_id(hop.spool_dir());
    let m = received.values().next().expect("the next hop has it");
    assert!(
        m.received().contains(" with ESMTPS id "),
        "{}",
        m.received()
    );
    assert!(m.content().ends_with(CONTENT));
    // The next message reuses the connection: TLS 1.3 session tickets on
    // an idle connection are not the server hanging up.
    let second = submit(
        server.addr(),
        "alice@example.test",
        "",
        &["bob@remote.test"],
        CONTENT,
    );
    server.wait_delivery(&second, "bob@remote.test", "delivered", LIMIT);
    let handshakes = hop.wait_for_log_lines(&["TLS established"], 1, LIMIT).len();
    assert_eq!(handshakes, 1, "one connection for both messages");
}

/// A certificate that does not name the next hop: `verify` defers, and says
/// why where the operator looks.
#[test]
fn verify_defers_for_a_certificate_of_another_name() {
    let certs = TestCerts::new();
    let other = certs.ca.leaf(&LeafSpec::new(&["other.test"], 7));
    let (cert, key) = other.write(certs.dir.path(), "other", &certs.ca);
    let hop = next_hop(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let server = sender(
        hop.addr(),
        &certs,
        "policy = { \"remote.test\" = \"verify\" }\n",
    );
    let id = submit(
        server.addr(),
        "alice@example.test",
        "",
        &["bob@remote.test"],
        CONTENT,
    );
    let line = server.wait_delivery(&id, "bob@remote.test", "deferred", LIMIT);
    assert!(line.contains("451 4.7.5 TLS handshake failed: "), "{line}");
    assert!(line.contains("certificate not valid for name"), "{line}");
    let show = server.queue_ok(&["show", &id]);
    assert!(show.contains("4.7.5 TLS handshake failed"), "{show}");
    assert!(
        queue_by_id(hop.spool_dir()).is_empty(),
        "nothing went in clear"
    );

    // RFC 8689 §5: the sender may say the policy must not stop it.
    let relaxed = b"Subject: anyway\r\nTLS-Required: No\r\n\r\nplease deliver\r\n";
    let id = submit(
        server.addr(),
        "alice@example.test",
        "",
        &["bob@remote.test"],
        relaxed,
    );
    server.wait_delivery(&id, "bob@remote.test", "delivered", LIMIT);
}

/// `may` and a next hop whose TLS is broken: the message goes in clear,
/// and the next connection does not try TLS again.
#[test]
fn may_falls_back_to_clear_when_the_handshake_fails() {
    let certs = TestCerts::new();
    let sink = Sink::builder().broken_starttls().start();
    let server = sender(sink.addr(), &certs, "");
    let id = submit(
        server.addr(),
        "alice@example.test",
        "",
        &["bob@remote.test"],
        CONTENT,
    );
    server.wait_delivery(&id, "bob@remote.test", "delivered", LIMIT);
    server
        .wait_for_log("STARTTLS failed; delivering in clear", LIMIT)
        .expect("the fallback is logged");
    let accepted = sink.wait_accepted(1, LIMIT).expect("delivered in clear");
    assert!(accepted[0].data.ends_with(CONTENT));
    assert_eq!(sink.connections(), 2, "one broken handshake, one in clear");
    let second = submit(
        server.addr(),
        "alice@example.test",
        "",
        &["bob@remote.test"],
        CONTENT,
    );
    server.wait_delivery(&second, "bob@remote.test", "delivered", LIMIT);
    assert_eq!(
        server
            .logs()
            .iter()
            .filter(|l| l.contains("TLS handshake failed"))
            .count(),
        1,
        "the broken peer is remembered"
    );
}

#[test]
fn encrypt_defers_when_starttls_is_not_offered() {
    let certs = TestCerts::new();
    let sink = Sink::start();
    let server = sender(sink.addr(), &certs, "security_level = \"encrypt\"\n");
    let id = submit(
        server.addr(),
        "alice@example.test",
        "",
        &["bob@remote.test"],
        CONTENT,
    );
    let line = server.wait_delivery(&id, "bob@remote.test", "deferred", LIMIT);
    assert!(
        line.contains("451 4.7.4 TLS is required, but the server does not offer STARTTLS"),
        "{line}"
    );
    assert!(sink.transactions().is_empty());
}

/// RFC 8689: a REQUIRETLS message goes only over verified TLS to a next hop
/// that offers REQUIRETLS; where none can take it, it bounces with 5.7.30.
#[test]
fn requiretls_goes_only_where_it_is_kept_and_bounces_elsewhere() {
    let certs = TestCerts::new();
    let hop = next_hop(&certs.config());
    let plain = Sink::start();
    let server = Server::start(&format!(
        "{}\n[delivery]\nroutes = {{ \"remote.test\" = \"{}\", \"plain.test\" = \"{}\" }}\n\
         [delivery.tls]\nca_file = \"{}\"\n",
        certs.config(),
        hop.addr(),
        plain.addr(),
        certs.ca_file.display()
    ));
    let mut plain_client = Client::connect(server.addr());
    let ehlo = plain_client.command_expect("EHLO client.example", "250");
    assert!(
        !ehlo.raw.contains("REQUIRETLS"),
        "only inside TLS: {ehlo:?}"
    );
    let mut c = TlsClient::starttls(plain_client, certs.client_config());
    let ehlo = c.command_expect("EHLO client.example", "250");
    assert!(ehlo.raw.contains("REQUIRETLS"), "{ehlo:?}");
    c.command_expect("MAIL FROM:<alice@example.test> REQUIRETLS", "250 2.1.0");
    c.command_expect("RCPT TO:<bob@remote.test>", "250 2.1.5");
    c.command_expect("RCPT TO:<carol@plain.test>", "250 2.1.5");
    c.command_expect("DATA", "354");
    c.send([CONTENT, b".\r\n"].concat());
    let id = c.expect("250 2.0.0").queue_id().expect("an id");

    server.wait_delivery(&id, "bob@remote.test", "delivered", LIMIT);
    let failed = server.wait_delivery(&id, "carol@plain.test", "failed", LIMIT);
    assert!(
        failed.contains("550 5.7.30 REQUIRETLS support required"),
        "{failed}"
    );
    assert!(plain.transactions().is_empty(), "never in clear");
    // The sender hears why.
    let bounce = wait_for_maildir(&server.maildir("alice"), 1, LIMIT);
    assert!(bounce[0].text().contains("5.7.30"), "{}", bounce[0].text());
    // The next hop took it as REQUIRETLS mail, to keep the promise on.
    let queued = queue_by_id(hop.spool_dir());
    let hop_id = queued.keys().next().expect("the next hop has it").clone();
    let show = hop.queue_ok(&["show", &hop_id]);
    assert!(
        show.contains("sender:   <alice@example.test>") && show.contains("REQUIRETLS"),
        "{show}"
    );
}

/// MTA-STS (RFC 8461): the TXT record from a real name server, the policy
/// over HTTPS from a loopback server (its port is `mta_sts_port`, a
/// test-only setting), the MX host from the name server too.
#[test]
fn mta_sts_enforce_delivers_to_named_mx_hosts_only() {
    let certs = TestCerts::new();
    let mx = certs
        .ca
        .leaf(&LeafSpec::new(&["mx.remote.test", "mx.strict.test"], 8));
    let (cert, key) = mx.write(certs.dir.path(), "mx-hosts", &certs.ca);
    let hop = Server::start_receiving(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n\
         [local]\ndomains = [\"remote.test\", \"strict.test\"]\nusers = [\"postmaster\", \"bob\"]\n",
        cert.display(),
        key.display()
    ));
    let policy =
        |mx: &str| format!("version: STSv1\r\nmode: enforce\r\nmx: {mx}\r\nmax_age: 86400\r\n");
    let policies = PolicyServer::start(
        &certs,
        &[
            ("remote.test", &policy("mx.remote.test")),
            ("strict.test", &policy("*.elsewhere.test")),
        ],
    );
    let dns = Dnsmasq::start(
        &[
            "--mx-host=remote.test,mx.remote.test,10",
            "--mx-host=strict.test,mx.strict.test,10",
            "--host-record=mx.remote.test,127.0.0.1",
            "--host-record=mx.strict.test,127.0.0.1",
            "--host-record=mta-sts.remote.test,127.0.0.1",
            "--host-record=mta-sts.strict.test,127.0.0.1",
            "--txt-record=_mta-sts.remote.test,v=STSv1; id=20261206;",
            "--txt-record=_mta-sts.strict.test,v=STSv1; id=1;",
        ],
        "mx.strict.test",
    );
    let server = Server::start(&format!(
        "[dns]\nnameservers = [\"{}\"]\n[delivery]\nmx_port = {}\nretry_schedule_secs = [1]\n\
         [delivery.tls]\nca_file = \"{}\"\nmta_sts_port = {}\n",
        dns.addr(),
        hop.addr().port(),
        certs.ca_file.display(),
        policies.addr().port()
    ));
    let id = submit(
        server.addr(),
        "alice@example.test",
        "",
        &["bob@remote.test"],
        CONTENT,
    );
    server.wait_delivery(&id, "bob@remote.test", "delivered", LIMIT);
    server
        .wait_for_log("MTA-STS policy fetched", LIMIT)
        .expect("the policy was fetched");
    server
        .wait_for_log("Verified TLS connection established", LIMIT)
        .expect("enforce means a verified certificate");
    let kept = server.spool_dir().join("mta-sts/remote.test.policy");
    let text = std::fs::read_to_string(&kept).expect("the policy is kept on disk");
    assert!(text.starts_with("sluice-id: 20261206\n"), "{text}");

    // The cached policy serves the next message: no second fetch.
    let fetched = policies.requests();
    let again = submit(
        server.addr(),
        "alice@example.test",
        "",
        &["bob@remote.test"],
        CONTENT,
    );
    server.wait_delivery(&again, "bob@remote.test", "delivered", LIMIT);
    assert_eq!(policies.requests(), fetched);

    let id = submit(
        server.addr(),
        "alice@example.test",
        "",
        &["bob@strict.test"],
        CONTENT,
    );
    let line = server.wait_delivery(&id, "bob@strict.test", "deferred", LIMIT);
    assert!(
        line.contains(
            "451 4.7.5 MTA-STS policy of strict.test names none of its MX hosts (mx.strict.test)"
        ),
        "{line}"
    );
}
