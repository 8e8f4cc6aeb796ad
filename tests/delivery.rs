//! Delivery end to end: what `sluice serve` accepted must arrive, byte for
//! byte, in the local user's Maildir or at the next hop (a real SMTP server
//! on loopback, found by a configured route or by MX records from a real
//! name server), and what cannot be delivered must come back to the
//! envelope's reverse-path as an RFC 3464 report.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders};
use sluice_e2e::{
    Client, Dnsmasq, HOSTNAME, MaildirMessage, Server, Sink, TRICKY, maildir_messages,
    received_prefix, split_received, submit, wait_for_maildir,
};

/// How long any one delivery may take to show up.
const DELIVERY_LIMIT: Duration = Duration::from_secs(15);

#[test]
fn local_delivery_is_byte_exact_with_dots_and_8bit() {
    let server = Server::start("");
    let long = format!("{}\r\n", "y".repeat(990));
    let mut content = TRICKY.to_vec();
    content.extend_from_slice(long.as_bytes());
    let id = submit(
        server.addr(),
        "sender@example.org",
        "BODY=8BITMIME",
        &["alice@example.test"],
        &content,
    );
    let files = wait_for_maildir(&server.maildir("alice"), 1, DELIVERY_LIMIT);
    assert_eq!(files.len(), 1, "{files:#?}");
    let file = &files[0];
    assert!(
        file.path.parent().unwrap().ends_with("alice/new"),
        "{}",
        file.path.display()
    );
    let d = file.delivered();
    assert_eq!(d.return_path, "<sender@example.org>");
    assert_eq!(d.delivered_to, "alice@example.test");
    let delivered = file.received_content(&id);
    assert_eq!(
        delivered,
        &content[..],
        "content differs:\n{}",
        String::from_utf8_lossy(delivered)
    );
    let line = server.wait_delivery(&id, "alice@example.test", "delivered", DELIVERY_LIMIT);
    assert!(line.contains("destination=local"), "{line}");
    // The name in tmp/ is removed after the link into new/ is durable, so
    // look only once the delivery is reported done.
    let tmp = std::fs::read_dir(server.maildir("alice").join("tmp"))
        .expect("alice's tmp/")
        .count();
    assert_eq!(tmp, 0, "a file left in tmp/");
    server.wait_queue_empty(DELIVERY_LIMIT);
    assert!(maildir_is_empty(&server, "bob"));
    assert!(maildir_is_empty(&server, "postmaster"));
}

fn maildir_is_empty(server: &Server, user: &str) -> bool {
    maildir_messages(&server.maildir(user)).is_empty()
}

#[test]
fn aliases_and_the_null_reverse_path_are_delivered_locally() {
    let server = Server::start("");
    let alias_content = b"Subject: to root\r\n\r\nfor the alias\r\n";
    let alias_id = submit(
        server.addr(),
        "ops@example.org",
        "",
        &["root@example.test"],
        alias_content,
    );
    let files = wait_for_maildir(&server.maildir("postmaster"), 1, DELIVERY_LIMIT);
    assert_eq!(files.len(), 1);
    let d = files[0].delivered();
    assert_eq!(d.return_path, "<ops@example.org>");
    // The envelope's forward-path, before the alias.
    assert_eq!(d.delivered_to, "root@example.test");
    assert_eq!(files[0].received_content(&alias_id), alias_content);

    let null_content = b"Subject: a notification\r\n\r\nfrom nobody\r\n";
    let null_id = submit(server.addr(), "", "", &["Bob@Example.Test"], null_content);
    let files = wait_for_maildir(&server.maildir("bob"), 1, DELIVERY_LIMIT);
    let d = files[0].delivered();
    assert_eq!(d.return_path, "<>");
    assert_eq!(files[0].received_content(&null_id), null_content);

    server.wait_queue_empty(DELIVERY_LIMIT);
    assert!(maildir_is_empty(&server, "alice"));
    assert!(!server.maildir_root().join("root").exists());
    assert_eq!(server.all_maildir_messages().len(), 2);
}

