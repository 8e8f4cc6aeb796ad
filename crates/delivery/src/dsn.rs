//! Delivery status notifications (RFC 3464 bounces and delay notices, with
//! the RFC 3461 parameters that steer them).
//!
//! [`bounce`] builds the whole message; the scheduler submits it to the
//! spool with the null reverse-path `<>` and [`Bounce::recipient`] as its
//! one forward-path, so that a bounce is never itself bounced.
//!
//! # Who gets one
//!
//! - Always the envelope's reverse-path, never an address from the headers
//!   (`From:`, `Reply-To:`, `Sender:`): those are the author's claims, the
//!   reverse-path is where the sender asked for notices to go.
//! - Nobody when the reverse-path is null (`<>`): the message is itself a
//!   notification (RFC 5321 §6.1, RFC 3461 §6.2).
//! - Per recipient, RCPT's `NOTIFY` decides: `NEVER` reports nothing for it,
//!   a list without `FAILURE` (or `DELAY`) reports no failure (or delay).
//!   Without `NOTIFY`, both are reported (RFC 3461 §4.1 leaves the default
//!   to us). No recipient left to report: no message.
//!
//! # What is returned of the original
//!
//! The whole message (`message/rfc822`) only when all of these hold; else
//! its header section (`text/rfc822-headers`):
//!
//! - at least one recipient failed (delay notices carry headers only: the
//!   message is still on its way, the sender needs to recognise it, not
//!   read it again);
//! - neither `RET=HDRS` nor [`BounceInput::ret_headers_only`];
//! - the message is at most [`FULL_RETURN_LIMIT`] octets (RFC 3461 §4.3
//!   lets an MTA return headers only when the whole is too large; a 20 MB
//!   attachment bounced back to a mobile sender helps nobody);
//! - the message is 7-bit clean: no octet above 127, no NUL, no line over
//!   998 octets. `message/rfc822` may not be quoted-printable or base64
//!   (RFC 2046 §5.2.1), so an 8-bit original would make the bounce 8-bit
//!   and it could no longer go through a hop without 8BITMIME.
//!
//! The header section, and the human-readable part, are 7bit when they can
//! be and quoted-printable otherwise (both are `text/*`, where that is
//! allowed). So the notification is always a 7-bit message and needs no
//! BODY=8BITMIME; its only possible non-ASCII is the `To:` header when the
//! reverse-path itself is non-ASCII, and then the bounce must be sent with
//! SMTPUTF8 anyway, as the original was.

mod encode;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_smtp::date::rfc5322_date;
use sluice_smtp::{ForwardPath, Notify, Path, Reply, Ret, ReversePath};
use sluice_spool::{Entry, Reason};

use encode::{
    ascii_text, header_section, is_7bit_clean, push_address_field, push_folded, text_part,
};

/// Largest original returned whole; past it the bounce carries its headers.
/// Postfix's `bounce_size_limit` is 50 000 octets for the same reason.
pub const FULL_RETURN_LIMIT: usize = 64 * 1024;

/// What happened to a reported recipient (RFC 3464 §2.3.3 action-value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Given up for good.
    Failed,
    /// Not delivered yet; still being retried.
    Delayed,
}

/// One recipient to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecipient {
    /// Its place in the entry's `envelope.recipients`, where its
    /// forward-path and RCPT parameters (NOTIFY, ORCPT) are.
    pub index: u32,
    /// The original recipient (decoded ORCPT address, type `rfc822`) when
    /// the caller knows it; else the ORCPT of the envelope's RCPT is used.
    pub original: Option<String>,
    /// What decided it: the reply (the next hop's own, or our description in
    /// that form), the host that gave it, and the stage.
    pub reason: Reason,
    pub action: Action,
}

/// Everything one notification is made from.
#[derive(Debug)]
pub struct BounceInput<'a> {
    /// Our hostname: `Reporting-MTA`, and the domain of `From:` and
    /// `Message-ID:`.
    pub reporting_mta: &'a str,
    /// The message's envelope and the facts of its arrival.
    pub entry: &'a Entry,
    /// The stored message (starting with our `Received:`).
    pub body: &'a [u8],
    pub failed: &'a [FailedRecipient],
    pub now: SystemTime,
    /// Return the headers only, whatever `RET` says (operator policy, or the
    /// caller's own reading of `RET=HDRS`, which is honoured anyway).
    pub ret_headers_only: bool,
}

/// A notification to queue: from `<>`, to [`recipient`](Self::recipient).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    /// The envelope reverse-path of the original (never its `From:`).
    pub recipient: Path,
    /// The complete message, CRLF line endings, headers first.
    pub message: Vec<u8>,
}

/// One recipient that will appear in the notification.
struct Reported<'a> {
    failed: &'a FailedRecipient,
    /// The forward-path as the envelope has it, without brackets.
    address: String,
    /// (address type, address).
    original: Option<(String, String)>,
    status: String,
}

