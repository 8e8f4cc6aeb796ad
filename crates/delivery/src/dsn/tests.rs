//! Each notification is parsed back with `mail-parser`, an independent MIME
//! implementation, rather than compared with a stored copy of our output.

use std::time::{Duration, UNIX_EPOCH};

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders};
use sluice_smtp::{Envelope, MailParams, RcptParams, Recipient};
use sluice_spool::{QueueId, RemoteMta};

use super::*;

const ORIGINAL: &[u8] = b"Received: from client.example ([192.0.2.7])\r\n\tby mx.example.test (Sluice) with ESMTP id 0CJ5N3R8G2K00;\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n\
From: The Boss <boss@elsewhere.test>\r\nReply-To: replies@elsewhere.test\r\nSubject: quarterly numbers\r\n\r\nThe secret body line.\r\n.a line that began with a dot\r\n";

const NOW_SECS: u64 = 1_795_380_397;
const ARRIVAL_MS: u64 = 1_795_380_000_123;

fn path(mailbox: &str) -> Path {
    Path::parse(format!("<{mailbox}>").as_bytes()).unwrap()
}

/// An entry as the spool holds it; the parameters are written as on the
/// wire, for the tests to read easily.
fn envelope(reverse_path: &str, mail_params: &str, rcpts: &[(&str, &str)]) -> Entry {
    Entry {
        id: QueueId(0x0123_4567_89ab_cdef),
        arrival_unix_ms: ARRIVAL_MS,
        client_ip: "192.0.2.7".parse().unwrap(),
        helo: "client.example".into(),
        envelope: Envelope {
            reverse_path: if reverse_path.is_empty() {
                ReversePath::Null
            } else {
                ReversePath::Path(path(reverse_path))
            },
            params: MailParams::parse(mail_params).unwrap(),
            recipients: rcpts
                .iter()
                .map(|&(address, params)| Recipient {
                    forward_path: ForwardPath::Path(path(address)),
                    params: RcptParams::parse(params).unwrap(),
                })
                .collect(),
        }
        .into(),
    }
}

/// A failed recipient by its address, with the reply as a server wrote it.
#[derive(Debug, Clone)]
struct Fail {
    address: String,
    reply: String,
    remote_mta: Option<String>,
    original: Option<String>,
    action: Action,
}

fn failed(address: &str, reply: &str, action: Action) -> Fail {
    Fail {
        address: address.into(),
        reply: reply.into(),
        remote_mta: Some("mx.remote.test".into()),
        original: None,
        action,
    }
}

fn reason(reply: &str, remote_mta: Option<&str>) -> Reason {
    let reply = Reply::parse(format!("{reply}\r\n").as_bytes())
        .unwrap()
        .unwrap()
        .0;
    Reason {
        reply,
        remote_mta: remote_mta.map(|name| RemoteMta {
            name: name.into(),
            addr: None,
        }),
        stage: None,
    }
}

const BOB_REPLY: &str = "550 5.1.1 <bob@remote.test>: no such user";

fn make(entry: &Entry, body: &[u8], failed: &[Fail], hdrs: bool) -> Option<Bounce> {
    let failed: Vec<FailedRecipient> = failed
        .iter()
        .map(|f| FailedRecipient {
            index: entry
                .envelope
                .recipients
                .iter()
                .position(|r| r.forward_path == ForwardPath::Path(path(&f.address)))
                .expect("a recipient of the envelope") as u32,
            original: f.original.clone(),
            reason: reason(&f.reply, f.remote_mta.as_deref()),
            action: f.action,
        })
        .collect();
    bounce(&BounceInput {
        reporting_mta: "mx.example.test",
        entry,
        body,
        failed: &failed,
        now: UNIX_EPOCH + Duration::from_secs(NOW_SECS),
        ret_headers_only: hdrs,
    })
}

fn simple(mail_params: &str, rcpt_params: &str, body: &[u8]) -> Bounce {
    let env = envelope(
        "alice@example.org",
        mail_params,
        &[("bob@remote.test", rcpt_params)],
    );
    make(
        &env,
        body,
        &[failed("bob@remote.test", BOB_REPLY, Action::Failed)],
        false,
    )
    .expect("a bounce")
}

fn parse(bounce: &Bounce) -> Message<'_> {
    MessageParser::default()
        .parse(&bounce.message)
        .expect("parsable")
}

