//! `sluice queue …`: the operator's view of the spool.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_spool::{RecipientState, Spool};

/// Prints the queued messages, oldest first: id, age, size, sender, and each
/// recipient with its state. Works on a live spool (it takes no lock and
/// ignores an append in progress) as well as on a stopped one.
pub fn list(dir: &Path, out: &mut impl Write) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{}: no spool directory here", dir.display()));
    }
    let (spool, _report) = Spool::open_read_only(dir)
        .map_err(|e| format!("cannot read the spool in {}: {e}", dir.display()))?;
    let mut messages = spool
        .messages()
        .map_err(|e| format!("cannot list the queue: {e}"))?;
    messages.sort_by_key(|m| (m.arrival_unix_ms, m.id));
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let write = |out: &mut dyn Write, text: String| {
        out.write_all(text.as_bytes()).map_err(|e| e.to_string())
    };
    for m in &messages {
        let sender = if m.reverse_path.is_empty() {
            "<>".to_string()
        } else {
            format!("<{}>", m.reverse_path)
        };
        let held = if m.held { "  (held)" } else { "" };
        write(
            out,
            format!(
                "{}  {:>6}  {:>9}  {sender}{held}\n",
                m.id,
                age(now_ms.saturating_sub(m.arrival_unix_ms)),
                m.size
            ),
        )?;
        for r in &m.recipients {
            write(out, format!("    <{}>  {}\n", r.address, state(&r.state)))?;
        }
    }
    let total: u64 = messages.iter().map(|m| m.size).sum();
    write(
        out,
        format!("-- {} message(s), {} bytes\n", messages.len(), total),
    )
}

fn state(state: &RecipientState) -> String {
    match state {
        RecipientState::Pending => "queued".into(),
        RecipientState::Delivered => "delivered".into(),
        RecipientState::Failed { reply } => format!("failed: {reply}"),
        RecipientState::Deferred {
            attempts, reply, ..
        } => format!("deferred after {attempts} attempt(s): {reply}"),
    }
}

/// `45s`, `12m`, `3h`, `2d`: how long a message has been queued.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_spool::{Envelope, Recipient, SpoolConfig};

    #[test]
    fn lists_a_queued_message_with_its_recipients() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        let handle = spool.handle();
        let id = handle.new_id();
        let envelope = Envelope {
            id,
            reverse_path: "alice@example.org".into(),
            mail_params: String::new(),
            recipients: vec![
                Recipient {
                    address: "bob@example.test".into(),
                    params: String::new(),
                },
                Recipient {
                    address: "carol@example.test".into(),
                    params: String::new(),
                },
            ],
            arrival_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
            client_ip: "192.0.2.1".parse().unwrap(),
            helo: "client.example".into(),
            body_type: 0,
            smtputf8: false,
        };
        handle
            .submit_wait(envelope, b"Subject: x\r\n\r\nhello\r\n".to_vec())
            .unwrap();
        let mut out = Vec::new();
        list(dir.path(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let first = format!("{id}  {:>6}  {:>9}  <alice@example.org>\n", "0s", 21);
        assert!(text.starts_with(&first), "{text}");
        assert!(text.contains("    <bob@example.test>  queued\n"), "{text}");
        assert!(
            text.contains("    <carol@example.test>  queued\n"),
            "{text}"
        );
        assert!(text.ends_with("-- 1 message(s), 21 bytes\n"), "{text}");
        spool.shutdown();
    }

    #[test]
    fn ages_read_like_an_operator_would_say_them() {
        assert_eq!(age(59_999), "59s");
        assert_eq!(age(60_000), "1m");
        assert_eq!(age(7_200_000), "2h");
        assert_eq!(age(3 * 86_400_000), "3d");
    }

    #[test]
    fn a_missing_directory_is_explained() {
        let e = list(Path::new("/nonexistent/spool"), &mut Vec::new()).unwrap_err();
        assert!(e.contains("no spool directory"), "{e}");
    }
}
