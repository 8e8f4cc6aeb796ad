//! Sluice against a real mail store: local mail handed to Dovecot over LMTP
//! (RFC 2033), on a unix socket and on TCP, and the Maildirs Sluice writes
//! itself served by Dovecot's IMAP. What a user reads through IMAP must be,
//! after the header fields the store and Sluice add, the content the client
//! sent, octet for octet.

use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders};
use sluice_e2e::dovecot::{Dovecot, Fetched};
use sluice_e2e::{
    Server, TRICKY, received_prefix, split_received, submit, wait_for, wait_for_maildir,
};

/// How long any one delivery may take to show up.
const DELIVERY_LIMIT: Duration = Duration::from_secs(20);

/// `[local]` for the users Sluice accepts mail for: bob is one of them but
/// unknown to Dovecot, so only LMTP can refuse him.
const LOCAL: &str = "[local]\ndomains = [\"example.test\"]\n\
                     users = [\"alice\", \"bob\", \"carol\", \"dave\"]\n";

fn lmtp_server(dovecot_target: &str) -> Server {
    Server::start(&format!(
        "{LOCAL}\n[delivery]\nlmtp = \"{dovecot_target}\"\n"
    ))
}

/// Every message in `user`'s INBOX, read through IMAP without marking any
/// of them seen.
fn inbox(dovecot: &Dovecot, user: &str) -> Vec<Fetched> {
    let mut imap = dovecot.imap(user);
    let exists = imap.select("INBOX");
    (1..=exists).map(|seq| imap.fetch(seq)).collect()
}

/// Splits a message Dovecot stored from LMTP into the header fields Dovecot
/// added and the rest, which must start with Sluice's `Received:` for
/// queue id `id`; returns (Dovecot's fields, the content after Sluice's
/// `Received:`).
fn after_received<'a>(message: &'a [u8], id: &str) -> (&'a str, &'a [u8]) {
    let ours = received_prefix(id);
    let at = message
        .windows(ours.len())
        .position(|w| w == ours.as_bytes())
        .unwrap_or_else(|| {
            panic!(
                "no {ours:?} in the stored message:\n{}",
                String::from_utf8_lossy(message)
            )
        });
    let added = std::str::from_utf8(&message[..at]).expect("UTF-8 header fields from Dovecot");
    assert!(
        added.is_empty() || added.ends_with("\r\n"),
        "Sluice's Received: is not at the start of a line: {added:?}"
    );
    (added, split_received(&message[at..]).1)
}

/// The first `delivery` log line of `recipient` of message `id`, whatever
/// its outcome.
fn first_outcome(server: &Server, id: &str, recipient: &str) -> String {
    let fields = [
        format!("queue_id={id} "),
        format!("recipient=\"{recipient}\""),
    ];
    wait_for(DELIVERY_LIMIT, || {
        server
            .logs()
            .into_iter()
            .find(|l| l.contains(" delivery ") && fields.iter().all(|f| l.contains(f.as_str())))
    })
    .unwrap_or_else(|| {
        panic!(
            "no delivery of {id} to {recipient} within {DELIVERY_LIMIT:?}; logs:\n{}",
            server.logs().join("\n")
        )
    })
}

fn has_line(text: &str, line: &str) -> bool {
    text.split("\r\n").any(|l| l.trim_end() == line)
}

/// The report's machine-readable part, with folded lines unfolded.
fn delivery_status(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let msg = MessageParser::default()
        .parse(message)
        .unwrap_or_else(|| panic!("unparsable bounce: {text}"));
    let ct = msg.content_type().expect("a Content-Type");
    assert_eq!(
        (ct.ctype(), ct.subtype(), ct.attribute("report-type")),
        ("multipart", Some("report"), Some("delivery-status")),
        "{text}"
    );
    let part = msg
        .root_part()
        .sub_parts()
        .expect("a multipart bounce")
        .iter()
        .filter_map(|&id| msg.part(id))
        .find(|p| {
            p.content_type()
                .is_some_and(|c| c.ctype() == "message" && c.subtype() == Some("delivery-status"))
        })
        .unwrap_or_else(|| panic!("no message/delivery-status part: {text}"));
    String::from_utf8_lossy(part.contents()).replace("\r\n ", " ")
}