/// The three parts of the report, in order.
fn parts<'a>(msg: &'a Message<'a>) -> Vec<&'a MessagePart<'a>> {
    let ids = msg.root_part().sub_parts().expect("multipart");
    ids.iter().map(|&id| msg.part(id).unwrap()).collect()
}

fn ctype(part: &MessagePart<'_>) -> String {
    let ct = part.content_type().expect("content type");
    format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
}

/// The delivery-status part's fields, unfolded.
fn status_text(bounce: &Bounce) -> String {
    let msg = parse(bounce);
    let part = parts(&msg)[1];
    assert_eq!(ctype(part), "message/delivery-status");
    String::from_utf8(part.contents().to_vec())
        .unwrap()
        .replace("\r\n ", " ")
}

fn has_line(text: &str, line: &str) -> bool {
    text.split("\r\n").any(|l| l == line)
}

#[test]
fn bounce_is_a_multipart_report_to_the_reverse_path() {
    let bounce = simple("", "", ORIGINAL);
    assert_eq!(bounce.recipient, path("alice@example.org"));
    let msg = parse(&bounce);

    let to = msg.to().unwrap().first().unwrap();
    assert_eq!(to.address(), Some("alice@example.org"));
    let from = msg.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some("MAILER-DAEMON@mx.example.test"));
    assert_eq!(from.name(), Some("Mail Delivery System"));
    assert_eq!(msg.subject(), Some("Undelivered Mail Returned to Sender"));
    assert!(msg.message_id().unwrap().ends_with("@mx.example.test"));
    assert_eq!(msg.date().unwrap().to_timestamp(), NOW_SECS as i64);
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert_eq!(msg.header_raw("MIME-Version").map(str::trim), Some("1.0"));

    let ct = msg.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let boundary = ct.attribute("boundary").unwrap().to_owned();

    let p = parts(&msg);
    assert_eq!(p.len(), 3);
    assert_eq!(ctype(p[0]), "text/plain");
    assert_eq!(ctype(p[1]), "message/delivery-status");
    assert_eq!(ctype(p[2]), "message/rfc822");

    // The boundary appears in the Content-Type and the four delimiter lines,
    // nowhere else.
    let text = String::from_utf8(bounce.message.clone()).unwrap();
    assert_eq!(text.matches(boundary.as_str()).count(), 5, "{text}");
    assert_eq!(text.matches(&format!("\r\n--{boundary}\r\n")).count(), 3);
    assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
    // CRLF everywhere, and no line over the RFC 5322 limit.
    assert_eq!(text.matches('\n').count(), text.matches("\r\n").count());
    assert!(text.split("\r\n").all(|l| l.len() <= 998));
}

#[test]
fn reply_ends_up_in_status_and_diagnostic_code() {
    let bounce = simple("", "", ORIGINAL);
    let status = status_text(&bounce);
    for line in [
        "Reporting-MTA: dns; mx.example.test",
        "Received-From-MTA: dns; client.example ([192.0.2.7])",
        "Final-Recipient: rfc822; bob@remote.test",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; mx.remote.test",
        "Diagnostic-Code: smtp; 550 5.1.1 <bob@remote.test>: no such user",
    ] {
        assert!(has_line(&status, line), "{line} missing in\n{status}");
    }
    assert!(!status.contains("Original-Envelope-Id"), "{status}");
    assert!(!status.contains("Original-Recipient"), "{status}");
    let arrival = status
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Arrival-Date: "))
        .unwrap();
    let parsed = MessageParser::default()
        .parse(format!("Date: {arrival}\r\n\r\n").as_bytes())
        .unwrap()
        .date()
        .unwrap()
        .to_timestamp();
    assert_eq!(parsed, (ARRIVAL_MS / 1000) as i64);

    let msg = parse(&bounce);
    let human = parts(&msg)[0].text_contents().unwrap().to_owned();
    assert!(
        human.contains("<bob@remote.test>: host mx.remote.test said:"),
        "{human}"
    );
    assert!(human.contains(BOB_REPLY), "{human}");
}

