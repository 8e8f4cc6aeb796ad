//! What happened to one recipient in one delivery attempt.

/// The result of one attempt for one recipient. The text is the reply to
/// quote in logs and bounces: the next hop's own reply when it gave one,
/// after the name of the host that said it, as Postfix writes it
/// (`mx.remote.test[192.0.2.1]:25 said: 550 5.1.1 <bob@remote.test>: no such
/// user`, see [`remote_reply`]); else our own description in the form of a
/// reply (`451 4.4.1 Connection refused by 127.0.0.1:2626`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the next hop, or written to the mailbox: final.
    Delivered { reply: String },
    /// Failed for now: try again later.
    Deferred { reply: String },
    /// Failed for good: the reverse-path gets a bounce.
    Failed { reply: String },
}

impl Outcome {
    pub fn reply(&self) -> &str {
        match self {
            Outcome::Delivered { reply }
            | Outcome::Deferred { reply }
            | Outcome::Failed { reply } => reply,
        }
    }
}

/// The text of an outcome whose reply came from the next hop `host`
/// (`name[ip]:port`). The host is part of the text because the text is what
/// the spool journals, and a bounce built days later must still name the
/// server that refused the message (RFC 3464 `Remote-MTA`).
pub fn remote_reply(host: &str, reply: &str) -> String {
    format!("{host} said: {reply}")
}

/// Splits an outcome's text into the host that gave the reply (its DNS name,
/// without address and port) and the reply itself; `None` when the reply is
/// our own.
pub fn split_remote_reply(text: &str) -> (Option<&str>, &str) {
    match text.split_once(" said: ") {
        Some((host, reply)) if !host.is_empty() && !host.contains(' ') => {
            // `name[ip]:port` → `name`; an address literal `[ip]:port` → `[ip]`.
            let name = match host.find(']') {
                Some(end) if host.starts_with('[') => &host[..=end],
                _ => host.split(['[', ':']).next().unwrap_or(host),
            };
            (Some(name), reply)
        }
        _ => (None, text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_replies_keep_the_host_that_said_them() {
        let text = remote_reply(
            "mx1.remote.test[192.0.2.1]:25",
            "550 5.1.1 <b@remote.test>: no such user",
        );
        assert_eq!(
            text,
            "mx1.remote.test[192.0.2.1]:25 said: 550 5.1.1 <b@remote.test>: no such user"
        );
        assert_eq!(
            split_remote_reply(&text),
            (
                Some("mx1.remote.test"),
                "550 5.1.1 <b@remote.test>: no such user"
            )
        );
        // Our own words have no host, even when they quote someone.
        let own = "451 4.4.7 message expired after 5 days; last error: x said: 451 busy";
        assert_eq!(split_remote_reply(own), (None, own));
        assert_eq!(
            split_remote_reply("451 4.4.1 Connection refused"),
            (None, "451 4.4.1 Connection refused")
        );
    }
}