/// Sub-addressing: with `recipient_delimiter = "+"`, `alice+lists` is
/// accepted at RCPT because alice exists, and lands in her Maildir with the
/// full address in `Delivered-To:`; an extension of nobody is still refused.
#[test]
fn an_address_extension_is_delivered_to_its_mailbox() {
    let server = Server::start(
        "[local]\ndomains = [\"example.test\"]\nusers = [\"alice\"]\n\
         recipient_delimiter = \"+\"\n",
    );
    let mut client = Client::connect_ehlo(server.addr());
    client.command_expect("MAIL FROM:<sender@example.org>", "250 2.1.0");
    let refused = client.command_expect("RCPT TO:<bob+lists@example.test>", "550 5.1.1");
    assert!(refused.raw.starts_with("550 5.1.1 "), "{refused:?}");
    client.command_expect("RCPT TO:<alice+lists@example.test>", "250 2.1.5");
    client.command_expect("DATA", "354");
    let content = b"Subject: to a list address\r\n\r\nfiled by the extension\r\n";
    client.send(content);
    client.send(".\r\n");
    let queued = client.read_reply();
    assert_eq!(queued.code, 250, "{queued:?}");
    let files = wait_for_maildir(&server.maildir("alice"), 1, DELIVERY_LIMIT);
    assert_eq!(
        files[0].delivered().delivered_to,
        "alice+lists@example.test"
    );
    assert!(files[0].bytes.ends_with(content));
    assert!(!server.maildir_root().join("alice+lists").exists());
}

#[test]
fn remote_recipients_of_one_domain_share_one_transaction() {
    let sink = Sink::start();
    let server = Server::start(&format!(
        "[delivery]\nroutes = {{ \"remote.test\" = \"{}\" }}\n",
        sink.addr()
    ));
    let id = submit(
        server.addr(),
        "alice@example.test",
        "BODY=8BITMIME",
        &["x@remote.test", "bob@example.test", "y@Remote.Test"],
        TRICKY,
    );
    sink.wait_accepted(1, DELIVERY_LIMIT)
        .unwrap_or_else(|| panic!("the sink got nothing; logs:\n{}", server.logs().join("\n")));
    server.wait_delivery(&id, "x@remote.test", "delivered", DELIVERY_LIMIT);
    let line = server.wait_delivery(&id, "y@Remote.Test", "delivered", DELIVERY_LIMIT);
    assert!(
        line.contains(&format!("destination={}", sink.addr())),
        "{line}"
    );
    assert!(line.contains("250 2.0.0 Ok: accepted"), "{line}");
    server.wait_queue_empty(DELIVERY_LIMIT);

    let all = sink.transactions();
    assert_eq!(all.len(), 1, "expected one transaction: {all:#?}");
    let t = &all[0];
    assert_eq!(t.helo, HOSTNAME);
    assert_eq!(t.reverse_path, "alice@example.test");
    assert_eq!(t.recipients, ["x@remote.test", "y@Remote.Test"]);
    assert!(
        t.mail_params
            .split(' ')
            .any(|p| p.eq_ignore_ascii_case("BODY=8BITMIME")),
        "8-bit content relayed without BODY=8BITMIME: {:?}",
        t.mail_params
    );
    // What goes on is the stored message: our Received: header, then the
    // content as the client sent it. Nothing of local delivery's.
    let (received, relayed) = split_received(&t.data);
    assert!(received.starts_with(&received_prefix(&id)), "{received:?}");
    assert_eq!(
        relayed,
        TRICKY,
        "relayed content differs:\n{}",
        String::from_utf8_lossy(&t.data)
    );
    // The local recipient of the same message got its copy.
    let local = wait_for_maildir(&server.maildir("bob"), 1, DELIVERY_LIMIT);
    assert_eq!(local[0].received_content(&id), TRICKY);
}

/// One message from alice to `rcpt` through a fresh server that asks
/// `dns` and reaches MX hosts on `mx_port`; returns its queue id and the
/// server (to read its logs).
fn send_via_mx(dns: &Dnsmasq, mx_port: u16, rcpt: &str, content: &[u8]) -> (String, Server) {
    let server = Server::start(&format!(
        "[dns]\nnameservers = [\"{}\"]\n[delivery]\nmx_port = {mx_port}\n",
        dns.addr()
    ));
    let id = submit(server.addr(), "alice@example.test", "", &[rcpt], content);
    (id, server)
}

