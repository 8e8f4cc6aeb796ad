//! Bad input gets its exact SMTP error, never a crash, and the server goes
//! on serving: after each case a fresh client still gets a message queued.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sluice_e2e::{
    Client, HOSTNAME, Reply, Server, queue_by_id, read_queue, send_message, wait_for,
};

/// Panics unless `r` is a one-line reply starting with `code_and_status`,
/// e.g. `"500 5.5.2"`.
#[track_caller]
fn assert_reply(r: &Reply, code_and_status: &str) {
    assert!(
        r.raw.starts_with(&format!("{code_and_status} ")) && r.lines.len() == 1,
        "expected `{code_and_status} ...`, got {r:?}"
    );
}

/// A fresh client gets a message queued, intact: the server survived.
fn assert_still_serves(server: &Server) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let content = format!(
        "Subject: still serving\r\n\r\ncheck {}\r\n",
        N.fetch_add(1, Ordering::Relaxed)
    );
    let id = send_message(
        server.addr(),
        "check@example.org",
        &["alice@example.test"],
        content.as_bytes(),
    );
    let queue = queue_by_id(server.spool_dir());
    let m = queue
        .get(&id)
        .unwrap_or_else(|| panic!("{id} acknowledged but not queued"));
    assert_eq!(m.content(), content.as_bytes());
    id
}

#[test]
fn binary_junk_gets_500_and_the_session_goes_on() {
    let server = Server::start_receiving("");
    let mut c = Client::connect(server.addr());
    c.send(b"\x00\xff garbage\r\n");
    assert_reply(&c.read_reply(), "500 5.5.2");
    c.command_expect("EHLO client.example", "250");
    c.command_expect("NOOP", "250 2.0.0");
    assert_still_serves(&server);
}

#[test]
fn nul_bytes_in_commands_are_refused_without_starting_anything() {
    let server = Server::start_receiving("");
    let mut c = Client::connect_ehlo(server.addr());
    c.send(b"NO\x00OP\r\n");
    assert_reply(&c.read_reply(), "500 5.5.2");
    c.send(b"MAIL FROM:<nul\x00@example.org>\r\n");
    assert_reply(&c.read_reply(), "501 5.1.7");
    // The refused MAIL must not have opened a transaction.
    assert_reply(&c.command("RCPT TO:<alice@example.test>"), "503 5.5.1");
    c.command_expect("NOOP", "250 2.0.0");
    assert_still_serves(&server);
}

#[test]
fn a_100k_command_line_is_refused_and_the_session_resynchronises() {
    let server = Server::start_receiving("");
    let mut c = Client::connect_ehlo(server.addr());
    let mut batch = b"NOOP ".to_vec();
    batch.resize(100 * 1024, b'x');
    // The tail of the long line, and the commands after it, in one write:
    // the tail must be discarded as part of the long line, not parsed.
    batch.extend_from_slice(b"\r\nNOOP\r\nQUIT\r\n");
    c.send(&batch);
    c.expect_raw("500 5.5.2 Line too long\r\n");
    c.expect_raw("250 2.0.0 Ok\r\n");
    c.expect_raw(&format!("221 2.0.0 {HOSTNAME} closing connection\r\n"));
    c.expect_closed();
    assert_still_serves(&server);
}

#[test]
fn commands_out_of_order_get_503() {
    let server = Server::start_receiving("");
    let mut c = Client::connect_ehlo(server.addr());
    assert_reply(&c.command("DATA"), "503 5.5.1");
    assert_reply(&c.command("RCPT TO:<alice@example.test>"), "503 5.5.1");
    c.command_expect("MAIL FROM:<order@example.org>", "250 2.1.0");
    // RFC 5321 §3.3 allows either 503 or 554 ("no valid recipients") here.
    let r = c.command("DATA");
    assert!(
        r.raw.starts_with("503 5.5.1 ") || r.raw.starts_with("554 5.5.1 "),
        "{r:?}"
    );
    // Not in DATA mode: a command still gets its own reply.
    c.command_expect("NOOP", "250 2.0.0");
    assert_reply(&c.command("MAIL FROM:<again@example.org>"), "503 5.5.1");
    assert!(read_queue(server.spool_dir()).is_empty());
    assert_still_serves(&server);
}

