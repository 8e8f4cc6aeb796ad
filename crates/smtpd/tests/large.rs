//! Messages whose bytes arrive in pieces, over real loopback sockets. Large
//! ones: past `SPILL_AT` their bytes leave the session for an unnamed file in
//! the spool's directory as they arrive, and what the spool stores must still
//! be the message, byte for byte, by DATA and by BDAT, with nothing left
//! behind in the directory. Small ones, a few bytes at a time: the session
//! parses each read where it landed and keeps only what it could not take
//! yet, so a split anywhere must change nothing either.

mod common;
use common::Client;

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;

use sluice_smtpd::Smtpd;
use sluice_spool::{QueueId, Spool};

const LIMIT: u64 = 4 << 20;

fn start(dir: &Path) -> (Smtpd, Spool) {
    common::start_smtpd(dir, 1, LIMIT)
}

/// A header, then lines of varied length, some starting with a dot, and
/// nothing that ends the DATA early.
fn content(len: usize) -> Vec<u8> {
    let mut out = b"Subject: large\r\n\r\n".to_vec();
    let mut n = 0u64;
    while out.len() < len {
        n += 1;
        if n.is_multiple_of(7) {
            out.push(b'.');
        }
        let width = 20 + (n * 37 % 900) as usize;
        out.extend((0..width).map(|i| b'a' + ((n as usize + i) % 26) as u8));
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 64 + 5);
    for line in content.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn names(dir: &Path) -> HashSet<OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

fn queued_id(reply: &str) -> QueueId {
    let id = reply
        .trim_end()
        .rsplit(' ')
        .next()
        .expect("a queue id at the end");
    id.parse()
        .unwrap_or_else(|_| panic!("not a queue id: {reply:?}"))
}

fn begin(c: &mut Client) {
    assert!(c.command("MAIL FROM:<s@c.example>").starts_with("250 "));
    assert!(
        c.command("RCPT TO:<alice@example.test>")
            .starts_with("250 ")
    );
}

/// A whole transaction by DATA, the content sent in one write; the reply.
fn send_by_data(c: &mut Client, sent: &[u8]) -> String {
    begin(c);
    assert!(c.command("DATA").starts_with("354 "));
    c.send(&dot_stuff(sent));
    c.reply()
}

/// The stored message is our `Received:` header, then the content as sent.
fn assert_stored(spool: &Spool, id: QueueId, sent: &[u8]) {
    let stored = spool.get(id).unwrap().expect("the message is queued");
    let body = stored.body();
    assert!(
        body.starts_with(b"Received: from c.example"),
        "trace header first"
    );
    let content = &body[body.len() - sent.len()..];
    assert!(
        content == sent,
        "the stored content differs from what was sent"
    );
    let header = &body[..body.len() - sent.len()];
    assert!(
        header.len() < 600 && header.ends_with(b"\r\n"),
        "only the trace header before the content ({} bytes)",
        header.len()
    );
}

#[test]
fn large_messages_by_data_and_by_bdat_are_stored_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (smtpd, spool) = start(dir.path());
    let before = names(dir.path());
    let mut c = Client::connect(smtpd.local_addrs()[0]);
    assert!(c.command("EHLO c.example").starts_with("250 "));

    // DATA, sent in pieces that split lines (and dot-stuffing) anywhere.
    let sent = content(3 << 20);
    begin(&mut c);
    assert!(c.command("DATA").starts_with("354 "));
    for piece in dot_stuff(&sent).chunks(40_001) {
        c.send(piece);
    }
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    assert_stored(&spool, queued_id(&reply), &sent);

    // BDAT, in chunks of uneven size, the last one small.
    let sent = content((3 << 20) + 12_345);
    begin(&mut c);
    let mut rest = &sent[..];
    let mut reply = String::new();
    while !rest.is_empty() {
        let n = rest.len().min(700_000);
        let last = if n == rest.len() { " LAST" } else { "" };
        c.send(format!("BDAT {n}{last}\r\n").as_bytes());
        c.send(&rest[..n]);
        rest = &rest[n..];
        reply = c.reply();
        assert!(reply.starts_with("250 "), "{reply}");
    }
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    assert_stored(&spool, queued_id(&reply), &sent);

    // The spill files had no names: only the spool's own files appeared.
    let appeared: Vec<_> = names(dir.path()).difference(&before).cloned().collect();
    assert!(
        appeared
            .iter()
            .all(|n| n.to_string_lossy().starts_with("seg-")),
        "{appeared:?}"
    );
    assert!(c.command("QUIT").starts_with("221 "));
    smtpd.stopper().stop();
    smtpd.wait();
}