/// Builds the notification for `input.failed`, or `None` when none may be
/// sent: the reverse-path is `<>`, or NOTIFY leaves nobody to report.
pub fn bounce(input: &BounceInput<'_>) -> Option<Bounce> {
    let entry = input.entry;
    let ReversePath::Path(sender) = &entry.envelope.reverse_path else {
        return None;
    };
    let reported: Vec<Reported<'_>> = input
        .failed
        .iter()
        .filter_map(|f| reported(f, entry))
        .collect();
    if reported.is_empty() {
        return None;
    }
    let mail = &entry.envelope.params;
    let any_failed = reported.iter().any(|r| r.failed.action == Action::Failed);
    let want_full = any_failed && !input.ret_headers_only && mail.ret != Some(Ret::Hdrs);
    let full = want_full && input.body.len() <= FULL_RETURN_LIMIT && is_7bit_clean(input.body);

    let host = ascii_text(input.reporting_mta);
    let human = text_part(&human_text(&host, &reported, full));
    let status = delivery_status(input, &host, mail.envid.as_deref(), &reported);
    let original = if full {
        let mut part = b"Content-Description: Undelivered message\r\n\
                         Content-Type: message/rfc822\r\n\r\n"
            .to_vec();
        part.extend_from_slice(input.body);
        part
    } else {
        let mut part = b"Content-Description: Undelivered message headers\r\n".to_vec();
        part.extend_from_slice(&header_section(input.body));
        part
    };
    let parts = [human.as_slice(), status.as_slice(), original.as_slice()];
    let boundary = boundary(entry, input.now, &parts);

    let subject = if any_failed {
        "Undelivered Mail Returned to Sender"
    } else {
        "Delayed Mail (still being retried)"
    };
    let reverse_path = sender
        .mailbox
        .to_string()
        .replace(|c: char| c.is_control(), "?");
    let mut message = String::with_capacity(1024);
    // Writing to a String cannot fail.
    let _ = write!(
        message,
        "Date: {}\r\n\
         From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
         To: <{reverse_path}>\r\n\
         Subject: {subject}\r\n\
         Message-ID: <{}@{host}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n",
        rfc5322_date(input.now),
        message_id_left(entry, input.now),
    );
    let mut message = message.into_bytes();
    let total: usize = parts.iter().map(|p| p.len() + boundary.len() + 8).sum();
    message.reserve(total + boundary.len() + 8);
    for part in parts {
        message.extend_from_slice(b"\r\n--");
        message.extend_from_slice(boundary.as_bytes());
        message.extend_from_slice(b"\r\n");
        message.extend_from_slice(part);
    }
    message.extend_from_slice(b"\r\n--");
    message.extend_from_slice(boundary.as_bytes());
    message.extend_from_slice(b"--\r\n");
    Some(Bounce {
        recipient: Path {
            source_route: Vec::new(),
            mailbox: sender.mailbox.clone(),
        },
        message,
    })
}

/// Applies NOTIFY and gathers what the report says about one recipient.
fn reported<'a>(failed: &'a FailedRecipient, entry: &Entry) -> Option<Reported<'a>> {
    let rcpt = entry.envelope.recipients.get(failed.index as usize)?;
    let params = rcpt.params.clone();
    let address = match &rcpt.forward_path {
        ForwardPath::Postmaster => "postmaster".to_owned(),
        ForwardPath::Path(p) => p.mailbox.text(),
    };
    let wanted = match params.notify {
        Some(Notify::Never) => false,
        Some(Notify::On { failure, delay, .. }) => match failed.action {
            Action::Failed => failure,
            Action::Delayed => delay,
        },
        None => true,
    };
    if !wanted {
        return None;
    }
    let original = match &failed.original {
        Some(address) => Some(("rfc822".to_owned(), address.clone())),
        None => params.orcpt.map(|o| (o.addr_type, o.address)),
    };
    Some(Reported {
        failed,
        address,
        original,
        status: status_code(&failed.reason.reply, failed.action),
    })
}

/// RFC 3464 `Status`: the reply's enhanced code (RFC 3463) when it has one,
/// else the class its basic code implies (`4.0.0`, `5.0.0`), else the class
/// the action implies. A 4.x.y code stays as it is on a failure: it says
/// that the condition was temporary but outlasted our retries, which is
/// what RFC 3463 describes persistent transient failures to mean in a
/// failure report.
fn status_code(reply: &Reply, action: Action) -> String {
    let fallback = match action {
        Action::Failed => "5.0.0",
        Action::Delayed => "4.0.0",
    };
    match (reply.enhanced(), reply.code() / 100) {
        (Some(e), 4 | 5) => e.to_string(),
        (None, 4) => "4.0.0".to_owned(),
        (None, 5) => "5.0.0".to_owned(),
        _ => fallback.to_owned(),
    }
}