#[test]
fn status_comes_from_the_basic_code_when_there_is_no_enhanced_one() {
    let cases = [
        ("550 mailbox unavailable", Action::Failed, "5.0.0"),
        ("554 5.7.1 <x>: relay denied", Action::Failed, "5.7.1"),
        ("421 4.4.2 timeout", Action::Failed, "4.4.2"),
        ("451 try later", Action::Delayed, "4.0.0"),
        (
            "451 4.4.1 Connection refused by 192.0.2.9",
            Action::Delayed,
            "4.4.1",
        ),
    ];
    for (reply, action, status) in cases {
        let env = envelope("a@b.test", "", &[("bob@remote.test", "")]);
        let b = make(
            &env,
            ORIGINAL,
            &[failed("bob@remote.test", reply, action)],
            false,
        )
        .unwrap();
        let text = status_text(&b);
        assert!(
            has_line(&text, &format!("Status: {status}")),
            "{reply}: {text}"
        );
    }
}

#[test]
fn header_from_is_never_the_recipient() {
    // The original's From:, Reply-To: and Sender: all name someone else.
    let bounce = simple("", "", ORIGINAL);
    let msg = parse(&bounce);
    let to: Vec<_> = msg
        .to()
        .unwrap()
        .iter()
        .filter_map(|a| a.address())
        .collect();
    assert_eq!(to, ["alice@example.org"]);
    assert!(msg.cc().is_none() && msg.bcc().is_none());
}

#[test]
fn null_reverse_path_is_never_bounced() {
    let env = envelope("", "", &[("bob@remote.test", "")]);
    let f = [failed("bob@remote.test", BOB_REPLY, Action::Failed)];
    assert!(make(&env, ORIGINAL, &f, false).is_none());
}

#[test]
fn notify_decides_per_recipient() {
    let env = envelope(
        "alice@example.org",
        "",
        &[
            ("never@remote.test", "NOTIFY=NEVER"),
            ("delay-only@remote.test", "NOTIFY=SUCCESS,DELAY"),
            ("failure-only@remote.test", "NOTIFY=FAILURE"),
            ("default@remote.test", ""),
        ],
    );
    let f = |a: &str, action| failed(a, BOB_REPLY, action);
    // NEVER alone: nothing to send.
    assert!(
        make(
            &env,
            ORIGINAL,
            &[f("never@remote.test", Action::Failed)],
            false
        )
        .is_none()
    );
    assert!(
        make(
            &env,
            ORIGINAL,
            &[f("delay-only@remote.test", Action::Failed)],
            false
        )
        .is_none()
    );
    assert!(
        make(
            &env,
            ORIGINAL,
            &[f("failure-only@remote.test", Action::Delayed)],
            false
        )
        .is_none()
    );

    let all = [
        f("never@remote.test", Action::Failed),
        f("delay-only@remote.test", Action::Failed),
        f("failure-only@remote.test", Action::Failed),
        f("default@remote.test", Action::Failed),
        f("delay-only@remote.test", Action::Delayed),
    ];
    let bounce = make(&env, ORIGINAL, &all, false).unwrap();
    let status = status_text(&bounce);
    let finals: Vec<&str> = status
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("Final-Recipient: rfc822; "))
        .collect();
    assert_eq!(
        finals,
        [
            "failure-only@remote.test",
            "default@remote.test",
            "delay-only@remote.test"
        ]
    );
    assert!(!String::from_utf8_lossy(&bounce.message).contains("never@remote.test"));
    assert_eq!(status.matches("Action: failed").count(), 2);
    assert_eq!(status.matches("Action: delayed").count(), 1);
}

#[test]
fn envid_and_orcpt_are_reported() {
    let bounce = simple(
        "BODY=8BITMIME ENVID=QQ314159+2Bx",
        "NOTIFY=FAILURE ORCPT=rfc822;Bob+2Btag@remote.test",
        ORIGINAL,
    );
    let status = status_text(&bounce);
    assert!(
        has_line(&status, "Original-Envelope-Id: QQ314159+x"),
        "{status}"
    );
    assert!(
        has_line(&status, "Original-Recipient: rfc822; Bob+tag@remote.test"),
        "{status}"
    );
    // Per-recipient fields follow the per-message ones after a blank line,
    // Original-Recipient first (RFC 3464 §2.3).
    let groups: Vec<&str> = status.trim_end().split("\r\n\r\n").collect();
    assert_eq!(groups.len(), 2, "{status}");
    assert!(groups[0].starts_with("Original-Envelope-Id: "), "{status}");
    assert!(groups[1].starts_with("Original-Recipient: "), "{status}");

    // A caller-supplied original recipient wins over the RCPT parameter.
    let env = envelope(
        "alice@example.org",
        "",
        &[("bob@remote.test", "ORCPT=rfc822;other@remote.test")],
    );
    let mut f = failed("bob@remote.test", BOB_REPLY, Action::Failed);
    f.original = Some("list@example.org".into());
    let status = status_text(&make(&env, ORIGINAL, &[f], false).unwrap());
    assert!(
        has_line(&status, "Original-Recipient: rfc822; list@example.org"),
        "{status}"
    );
}