/// Two sinks on one unprivileged port, one on each MX address (`mx_port`
/// is one port for every MX host, as 25 is in real life): the kernel picks
/// a free port for the first, and the second takes it too if it is free on
/// its address, else both try again.
fn two_mx_sinks() -> (Sink, Sink) {
    let ip = |last| std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
    for _ in 0..20 {
        let first = Sink::builder().addr(SocketAddr::new(ip(2), 0)).start();
        let mx2 = SocketAddr::new(ip(3), first.addr().port());
        // A probe, closed at once, so the sink's own bind cannot fail for
        // any reason but a race with another process.
        if TcpListener::bind(mx2).is_ok() {
            return (first, Sink::builder().addr(mx2).start());
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3 in 20 tries");
}

#[test]
fn mx_records_from_a_real_name_server_pick_the_next_hop() {
    // Both MX hosts listen on one unprivileged port, given to the server as
    // `mx_port`: the test needs no privilege to bind port 25.
    let (first, second) = two_mx_sinks();
    let mx1 = first.addr();
    let mx_port = mx1.port();
    let dns = Dnsmasq::start(
        &[
            "--mx-host=mx.test,mx1.mx.test,10",
            "--mx-host=mx.test,mx2.mx.test,20",
            "--host-record=mx1.mx.test,127.0.0.2",
            "--host-record=mx2.mx.test,127.0.0.3",
        ],
        "mx2.mx.test",
    );

    // Both up: the preferred one gets the mail.
    let content = b"Subject: via MX 1\r\n\r\nto the first MX\r\n";
    let (id, server) = send_via_mx(&dns, mx_port, "carol@mx.test", content);
    let accepted = first.wait_accepted(1, DELIVERY_LIMIT).unwrap_or_else(|| {
        panic!(
            "the preferred MX got nothing; logs:\n{}",
            server.logs().join("\n")
        )
    });
    assert!(accepted[0].data.ends_with(content));
    server.wait_delivery(&id, "carol@mx.test", "delivered", DELIVERY_LIMIT);
    assert!(second.transactions().is_empty());
    drop(server);
    drop(first);

    // The preferred one down (nothing listens): the next one gets it.
    assert!(
        TcpStream::connect_timeout(&mx1, Duration::from_secs(1)).is_err(),
        "something listens on {mx1}: the preferred MX must be down for this test"
    );
    let content = b"Subject: via MX 2\r\n\r\nto the second MX\r\n";
    let (id, server) = send_via_mx(&dns, mx_port, "dave@MX.test", content);
    let accepted = second.wait_accepted(1, DELIVERY_LIMIT).unwrap_or_else(|| {
        panic!(
            "the second MX got nothing; logs:\n{}",
            server.logs().join("\n")
        )
    });
    assert_eq!(accepted[0].recipients, ["dave@MX.test"]);
    assert_eq!(accepted[0].reverse_path, "alice@example.test");
    let (received, relayed) = split_received(&accepted[0].data);
    assert!(received.starts_with(&received_prefix(&id)), "{received:?}");
    assert_eq!(relayed, content);
    let line = server.wait_delivery(&id, "dave@MX.test", "delivered", DELIVERY_LIMIT);
    assert!(line.contains("destination=mx.test"), "{line}");
    server.wait_queue_empty(DELIVERY_LIMIT);
    assert_eq!(second.transactions().len(), 1);
}

/// Parses a bounce and checks what every bounce must be; returns its
/// delivery-status fields (unfolded) and its whole text.
fn check_bounce(file: &MaildirMessage, sender: &str) -> (String, String) {
    let d = file.delivered();
    assert_eq!(
        d.return_path, "<>",
        "a bounce comes from the null reverse-path"
    );
    assert_eq!(d.delivered_to, sender);
    let msg = MessageParser::default()
        .parse(d.content)
        .unwrap_or_else(|| panic!("unparsable bounce: {}", file.text()));
    let to = msg.to().and_then(|a| a.first()).and_then(|a| a.address());
    assert_eq!(to, Some(sender), "bounce To: {}", file.text());
    let ct = msg.content_type().expect("a Content-Type");
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("report")),
        "{}",
        file.text()
    );
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let parts = msg.root_part().sub_parts().expect("a multipart bounce");
    let status = parts
        .iter()
        .filter_map(|&id| msg.part(id))
        .find(|p| {
            p.content_type()
                .is_some_and(|c| c.ctype() == "message" && c.subtype() == Some("delivery-status"))
        })
        .unwrap_or_else(|| panic!("no message/delivery-status part: {}", file.text()));
    let status = String::from_utf8_lossy(status.contents()).replace("\r\n ", " ");
    (status, file.text())
}

fn has_line(text: &str, line: &str) -> bool {
    text.split("\r\n").any(|l| l.trim_end() == line)
}

/// Sends a message from alice to a recipient the next hop refuses with
/// 550 and one it takes, waits for the bounce and the queue to empty, and
/// returns the bounce's delivery-status fields and whole text, after the
/// checks every such bounce must pass.
fn bounce_of_a_550() -> (String, String) {
    let sink = Sink::builder()
        .rcpt_reply(|address, _| {
            if address.starts_with("nobody@") {
                format!("550 5.1.1 <{address}>: no such user here")
            } else {
                "250 2.1.5 Ok".to_string()
            }
        })
        .start();
    let server = Server::start(&format!(
        "[delivery]\nroutes = {{ \"remote.test\" = \"{}\" }}\n",
        sink.addr()
    ));
    // The From: header names someone else: the bounce must not go there.
    let content = b"From: Mallory <mallory@example.test>\r\nTo: nobody@remote.test\r\n\
Subject: permfail 7c1e\r\n\r\nthis will not arrive\r\n";
    let id = submit(
        server.addr(),
        "alice@example.test",
        "",
        &["nobody@remote.test", "somebody@remote.test"],
        content,
    );
    let line = server.wait_delivery(&id, "nobody@remote.test", "failed", DELIVERY_LIMIT);
    assert!(line.contains("550 5.1.1"), "{line}");
    let files = wait_for_maildir(&server.maildir("alice"), 1, DELIVERY_LIMIT);
    assert_eq!(files.len(), 1, "{files:#?}");
    let (status, text) = check_bounce(&files[0], "alice@example.test");
    let accepted = sink.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].recipients, ["somebody@remote.test"]);
    server.wait_queue_empty(DELIVERY_LIMIT);
    assert_eq!(server.all_maildir_messages().len(), 1);
    (status, text)
}