#[test]
fn oversize_messages_get_552_early_from_size_and_late_from_data() {
    let server = Server::start_receiving("[limits]\nmax_message_size = 2048\n");
    let mut c = Client::connect(server.addr());
    let ehlo = c.command_expect("EHLO client.example", "250");
    assert!(ehlo.lines.iter().any(|l| l == "SIZE 2048"), "{ehlo:?}");

    assert_reply(
        &c.command("MAIL FROM:<big@example.org> SIZE=5000"),
        "552 5.3.4",
    );

    // A client that declares nothing and sends too much.
    c.command_expect("MAIL FROM:<big@example.org>", "250 2.1.0");
    c.command_expect("RCPT TO:<alice@example.test>", "250 2.1.5");
    c.command_expect("DATA", "354");
    let mut content = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..100 {
        content.extend_from_slice(
            format!("line {i:03} of a message that is too big for the limit\r\n").as_bytes(),
        );
    }
    content.extend_from_slice(b".\r\n");
    c.send(&content);
    assert_reply(&c.read_reply(), "552 5.3.4");
    // The whole body was read: the next line is a command again.
    c.command_expect("NOOP", "250 2.0.0");
    c.command_expect("QUIT", "221 2.0.0");
    assert!(read_queue(server.spool_dir()).is_empty());
    assert_still_serves(&server);
}

#[test]
fn too_many_recipients_get_452_and_the_rest_is_delivered() {
    let server = Server::start_receiving("[limits]\nmax_recipients = 3\n");
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<many@example.org>", "250 2.1.0");
    for r in ["alice", "bob", "postmaster"] {
        c.command_expect(&format!("RCPT TO:<{r}@example.test>"), "250 2.1.5");
    }
    c.send("RCPT TO:<root@example.test>\r\n");
    c.expect_raw("452 4.5.3 Too many recipients\r\n");
    c.command_expect("DATA", "354");
    c.send("Subject: three\r\n\r\nthree of four\r\n.\r\n");
    let id = c.expect("250 2.0.0").queue_id().expect("a queue id");
    let queue = queue_by_id(server.spool_dir());
    assert_eq!(
        queue[&id].recipients,
        [
            "alice@example.test",
            "bob@example.test",
            "postmaster@example.test"
        ]
    );
    assert_still_serves(&server);
}

#[test]
fn too_many_errors_end_the_session_with_421() {
    let server = Server::start_receiving("[limits]\nmax_errors = 3\n");
    let mut c = Client::connect_ehlo(server.addr());
    assert_reply(&c.command("BOGUS 1"), "500 5.5.2");
    assert_reply(&c.command("BOGUS 2"), "500 5.5.2");
    c.send("BOGUS 3\r\n");
    assert_reply(&c.read_reply(), "500 5.5.2");
    c.expect_raw(&format!(
        "421 4.7.0 {HOSTNAME} Too many errors, closing connection\r\n"
    ));
    c.expect_closed();
    assert_still_serves(&server);
}

#[test]
fn an_idle_client_gets_421_and_is_closed() {
    let server = Server::start_receiving("[limits]\nidle_timeout_secs = 2\n");
    let mut c = Client::connect_ehlo(server.addr());
    let start = Instant::now();
    c.expect_raw(&format!("421 4.4.2 {HOSTNAME} Error: timeout exceeded\r\n"));
    let waited = start.elapsed();
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(8)).contains(&waited),
        "timed out after {waited:?}, configured 2 s"
    );
    c.expect_closed();
    assert_still_serves(&server);
}