/// One LMTP transaction for three recipients that end three ways: alice is
/// delivered (250 after the data), bob is refused at RCPT (Dovecot does not
/// know him: 550), carol is accepted at RCPT and refused after the data
/// (over quota: 552). Only per-recipient replies after the final dot, matched
/// to the recipients Dovecot accepted in order, tell alice's and carol's
/// fates apart. Both failures are permanent, so (docs/delivery.md,
/// "Replies per recipient" and "Bounces") they fail and the sender, dave,
/// gets one bounce, which goes back through LMTP to his own mailbox.
#[test]
fn lmtp_on_a_unix_socket_gives_each_recipient_its_own_reply() {
    let dovecot = Dovecot::builder()
        .user("alice")
        .user("dave")
        .full_user("carol")
        .start();
    let server = lmtp_server(&dovecot.lmtp_unix_target());
    let id = submit(
        server.addr(),
        "dave@example.test",
        "BODY=8BITMIME",
        &[
            "alice@example.test",
            "bob@example.test",
            "carol@example.test",
        ],
        TRICKY,
    );

    let alice = server.wait_delivery(&id, "alice@example.test", "delivered", DELIVERY_LIMIT);
    let bob = server.wait_delivery(&id, "bob@example.test", "failed", DELIVERY_LIMIT);
    let carol = server.wait_delivery(&id, "carol@example.test", "failed", DELIVERY_LIMIT);
    // Dovecot names the recipient in each reply: each line carries its own.
    assert!(
        alice.contains("250 2.0.0 <alice@example.test>") && alice.contains("Saved"),
        "{alice}"
    );
    assert!(bob.contains("550 5.1.1 <bob@example.test>"), "{bob}");
    assert!(
        carol.contains("552 5.2.2 <carol@example.test> Quota exceeded"),
        "{carol}"
    );
    // One transaction for all three: Dovecot names a transaction's further
    // recipients `<session>:R<n>` after the first one's `<session>`, which
    // its 250 for alice gives.
    let session = alice
        .split("<alice@example.test> ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no session id in {alice}"));
    let log = dovecot.log();
    assert!(
        log.lines().any(|l| l.contains(" lmtp(carol)<")
            && l.contains(&format!("<{session}:R"))
            && l.contains("Quota exceeded")),
        "carol was not in alice's transaction {session}:\n{log}"
    );
    server.wait_queue_empty(DELIVERY_LIMIT);

    let mail = inbox(&dovecot, "alice");
    assert_eq!(mail.len(), 1, "alice's INBOX: {mail:#?}");
    let (added, content) = after_received(&mail[0].message, &id);
    assert!(
        added.starts_with("Return-Path: <dave@example.test>\r\n"),
        "{added:?}"
    );
    assert!(added.contains(" with LMTP"), "{added:?}");
    // Over LMTP the store writes the trace fields; Sluice adds none of its
    // own (docs/delivery.md).
    assert_eq!(added.matches("Return-Path:").count(), 1, "{added:?}");
    assert_eq!(
        content,
        TRICKY,
        "content differs:\n{}",
        String::from_utf8_lossy(content)
    );
    assert!(inbox(&dovecot, "carol").is_empty());

    // The bounce went through the same queue and LMTP, from <>.
    let bounces = inbox(&dovecot, "dave");
    assert_eq!(bounces.len(), 1, "dave's INBOX: {bounces:#?}");
    let bounce = &bounces[0].message;
    assert!(
        bounce.starts_with(b"Return-Path: <>\r\n"),
        "{}",
        String::from_utf8_lossy(bounce)
    );
    let status = delivery_status(bounce);
    for want in [
        "Final-Recipient: rfc822; bob@example.test",
        "Final-Recipient: rfc822; carol@example.test",
        "Status: 5.1.1",
        "Status: 5.2.2",
    ] {
        assert!(has_line(&status, want), "{want:?} missing in\n{status}");
    }
    for reply in [
        "550 5.1.1 <bob@example.test> User doesn't exist",
        "552 5.2.2 <carol@example.test> Quota exceeded",
    ] {
        assert!(
            status
                .split("\r\n")
                .any(|l| l.starts_with("Diagnostic-Code: smtp; ") && l.contains(reply)),
            "no Diagnostic-Code with {reply:?} in\n{status}"
        );
    }
    assert!(
        !has_line(&status, "Final-Recipient: rfc822; alice@example.test"),
        "the delivered recipient is reported:\n{status}"
    );
}

/// `lmtp = "host:port"`: the same client over TCP. The message is large
/// enough to take many writes, with dot lines throughout.
#[test]
fn lmtp_over_tcp_delivers_a_large_message_intact() {
    let dovecot = Dovecot::builder().user("alice").start();
    let server = lmtp_server(&dovecot.lmtp_addr().to_string());
    let mut content = b"From: dave@example.test\r\nSubject: large\r\n\r\n".to_vec();
    for n in 0..6000 {
        let line = if n % 7 == 0 {
            format!(".{n} a line that starts with a dot\r\n")
        } else {
            format!("{n:05} {}\r\n", "z".repeat(40 + n % 30))
        };
        content.extend_from_slice(line.as_bytes());
    }
    let id = submit(
        server.addr(),
        "dave@example.test",
        "",
        &["alice@example.test"],
        &content,
    );
    let line = server.wait_delivery(&id, "alice@example.test", "delivered", DELIVERY_LIMIT);
    let next_hop = format!("[127.0.0.1]:{} said: 250 ", dovecot.lmtp_addr().port());
    assert!(line.contains(&next_hop), "{line}");
    server.wait_queue_empty(DELIVERY_LIMIT);
    let mail = inbox(&dovecot, "alice");
    assert_eq!(mail.len(), 1);
    let (_, delivered) = after_received(&mail[0].message, &id);
    assert!(delivered == content, "{} octets differ", content.len());
}