/// The text/plain part: what happened, in words, for the sender.
fn human_text(host: &str, reported: &[Reported<'_>], full: bool) -> String {
    let mut text = format!("This is the mail system at host {host}.\r\n\r\n");
    let (failed, delayed): (Vec<&Reported<'_>>, Vec<&Reported<'_>>) = reported
        .iter()
        .partition(|r| r.failed.action == Action::Failed);
    if !failed.is_empty() {
        text.push_str(
            "Your message could not be delivered to one or more recipients.\r\n\
             This is a permanent error; the delivery attempts have stopped.\r\n\r\n",
        );
        for r in &failed {
            recipient_paragraph(&mut text, r);
        }
    }
    if !delayed.is_empty() {
        text.push_str(
            "Your message has not yet been delivered to the recipients below.\r\n\
             Delivery will be tried again; you do not need to send it again.\r\n\r\n",
        );
        for r in &delayed {
            recipient_paragraph(&mut text, r);
        }
    }
    text.push_str(if full {
        "Your message is attached below.\r\n"
    } else {
        "The headers of your message are attached below.\r\n"
    });
    text
}

fn recipient_paragraph(text: &mut String, r: &Reported<'_>) {
    let reason = &r.failed.reason;
    let clean = |s: &str| s.replace(|c: char| c.is_control(), " ");
    let reply = reason.reply.to_string();
    let _ = match &reason.remote_mta {
        Some(mta) => write!(
            text,
            "<{}>: host {} said:\r\n    {}\r\n\r\n",
            clean(&r.address),
            clean(&mta.name),
            clean(&reply)
        ),
        None => write!(
            text,
            "<{}>:\r\n    {}\r\n\r\n",
            clean(&r.address),
            clean(&reply)
        ),
    };
}

/// The message/delivery-status part (RFC 3464 §2), fields in the order of
/// its grammar. Pure ASCII: see [`encode`] for how other text is carried.
fn delivery_status(
    input: &BounceInput<'_>,
    host: &str,
    envid: Option<&str>,
    reported: &[Reported<'_>],
) -> Vec<u8> {
    let entry = input.entry;
    let mut out = b"Content-Description: Delivery report\r\n\
                    Content-Type: message/delivery-status\r\n\r\n"
        .to_vec();
    if let Some(envid) = envid {
        // xtext-decoded, and limited to printable ASCII by the parser.
        push_folded(&mut out, "Original-Envelope-Id", &ascii_text(envid));
    }
    push_folded(&mut out, "Reporting-MTA", &format!("dns; {host}"));
    push_folded(
        &mut out,
        "Received-From-MTA",
        &format!("dns; {} ([{}])", ascii_text(&entry.helo), entry.client_ip),
    );
    let arrival = UNIX_EPOCH + Duration::from_millis(entry.arrival_unix_ms);
    push_folded(&mut out, "Arrival-Date", &rfc5322_date(arrival));
    push_folded(&mut out, "X-Sluice-Queue-ID", &entry.id.to_string());
    for r in reported {
        out.extend_from_slice(b"\r\n");
        let f = r.failed;
        if let Some((addr_type, address)) = &r.original {
            push_address_field(&mut out, "Original-Recipient", addr_type, address);
        }
        push_address_field(&mut out, "Final-Recipient", "rfc822", &r.address);
        let action = match f.action {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
        };
        push_folded(&mut out, "Action", action);
        push_folded(&mut out, "Status", &r.status);
        let reason = &f.reason;
        let diagnostic_type = match &reason.remote_mta {
            Some(mta) => {
                push_folded(
                    &mut out,
                    "Remote-MTA",
                    &format!("dns; {}", ascii_text(&mta.name)),
                );
                "smtp"
            }
            // Our own words, not a reply some SMTP server sent.
            None => "X-Sluice",
        };
        push_folded(
            &mut out,
            "Diagnostic-Code",
            &format!(
                "{diagnostic_type}; {}",
                ascii_text(&reason.reply.to_string())
            ),
        );
    }
    out
}

/// Notifications made by this process, so that two built in the same
/// instant for the same message still get distinct ids and boundaries.
static SERIAL: AtomicU64 = AtomicU64::new(0);

fn message_id_left(entry: &Entry, now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let n = SERIAL.fetch_add(1, Ordering::Relaxed);
    format!("{secs}.{}.{n}.dsn", entry.id)
}

/// A boundary found in none of the parts (RFC 2046 §5.1.1). It starts with
/// `=_`, which quoted-printable text never contains, so in practice only
/// the raw original can collide, and then a new serial is tried: each
/// candidate differs, and finite content can hold only so many.
fn boundary(entry: &Entry, now: SystemTime, parts: &[&[u8]]) -> String {
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    loop {
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let candidate = format!("=_sluice_{}_{nanos:x}_{n}", entry.id);
        let finder = memchr::memmem::Finder::new(candidate.as_bytes());
        if parts.iter().all(|p| finder.find(p).is_none()) {
            return candidate;
        }
    }
}