/// The end of the header section of ORIGINAL.
fn original_headers() -> &'static [u8] {
    let at = ORIGINAL.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &ORIGINAL[..at + 2]
}

#[test]
fn small_7bit_message_is_returned_whole() {
    let bounce = simple("RET=FULL", "", ORIGINAL);
    let msg = parse(&bounce);
    let part = parts(&msg)[2];
    assert_eq!(ctype(part), "message/rfc822");
    let inner = part.message().unwrap();
    assert_eq!(inner.subject(), Some("quarterly numbers"));
    assert!(
        bounce
            .message
            .windows(ORIGINAL.len())
            .any(|w| w == ORIGINAL),
        "original not returned verbatim"
    );
}

#[test]
fn ret_hdrs_returns_only_the_header_section() {
    for (params, policy) in [("RET=HDRS", false), ("", true), ("RET=FULL", true)] {
        let env = envelope("alice@example.org", params, &[("bob@remote.test", "")]);
        let f = [failed("bob@remote.test", BOB_REPLY, Action::Failed)];
        let bounce = make(&env, ORIGINAL, &f, policy).unwrap();
        let msg = parse(&bounce);
        let part = parts(&msg)[2];
        assert_eq!(ctype(part), "text/rfc822-headers", "{params} {policy}");
        assert_eq!(part.contents(), original_headers());
        let text = String::from_utf8_lossy(&bounce.message);
        assert!(!text.contains("secret body line"), "{params} {policy}");
        assert!(
            parts(&msg)[0]
                .text_contents()
                .unwrap()
                .contains("headers of your message")
        );
    }
}

#[test]
fn large_messages_return_headers_only() {
    let mut body = ORIGINAL.to_vec();
    while body.len() <= FULL_RETURN_LIMIT {
        body.extend_from_slice(b"padding padding padding padding padding padding\r\n");
    }
    let bounce = simple("RET=FULL", "", &body);
    let msg = parse(&bounce);
    assert_eq!(ctype(parts(&msg)[2]), "text/rfc822-headers");
    assert!(bounce.message.len() < FULL_RETURN_LIMIT);
}

#[test]
fn eight_bit_original_never_makes_an_8bit_bounce() {
    let body = b"Received: from x\r\nSubject: caf\xc3\xa9 \xe2\x82\xac\r\nX-Raw: \xff\xfe\r\n\r\nbinary \x80\x81\r\n";
    let bounce = simple("BODY=8BITMIME", "", body);
    assert!(
        bounce.message.is_ascii(),
        "{}",
        String::from_utf8_lossy(&bounce.message)
    );
    let msg = parse(&bounce);
    let part = parts(&msg)[2];
    assert_eq!(ctype(part), "text/rfc822-headers");
    assert_eq!(part.content_transfer_encoding(), Some("quoted-printable"));
    let headers = part.text_contents().unwrap();
    assert!(
        headers.contains("Subject: caf\u{e9} \u{20ac}\r\n"),
        "{headers:?}"
    );
    assert!(!String::from_utf8_lossy(&bounce.message).contains("binary"));

    // UTF-8 headers alone (SMTPUTF8) are decoded with their charset.
    let body = "Received: from x\r\nFrom: J\u{f6}rg <j\u{f6}rg@b\u{fc}cher.test>\r\n\r\nhi\r\n";
    let bounce = simple("", "", body.as_bytes());
    assert!(bounce.message.is_ascii());
    let msg = parse(&bounce);
    let part = parts(&msg)[2];
    assert_eq!(
        part.content_type().unwrap().attribute("charset"),
        Some("utf-8")
    );
    let headers = &body[..body.find("\r\n\r\n").unwrap() + 2];
    assert_eq!(part.text_contents(), Some(headers));
}