/// docs/delivery.md: local recipients' aliases are expanded, and the
/// message is then "handed to an LMTP server if `[delivery] lmtp` is set".
/// Dovecot knows only alice, so the alias must reach it as alice, and once
/// only when alice is also a recipient herself.
#[test]
fn an_alias_is_expanded_before_lmtp() {
    let dovecot = Dovecot::builder().user("alice").user("dave").start();
    let server = Server::start(&format!(
        "[local]\ndomains = [\"example.test\"]\nusers = [\"alice\", \"dave\"]\n\
         aliases = {{ sales = \"alice\" }}\n\
         [delivery]\nlmtp = \"{}\"\n",
        dovecot.lmtp_unix_target()
    ));
    let content = b"Subject: to the alias\r\n\r\nfor sales\r\n";
    let id = submit(
        server.addr(),
        "dave@example.test",
        "",
        &["sales@example.test", "alice@example.test"],
        content,
    );
    // Whatever the outcome, so that a failure says why at once.
    for rcpt in ["sales@example.test", "alice@example.test"] {
        let line = first_outcome(&server, &id, rcpt);
        assert!(line.contains("outcome=\"delivered\""), "{line}");
    }
    server.wait_queue_empty(DELIVERY_LIMIT);
    // Both forward-paths reach one mailbox: one copy, not two.
    let mail = inbox(&dovecot, "alice");
    assert_eq!(mail.len(), 1);
    assert_eq!(after_received(&mail[0].message, &id).1, content);
    assert!(inbox(&dovecot, "dave").is_empty(), "a bounce to dave");
}

/// The Maildirs Sluice writes itself, served by Dovecot's IMAP straight from
/// `[local] maildir_root`: the file comes back whole, as a new message
/// (`\Recent`, not `\Seen`); and a message Sluice writes after Dovecot has
/// indexed the mailbox shows up too.
#[test]
fn dovecot_serves_the_maildirs_sluice_writes() {
    let dovecot = Dovecot::builder().user("alice").start();
    let server = Server::start(&format!(
        "[local]\ndomains = [\"example.test\"]\nusers = [\"alice\"]\nmaildir_root = \"{}\"\n",
        dovecot.mail_root().display()
    ));
    let maildir = dovecot.maildir("alice");
    let id = submit(
        server.addr(),
        "dave@example.org",
        "BODY=8BITMIME",
        &["alice@example.test"],
        TRICKY,
    );
    server.wait_delivery(&id, "alice@example.test", "delivered", DELIVERY_LIMIT);
    let files = wait_for_maildir(&maildir, 1, DELIVERY_LIMIT);
    dovecot.hand_over(&maildir);

    let mut imap = dovecot.imap("alice");
    let status = imap.status("INBOX");
    assert_eq!(
        (status.messages, status.recent, status.unseen),
        (1, 1, 1),
        "{status:?}"
    );
    assert_eq!(imap.select("INBOX"), 1);
    let first = imap.fetch(1);
    assert!(first.flags.iter().any(|f| f == "\\Recent"), "{first:?}");
    assert!(!first.flags.iter().any(|f| f == "\\Seen"), "{first:?}");
    assert!(
        first.message == files[0].bytes,
        "IMAP returned something else than the file:\n{}",
        String::from_utf8_lossy(&first.message)
    );
    let d = files[0].delivered();
    assert_eq!(d.return_path, "<dave@example.org>");
    assert_eq!(files[0].received_content(&id), TRICKY);
    drop(imap);

    let second = b"Subject: later\r\n\r\nwritten after Dovecot indexed the mailbox\r\n";
    let id2 = submit(
        server.addr(),
        "dave@example.org",
        "",
        &["alice@example.test"],
        second,
    );
    server.wait_delivery(&id2, "alice@example.test", "delivered", DELIVERY_LIMIT);
    dovecot.hand_over(&maildir);
    let mut imap = dovecot.imap("alice");
    // \Recent belongs to the first session that saw a message: only the new
    // one is recent now; neither has been read.
    let status = imap.status("INBOX");
    assert_eq!(
        (status.messages, status.recent, status.unseen),
        (2, 1, 2),
        "{status:?}"
    );
    assert_eq!(imap.select("INBOX"), 2);
    let later = imap.fetch(2);
    let (_, content) = after_received(&later.message, &id2);
    assert_eq!(content, second);
    assert!(later.flags.iter().any(|f| f == "\\Recent"), "{later:?}");

    // The Maildir++ sizes in the file names (`,S=`, `,W=`) are what Dovecot
    // reports as RFC822.SIZE without reading the files; a wrong one would
    // also make it log a broken-size error and fix the name.
    let sizes = imap.command("FETCH 1:2 (RFC822.SIZE)");
    for (seq, message) in [(1, &first.message), (2, &later.message)] {
        let expected = format!("{seq} FETCH (RFC822.SIZE {})", message.len());
        assert!(
            sizes.iter().any(|u| u.text.contains(&expected)),
            "no {expected:?} in {sizes:?}"
        );
    }
    let log = dovecot.log();
    assert!(!log.contains("Error"), "Dovecot complained:\n{log}");
}