/// A message over the size limit has been spilling for a while when it is
/// refused; the transaction's spill goes with it, and the next message on the
/// same connection, large too, is stored whole and alone.
#[test]
fn a_refused_large_message_leaves_the_next_one_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (smtpd, spool) = start(dir.path());
    let mut c = Client::connect(smtpd.local_addrs()[0]);
    assert!(c.command("EHLO c.example").starts_with("250 "));

    begin(&mut c);
    assert!(c.command("DATA").starts_with("354 "));
    let too_big = content(LIMIT as usize + (1 << 20));
    for piece in dot_stuff(&too_big).chunks(65_536) {
        c.send(piece);
    }
    let reply = c.reply();
    assert!(reply.starts_with("552 5.3.4 "), "{reply}");

    let sent = content(1 << 20);
    let reply = send_by_data(&mut c, &sent);
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    assert_stored(&spool, queued_id(&reply), &sent);
    assert_eq!(
        spool.stats().messages,
        1,
        "the refused message is not queued"
    );
    smtpd.stopper().stop();
    smtpd.wait();
}

/// A spill that cannot be written (here: the spool's directory is gone, so no
/// file can be made in it) refuses that message at its end with 452 4.3.1,
/// and the connection goes on: a small message, which needs no spill, is
/// still accepted.
#[test]
fn a_spill_that_cannot_be_written_refuses_the_message_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (smtpd, spool) = start(dir.path());
    let mut c = Client::connect(smtpd.local_addrs()[0]);
    assert!(c.command("EHLO c.example").starts_with("250 "));
    std::fs::remove_dir_all(dir.path()).unwrap();

    let reply = send_by_data(&mut c, &content(1 << 20));
    assert!(reply.starts_with("452 4.3.1 "), "{reply}");

    let sent = content(2_000);
    let reply = send_by_data(&mut c, &sent);
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    assert_stored(&spool, queued_id(&reply), &sent);
    smtpd.stopper().stop();
    smtpd.wait();
}

/// Writes `bytes` a few at a time, each piece its own segment as far as a
/// pause of a millisecond makes it one.
fn dribble(c: &mut Client, bytes: &[u8], piece: usize) {
    for p in bytes.chunks(piece) {
        c.send(p);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The replies to a pipelined MAIL, RCPT, DATA: all accepted.
fn expect_group_accepted(c: &mut Client) {
    for expected in ["250 ", "250 ", "354 "] {
        let reply = c.reply();
        assert!(reply.starts_with(expected), "{reply}");
    }
}

#[test]
fn messages_arriving_a_few_bytes_at_a_time_are_stored_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (smtpd, spool) = start(dir.path());
    let mut c = Client::connect(smtpd.local_addrs()[0]);
    assert!(c.command("EHLO c.example").starts_with("250 "));
    let commands = b"MAIL FROM:<s@c.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n";
    let first = content(3_000);
    let second = content(2_000);

    // A pipelined group split inside its commands.
    dribble(&mut c, commands, 5);
    expect_group_accepted(&mut c);
    // The body split anywhere (inside the final CRLF.CRLF too), and the
    // next group right behind it: those commands wait, read but unparsed,
    // until the first message is on disk.
    let mut wire = dot_stuff(&first);
    wire.extend_from_slice(commands);
    dribble(&mut c, &wire, 13);
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let first_id = queued_id(&reply);
    expect_group_accepted(&mut c);
    // The second body and QUIT in one write.
    let mut wire = dot_stuff(&second);
    wire.extend_from_slice(b"QUIT\r\n");
    c.send(&wire);
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let second_id = queued_id(&reply);
    assert!(c.reply().starts_with("221 "));

    assert_ne!(first_id, second_id);
    assert_stored(&spool, first_id, &first);
    assert_stored(&spool, second_id, &second);
    smtpd.stopper().stop();
    smtpd.wait();
}
