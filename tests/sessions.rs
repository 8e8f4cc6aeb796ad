//! Whole SMTP sessions from real clients (Python's smtplib, swaks) and from
//! exact-byte dialogs: every accepted message must be in the queue with the
//! envelope and the content the client sent.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sluice_e2e::{Client, HOSTNAME, QueuedMessage, Server, read_queue, run};

const CLIENT_LIMIT: Duration = Duration::from_secs(30);

fn only_message(server: &Server) -> QueuedMessage {
    let mut queue = read_queue(server.spool_dir());
    assert_eq!(
        queue.len(),
        1,
        "expected exactly one queued message: {queue:#?}"
    );
    queue.remove(0)
}

fn assert_received(m: &QueuedMessage, helo: &str, protocol: &str) {
    let want = format!(
        "Received: from {helo} ([127.0.0.1])\r\n\tby {HOSTNAME} (Sluice) with {protocol} id {}",
        m.id
    );
    assert!(
        m.received().starts_with(&want),
        "Received header {:?} does not start with {want:?}",
        m.received()
    );
}

#[test]
fn python_smtplib_transaction_is_queued_intact() {
    let server = Server::start_receiving("");
    // A line starting with a dot: smtplib stuffs it, the server must unstuff it.
    let content =
        b"From: py@example.org\r\nSubject: from smtplib\r\n\r\n.leading dot\r\nbody py-7f3a\r\n";
    let mut cmd = Command::new("python3");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/smtplib_send.py"))
        .arg("127.0.0.1")
        .arg(server.port().to_string())
        .args(["py@example.org", "alice@example.test", "root@example.test"]);
    let out = run(cmd, content, CLIENT_LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "smtplib failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = stdout
        .trim()
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("unexpected reply to DATA: {stdout:?}"));

    let m = only_message(&server);
    assert_eq!(m.id, id);
    assert_eq!(m.reverse_path, "py@example.org");
    assert_eq!(m.recipients, ["alice@example.test", "root@example.test"]);
    assert_eq!(m.helo, "python.example");
    assert_eq!(m.client_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
    assert_received(&m, "python.example", "ESMTP");
    assert_eq!(
        String::from_utf8_lossy(m.content()),
        String::from_utf8_lossy(content)
    );
}

#[test]
fn smtplib_with_smtputf8_for_a_utf8_address_is_queued() {
    // smtplib adds SMTPUTF8 for the UTF-8 address on top of the caller's
    // own, so the server sees `SMTPUTF8 SMTPUTF8`: an identical repeat,
    // which Postfix and aiosmtpd accept, and so must we.
    let server = Server::start_receiving("");
    let content = "From: py@example.org\r\nSubject: utf-8\r\n\r\nhello\r\n".as_bytes();
    let mut cmd = Command::new("python3");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/smtplib_options.py"))
        .arg("127.0.0.1")
        .arg(server.port().to_string())
        .args([
            "jöran@example.org",
            "alice@example.test",
            "SMTPUTF8,BODY=8BITMIME",
        ]);
    let out = run(cmd, content, CLIENT_LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "smtplib failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = only_message(&server);
    assert_eq!(m.reverse_path, "jöran@example.org");
    assert_eq!(m.recipients, ["alice@example.test"]);
    assert_eq!(m.content(), content);
}

#[test]
fn swaks_transaction_is_queued_intact() {
    let server = Server::start_receiving("");
    let mut cmd = Command::new("swaks");
    cmd.arg("--server")
        .arg(format!("127.0.0.1:{}", server.port()))
        .args(["--from", "swaks@example.org", "--to", "alice@example.test"])
        .args(["--helo", "swaks.example", "--timeout", "10"])
        .args(["--header", "Subject: swaks e2e"])
        .args(["--body", "swaks body 4b9d"]);
    let out = run(cmd, b"", CLIENT_LIMIT);
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "swaks failed:\n{transcript}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = transcript
        .lines()
        .find_map(|l| l.split("<-  250 2.0.0 Ok: queued as ").nth(1))
        .unwrap_or_else(|| panic!("no `queued as` in the swaks transcript:\n{transcript}"))
        .trim();

    let m = only_message(&server);
    assert_eq!(m.id, id);
    assert_eq!(m.reverse_path, "swaks@example.org");
    assert_eq!(m.recipients, ["alice@example.test"]);
    assert_eq!(m.helo, "swaks.example");
    assert_received(&m, "swaks.example", "ESMTP");
    // What swaks sent, from its transcript: the ` -> ` lines between the
    // 354 and the lone dot, dot-unstuffed.
    let sent: String = transcript
        .lines()
        .skip_while(|l| !l.starts_with("<-  354 "))
        .skip(1)
        .take_while(|l| *l != " -> .")
        .map(|l| {
            let line = l
                .strip_prefix(" -> ")
                .unwrap_or_else(|| panic!("unexpected transcript line {l:?}"));
            format!(
                "{}\r\n",
                line.strip_prefix('.')
                    .filter(|_| line.starts_with(".."))
                    .unwrap_or(line)
            )
        })
        .collect();
    assert!(
        sent.contains("\r\nSubject: swaks e2e\r\n") && sent.contains("\r\n\r\nswaks body 4b9d\r\n"),
        "{sent:?}"
    );
    assert_eq!(String::from_utf8_lossy(m.content()), sent);
}

#[test]
fn a_transaction_pipelined_in_one_write_gets_every_reply_in_order() {
    let server = Server::start_receiving("");
    let mut c = Client::connect(server.addr());
    let content = "Subject: pipelined\r\n\r\none write\r\n..dot-stuffed\r\n";
    c.send(format!(
        "EHLO client.example\r\nMAIL FROM:<p@example.org>\r\nRCPT TO:<alice@example.test>\r\n\
         RCPT TO:<bob@example.test>\r\nDATA\r\n{content}.\r\nQUIT\r\n"
    ));
    c.expect_raw(&format!(
        "250-{HOSTNAME} Hello client.example\r\n250-PIPELINING\r\n250-SIZE 36700160\r\n250-8BITMIME\r\n\
         250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
    ));
    c.expect_raw("250 2.1.0 Ok\r\n");
    c.expect_raw("250 2.1.5 Ok\r\n");
    c.expect_raw("250 2.1.5 Ok\r\n");
    c.expect_raw("354 End data with <CR><LF>.<CR><LF>\r\n");
    let queued = c.expect("250 2.0.0");
    let id = queued.queue_id().expect("a queue id");
    assert_eq!(queued.raw, format!("250 2.0.0 Ok: queued as {id}\r\n"));
    c.expect_raw(&format!("221 2.0.0 {HOSTNAME} closing connection\r\n"));
    c.expect_closed();

    let m = only_message(&server);
    assert_eq!(m.id, id);
    assert_eq!(m.reverse_path, "p@example.org");
    assert_eq!(m.recipients, ["alice@example.test", "bob@example.test"]);
    assert_eq!(
        m.content(),
        b"Subject: pipelined\r\n\r\none write\r\n.dot-stuffed\r\n"
    );

    // One log line for the transaction, with what an operator greps for.
    // Delivery logs the same queue id too, possibly first: look for the
    // transaction's own line.
    let line = server
        .wait_for_log(&format!("message queue_id={id}"), Duration::from_secs(5))
        .expect("no log line for the transaction");
    for field in [
        "message".to_string(),
        "client=127.0.0.1".to_string(),
        "from=<p@example.org>".to_string(),
        "to=<alice@example.test>,<bob@example.test>".to_string(),
        "size=".to_string(),
        format!("result=\"250 2.0.0 Ok: queued as {id}\""),
    ] {
        assert!(
            line.contains(&field),
            "{field} missing from the log line {line:?}"
        );
    }
    let logged = server
        .logs()
        .iter()
        .filter(|l| l.contains(&format!("message queue_id={id}")))
        .count();
    assert_eq!(logged, 1, "the transaction was logged {logged} times");
}

#[test]
fn a_helo_only_rfc821_client_is_served_and_traced_as_smtp() {
    let server = Server::start_receiving("");
    let mut c = Client::connect(server.addr());
    // RFC 821 clients know no extensions: the HELO reply is one line.
    c.send("HELO old.example\r\n");
    c.expect_raw(&format!("250 {HOSTNAME} Hello old.example\r\n"));
    let r = c.transaction(
        "old@old.example",
        &["alice@example.test"],
        b"Subject: 1982\r\n\r\nhello\r\n",
    );
    let id = r.queue_id().unwrap_or_else(|| panic!("refused: {r:?}"));
    c.command_expect("QUIT", "221 2.0.0");

    let m = only_message(&server);
    assert_eq!(m.id, id);
    assert_eq!(m.helo, "old.example");
    assert_received(&m, "old.example", "SMTP");
    assert_eq!(m.content(), b"Subject: 1982\r\n\r\nhello\r\n");
}

#[test]
fn source_routes_are_accepted_and_routed_by_the_mailbox() {
    let server = Server::start_receiving("");
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<@host2,user1@host1>", "250 2.1.0");
    c.command_expect("RCPT TO:<@host3:alice@example.test>", "250 2.1.5");
    c.command_expect("DATA", "354");
    c.send("Subject: routed\r\n\r\nvia host3\r\n.\r\n");
    let id = c.expect("250 2.0.0").queue_id().expect("a queue id");
    c.command_expect("QUIT", "221 2.0.0");

    let m = only_message(&server);
    assert_eq!(m.id, id);
    assert_eq!(m.reverse_path, "user1@host1");
    assert_eq!(m.recipients, ["alice@example.test"]);
}

#[test]
fn verbs_are_case_insensitive() {
    let server = Server::start_receiving("");
    let mut c = Client::connect(server.addr());
    c.command_expect("ehlo client.example", "250");
    c.command_expect("mail from:<lower@example.org>", "250 2.1.0");
    c.command_expect("rcpt to:<alice@example.test>", "250 2.1.5");
    c.command_expect("data", "354");
    c.send("Subject: lower\r\n\r\nquiet\r\n.\r\n");
    let id = c.expect("250 2.0.0").queue_id().expect("a queue id");
    c.command_expect("quit", "221 2.0.0");

    let m = only_message(&server);
    assert_eq!(m.id, id);
    assert_eq!(m.reverse_path, "lower@example.org");
    assert_eq!(m.recipients, ["alice@example.test"]);
}

#[test]
fn the_null_reverse_path_and_the_postmaster_alias_are_accepted() {
    let server = Server::start_receiving("");
    let mut c = Client::connect_ehlo(server.addr());
    let r = c.transaction(
        "",
        &["root@example.test"],
        b"Subject: bounce\r\n\r\nDSN\r\n",
    );
    let id = r.queue_id().unwrap_or_else(|| panic!("refused: {r:?}"));
    c.command_expect("QUIT", "221 2.0.0");

    let m = only_message(&server);
    assert_eq!(m.id, id);
    assert_eq!(m.reverse_path, "");
    assert_eq!(m.recipients, ["root@example.test"]);
}

#[test]
fn a_message_sent_one_byte_at_a_time_is_queued_intact() {
    let server = Server::start_receiving("");
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<slow@example.org>", "250 2.1.0");
    c.command_expect("RCPT TO:<alice@example.test>", "250 2.1.5");
    c.command_expect("DATA", "354");
    // Every CRLF, the stuffed dot and the end-of-data line cross write
    // boundaries (TCP_NODELAY is on, so most writes are segments of their own).
    for b in b"Subject: slow\r\n\r\n..one\r\n.\r\n" {
        c.send([*b]);
    }
    let id = c.expect("250 2.0.0").queue_id().expect("a queue id");
    c.command_expect("QUIT", "221 2.0.0");
    let m = only_message(&server);
    assert_eq!(m.id, id);
    assert_eq!(m.content(), b"Subject: slow\r\n\r\n.one\r\n");
}

#[test]
fn a_chunked_bdat_transaction_is_queued_exactly_as_sent() {
    let server = Server::start_receiving("");
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<chunks@example.org>", "250 2.1.0");
    c.command_expect("RCPT TO:<alice@example.test>", "250 2.1.5");
    // BDAT carries octets as they are: no dot-stuffing, and a chunk may end
    // mid-line.
    let first = b"Subject: chunked\r\n\r\n..not unstuffed\r\nsplit ";
    let second = b"line\r\n";
    c.send([format!("BDAT {}\r\n", first.len()).as_bytes(), first].concat());
    c.expect("250 2.0.0");
    c.send([format!("BDAT {} LAST\r\n", second.len()).as_bytes(), second].concat());
    let id = c.expect("250 2.0.0").queue_id().expect("a queue id");
    c.command_expect("QUIT", "221 2.0.0");
    let m = only_message(&server);
    assert_eq!(m.id, id);
    assert_eq!(m.content(), [&first[..], &second[..]].concat());
}

/// RFC 3030 §2: a last chunk may be empty. Nothing follows `BDAT 0 LAST`,
/// so the server must answer it without waiting for more bytes.
#[test]
fn an_empty_last_bdat_chunk_ends_the_message_at_once() {
    let server = Server::start_receiving("");
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<chunks@example.org>", "250 2.1.0");
    c.command_expect("RCPT TO:<alice@example.test>", "250 2.1.5");
    let content = b"Subject: ends empty\r\n\r\nbody\r\n";
    c.send([format!("BDAT {}\r\n", content.len()).as_bytes(), content].concat());
    assert!(c.expect("250 2.0.0").raw.starts_with("250 2.0.0 "));
    c.send("BDAT 0 LAST\r\n");
    let queued = c.expect("250 2.0.0");
    assert!(
        queued.raw.starts_with("250 2.0.0 Ok: queued as "),
        "{queued:?}"
    );
    let m = only_message(&server);
    assert_eq!(Some(m.id.clone()), queued.queue_id());
    assert_eq!(m.content(), content);
}

#[test]
fn an_ipv6_loopback_client_is_served_and_traced_with_an_ipv6_literal() {
    let server = Server::start_receiving("[[listen]]\naddr = \"[::1]:0\"\n");
    assert!(server.addr().is_ipv6(), "{}", server.addr());
    let mut c = Client::connect_ehlo(server.addr());
    // ::1 is trusted by default: it may relay.
    let r = c.transaction(
        "v6@example.org",
        &["someone@elsewhere.example"],
        b"Subject: v6\r\n\r\nhi\r\n",
    );
    let id = r.queue_id().unwrap_or_else(|| panic!("refused: {r:?}"));
    c.command_expect("QUIT", "221 2.0.0");
    let m = only_message(&server);
    assert_eq!(m.id, id);
    assert_eq!(m.client_ip, "::1".parse::<IpAddr>().unwrap());
    let want = format!(
        "Received: from client.example ([IPv6:::1])\r\n\tby {HOSTNAME} (Sluice) with ESMTP id {id}"
    );
    assert!(m.received().starts_with(&want), "{:?}", m.received());
}