/// Activity starts the timers over: a client that keeps talking, however
/// slowly, is served for longer than either timeout, commands and content
/// alike (the loop reads its clock once a turn; each read and write counts).
#[test]
fn a_slow_but_steady_client_outlives_both_timeouts() {
    let server =
        Server::start_receiving("[limits]\nidle_timeout_secs = 2\ndata_timeout_secs = 2\n");
    let mut c = Client::connect_ehlo(server.addr());
    let pause = Duration::from_millis(600);
    // 3.6 s of commands, a pause shorter than the timeout before each.
    for _ in 0..6 {
        std::thread::sleep(pause);
        c.command_expect("NOOP", "250 2.0.0");
    }
    c.command_expect("MAIL FROM:<slow@example.org>", "250 2.1.0");
    c.command_expect("RCPT TO:<alice@example.test>", "250 2.1.5");
    c.command_expect("DATA", "354");
    c.send("Subject: slow\r\n\r\n");
    // 3.6 s of content, a line at a time.
    for i in 0..6 {
        std::thread::sleep(pause);
        c.send(format!("line {i}\r\n"));
    }
    c.send(".\r\n");
    let r = c.read_reply();
    assert!(r.raw.starts_with("250 2.0.0 "), "{r:?}");
    c.command_expect("QUIT", "221 2.0.0");
}

#[test]
fn a_client_stalled_in_data_gets_421_and_nothing_is_queued() {
    let server = Server::start_receiving("[limits]\ndata_timeout_secs = 2\n");
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<stall@example.org>", "250 2.1.0");
    c.command_expect("RCPT TO:<alice@example.test>", "250 2.1.5");
    c.command_expect("DATA", "354");
    c.send("Subject: stalled\r\n\r\nhalf a mess");
    let start = Instant::now();
    let r = c.read_reply();
    assert!(r.raw.starts_with("421 4.4.2 "), "{r:?}");
    let waited = start.elapsed();
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(8)).contains(&waited),
        "timed out after {waited:?}, configured 2 s"
    );
    c.expect_closed();
    assert!(read_queue(server.spool_dir()).is_empty());
    assert_still_serves(&server);
}

#[test]
fn smtp_smuggling_variants_refuse_the_whole_message() {
    let server = Server::start_receiving("");
    for smuggle in ["\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r\n"] {
        let mut c = Client::connect_ehlo(server.addr());
        c.command_expect("MAIL FROM:<real@example.org>", "250 2.1.0");
        c.command_expect("RCPT TO:<alice@example.test>", "250 2.1.5");
        c.command_expect("DATA", "354");
        // A server that took the bare line ending for the end of data would
        // run the forged transaction: 250, 250, 250, 354, 250.
        c.send(format!(
            "Subject: real\r\n\r\nreal body{smuggle}MAIL FROM:<forged@evil.example>\r\n\
             RCPT TO:<bob@example.test>\r\nDATA\r\nSubject: forged\r\n\r\nforged body\r\n.\r\n"
        ));
        let r = c.read_reply();
        assert!(
            r.raw.starts_with("550 5.5.2 "),
            "variant {smuggle:?}: {r:?}"
        );
        c.command_expect("QUIT", "221 2.0.0");
        c.expect_closed();
    }
    let queue = read_queue(server.spool_dir());
    assert!(queue.is_empty(), "smuggled mail was queued: {queue:#?}");
    assert_still_serves(&server);
}

#[test]
fn an_unknown_local_user_gets_550_and_the_others_still_get_the_message() {
    let server = Server::start_receiving("");
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<s@example.org>", "250 2.1.0");
    c.send("RCPT TO:<nobody@example.test>\r\n");
    c.expect_raw(
        "550 5.1.1 <nobody@example.test>: Recipient address rejected: no such user here\r\n",
    );
    c.command_expect("RCPT TO:<alice@example.test>", "250 2.1.5");
    c.command_expect("DATA", "354");
    c.send("Subject: x\r\n\r\ny\r\n.\r\n");
    let id = c.expect("250 2.0.0").queue_id().expect("a queue id");
    assert_eq!(
        queue_by_id(server.spool_dir())[&id].recipients,
        ["alice@example.test"]
    );
    assert_still_serves(&server);
}