#[test]
fn non_ascii_replies_and_addresses_stay_readable_and_7bit() {
    let env = envelope(
        "alice@example.org",
        "",
        &[("j\u{f6}rg@b\u{fc}cher.test", "")],
    );
    let reply = "550 5.1.1 Benutzer unbekannt: Gr\u{fc}\u{df}e";
    let f = [failed("j\u{f6}rg@b\u{fc}cher.test", reply, Action::Failed)];
    let bounce = make(&env, ORIGINAL, &f, false).unwrap();
    assert!(bounce.message.is_ascii());
    let status = status_text(&bounce);
    assert!(
        has_line(
            &status,
            "Final-Recipient: utf-8; j\\x{F6}rg@b\\x{FC}cher.test"
        ),
        "{status}"
    );
    assert!(
        has_line(
            &status,
            "Diagnostic-Code: smtp; 550 5.1.1 Benutzer unbekannt: Gr??e"
        ),
        "{status}"
    );
    let msg = parse(&bounce);
    let human = parts(&msg)[0].text_contents().unwrap();
    assert!(human.contains(reply), "{human}");
    assert!(human.contains("<j\u{f6}rg@b\u{fc}cher.test>"), "{human}");
}

#[test]
fn long_replies_are_folded_not_truncated() {
    let words: Vec<String> = (0..60).map(|i| format!("w{i}")).collect();
    let reply = format!("550 5.7.1 {}", words.join(" "));
    let env = envelope("a@b.test", "", &[("bob@remote.test", "")]);
    let f = [failed("bob@remote.test", &reply, Action::Failed)];
    let bounce = make(&env, ORIGINAL, &f, false).unwrap();
    let msg = parse(&bounce);
    let raw = std::str::from_utf8(parts(&msg)[1].contents()).unwrap();
    assert!(raw.split("\r\n").all(|l| l.len() <= 78), "{raw}");
    assert!(raw.contains("\r\n w"), "not folded: {raw}");
    let status = status_text(&bounce);
    assert!(
        has_line(&status, &format!("Diagnostic-Code: smtp; {reply}")),
        "{status}"
    );
}

#[test]
fn delay_notice_says_so_and_carries_headers_only() {
    let env = envelope("alice@example.org", "RET=FULL", &[("bob@remote.test", "")]);
    let f = [failed(
        "bob@remote.test",
        "451 4.4.1 Connection refused",
        Action::Delayed,
    )];
    let bounce = make(&env, ORIGINAL, &f, false).unwrap();
    let msg = parse(&bounce);
    assert_eq!(msg.subject(), Some("Delayed Mail (still being retried)"));
    assert_eq!(ctype(parts(&msg)[2]), "text/rfc822-headers");
    let status = status_text(&bounce);
    assert!(has_line(&status, "Action: delayed"), "{status}");
    assert!(has_line(&status, "Status: 4.4.1"), "{status}");
}

#[test]
fn our_own_diagnostics_are_not_labelled_smtp() {
    let env = envelope("a@b.test", "", &[("alice@example.test", "")]);
    let mut f = failed(
        "alice@example.test",
        "550 5.1.1 alice: no such user here",
        Action::Failed,
    );
    f.remote_mta = None;
    let status = status_text(&make(&env, ORIGINAL, &[f], false).unwrap());
    assert!(!status.contains("Remote-MTA"), "{status}");
    assert!(
        has_line(
            &status,
            "Diagnostic-Code: X-Sluice; 550 5.1.1 alice: no such user here"
        ),
        "{status}"
    );
}

#[test]
fn boundary_avoids_every_candidate_the_content_holds() {
    let env = envelope("a@b.test", "", &[]);
    let now = UNIX_EPOCH + Duration::from_secs(NOW_SECS);
    let nanos = Duration::from_secs(NOW_SECS).as_nanos() as u64;
    // The next 200 candidates, all present in the content.
    let first = SERIAL.load(Ordering::Relaxed);
    let mut content = String::new();
    for n in first..first + 200 {
        content.push_str(&format!("=_sluice_{}_{nanos:x}_{n}\r\n", env.id));
    }
    let chosen = boundary(&env, now, &[b"text", content.as_bytes()]);
    assert!(!content.contains(&chosen), "{chosen}");
    assert!(chosen.len() <= 70, "{chosen}");
}

#[test]
fn two_bounces_get_distinct_message_ids() {
    let a = parse(&simple("", "", ORIGINAL))
        .message_id()
        .unwrap()
        .to_owned();
    let b = parse(&simple("", "", ORIGINAL))
        .message_id()
        .unwrap()
        .to_owned();
    assert_ne!(a, b);
}