#[test]
fn a_permanent_failure_bounces_to_the_envelope_sender() {
    let (status, text) = bounce_of_a_550();
    for want in [
        "Final-Recipient: rfc822; nobody@remote.test",
        "Action: failed",
        "Status: 5.1.1",
    ] {
        assert!(has_line(&status, want), "{want:?} missing in\n{status}");
    }
    // The next hop's own words reach the sender.
    let reply = "550 5.1.1 <nobody@remote.test>: no such user here";
    assert!(
        status
            .split("\r\n")
            .any(|l| l.starts_with("Diagnostic-Code: ") && l.ends_with(reply)),
        "no Diagnostic-Code with {reply:?} in\n{status}"
    );
    assert!(text.contains(reply), "{text}");
    // Only the failed recipient is reported; the other one was delivered.
    assert!(!text.contains("somebody@remote.test"), "{text}");
    assert!(
        text.contains("Subject: permfail 7c1e"),
        "original not returned: {text}"
    );
}

/// RFC 3464 §2.3.5–2.3.6: a reply from the SMTP server of the next hop is
/// reported with diagnostic-type `smtp` and the `Remote-MTA` that gave it
/// (the form `dsn.rs` itself produces when told the next hop).
#[test]
fn a_bounce_reports_the_next_hops_refusal_as_an_smtp_diagnostic() {
    let (status, _) = bounce_of_a_550();
    let want = "Diagnostic-Code: smtp; 550 5.1.1 <nobody@remote.test>: no such user here";
    assert!(has_line(&status, want), "{want:?} missing in\n{status}");
    assert!(
        status
            .split("\r\n")
            .any(|l| l.starts_with("Remote-MTA: dns; ")),
        "no Remote-MTA in\n{status}"
    );
}

#[test]
fn a_failure_of_a_message_from_the_null_reverse_path_is_not_bounced() {
    let sink = Sink::builder()
        .rcpt_reply(|address, _| format!("550 5.1.1 <{address}>: no such user here"))
        .start();
    let server = Server::start(&format!(
        "[delivery]\nroutes = {{ \"remote.test\" = \"{}\" }}\n",
        sink.addr()
    ));
    let content = b"From: alice@example.test\r\nSubject: a bounce itself\r\n\r\nx\r\n";
    let id = submit(server.addr(), "", "", &["nobody@remote.test"], content);
    server.wait_delivery(&id, "nobody@remote.test", "failed", DELIVERY_LIMIT);
    // A bounce would be queued before the failed message left the queue,
    // and stay there until delivered: an empty queue means no bounce.
    server.wait_queue_empty(DELIVERY_LIMIT);
    assert_eq!(sink.rcpt_attempts("nobody@remote.test"), 1);
    let all = server.all_maildir_messages();
    assert!(all.is_empty(), "something was delivered: {all:#?}");
}

#[test]
fn a_null_mx_fails_at_once_with_556() {
    let dns = Dnsmasq::start(
        &[
            "--mx-host=nomail.test,.,0",
            "--host-record=probe.nomail.test,127.0.0.9",
        ],
        "probe.nomail.test",
    );
    let server = Server::start(&format!("[dns]\nnameservers = [\"{}\"]\n", dns.addr()));
    let id = submit(
        server.addr(),
        "alice@example.test",
        "",
        &["dave@nomail.test"],
        b"Subject: to a null MX\r\n\r\nnever\r\n",
    );
    let line = server.wait_delivery(&id, "dave@nomail.test", "failed", DELIVERY_LIMIT);
    assert!(line.contains("556 5.1.10"), "{line}");
    let files = wait_for_maildir(&server.maildir("alice"), 1, DELIVERY_LIMIT);
    let (status, _) = check_bounce(&files[0], "alice@example.test");
    assert!(has_line(&status, "Status: 5.1.10"), "{status}");
    assert!(
        has_line(&status, "Final-Recipient: rfc822; dave@nomail.test"),
        "{status}"
    );
    server.wait_queue_empty(DELIVERY_LIMIT);
}