#[test]
fn relaying_is_refused_to_untrusted_clients_only() {
    // Loopback is trusted by default; here only TEST-NET-1 is.
    let server = Server::start_receiving("[relay]\ntrusted_networks = [\"192.0.2.0/24\"]\n");
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<s@example.org>", "250 2.1.0");
    c.send("RCPT TO:<someone@elsewhere.example>\r\n");
    c.expect_raw("554 5.7.1 <someone@elsewhere.example>: Relay access denied\r\n");
    assert_reply(&c.command("DATA"), "554 5.5.1");
    c.command_expect("QUIT", "221 2.0.0");
    assert!(read_queue(server.spool_dir()).is_empty());
    assert_still_serves(&server);

    // The same recipient from a trusted client is relayed.
    let trusting = Server::start_receiving("");
    let id = send_message(
        trusting.addr(),
        "s@example.org",
        &["someone@elsewhere.example"],
        b"Subject: relay\r\n\r\nok\r\n",
    );
    assert_eq!(
        queue_by_id(trusting.spool_dir())[&id].recipients,
        ["someone@elsewhere.example"]
    );
}

#[test]
fn the_per_ip_connection_limit_refuses_the_third_connection() {
    let server = Server::start_receiving("[limits]\nmax_connections_per_ip = 2\n");
    let mut first = Client::connect(server.addr());
    let _second = Client::connect(server.addr());
    let mut third = Client::connect_raw(server.addr()).expect("the TCP connection is accepted");
    third.expect_raw("421 4.7.0 Too many connections from 127.0.0.1, try again later\r\n");
    third.expect_closed();

    // Once one leaves, a slot is free again (the server releases it as it
    // closes, which may be just after our EOF: hence the bounded retry).
    first.command_expect("QUIT", "221 2.0.0");
    first.expect_closed();
    let admitted = wait_for(Duration::from_secs(5), || {
        let mut c = Client::connect_raw(server.addr()).ok()?;
        (c.try_read_reply().ok()?.code == 220).then_some(c)
    });
    let mut again = admitted.expect("no connection admitted within 5 s after one of two closed");
    again.command_expect("EHLO client.example", "250");
    let r = again.transaction(
        "s@example.org",
        &["alice@example.test"],
        b"Subject: slot\r\n\r\nfree\r\n",
    );
    let id = r.queue_id().unwrap_or_else(|| panic!("refused: {r:?}"));
    assert_eq!(
        queue_by_id(server.spool_dir())[&id].content(),
        b"Subject: slot\r\n\r\nfree\r\n"
    );
}

#[test]
fn a_bdat_size_that_cannot_be_skipped_closes_the_connection() {
    let server = Server::start_receiving("");
    // 2^64 does not parse: where the chunk ends is unknowable, so what
    // follows must never be read as commands (SMTP smuggling).
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<a@example.org>", "250 2.1.0");
    c.command_expect("RCPT TO:<alice@example.test>", "250 2.1.5");
    c.send(b"BDAT 18446744073709551616 LAST\r\nRSET\r\nMAIL FROM:<b@example.org>\r\n");
    c.expect_raw(
        "501 5.5.4 Syntax error, expected BDAT <chunk size> [LAST]; closing the connection\r\n",
    );
    c.expect_closed();

    // 2^63 parses but is far past the size limit: refused before a byte of
    // it is read (it used to be streamed to the end), and the connection ends.
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<a@example.org>", "250 2.1.0");
    c.command_expect("RCPT TO:<alice@example.test>", "250 2.1.5");
    c.send(b"BDAT 9223372036854775808 LAST\r\nRSET\r\n");
    c.expect_raw(
        "552 5.3.4 Message size exceeds fixed maximum message size; closing the connection\r\n",
    );
    c.expect_closed();
    assert!(read_queue(server.spool_dir()).is_empty());
    assert_still_serves(&server);
}
