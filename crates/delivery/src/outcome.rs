//! What happened to one recipient in one delivery attempt.

use sluice_smtp::{EnhancedCode, Reply};
pub use sluice_spool::{Reason, RemoteMta};

/// The result of one attempt for one recipient, with the [`Reason`] that
/// decided it: the next hop's own reply (with the host that gave it and the
/// stage it answered at), or our own words in the form of a reply
/// (`451 4.4.1 Connection refused by 127.0.0.1:2626`). The spool journals the
/// reason as it is, so a bounce built days later names the host and quotes
/// the reply from typed fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the next hop, or written to the mailbox: final.
    Delivered(Reason),
    /// Failed for now: try again later.
    Deferred(Reason),
    /// Failed for good: the reverse-path gets a bounce.
    Failed(Reason),
}

impl Outcome {
    /// An outcome in our own words: `2xx` delivered, `4xx` deferred,
    /// anything else failed.
    pub fn local(code: u16, enhanced: (u8, u16, u16), text: impl Into<String>) -> Outcome {
        let (class, subject, detail) = enhanced;
        Outcome::of(Reason::local(Reply::new(
            code,
            Some(EnhancedCode::new(class, subject, detail)),
            text.into(),
        )))
    }

    /// The outcome a reason's reply code says.
    pub fn of(reason: Reason) -> Outcome {
        match reason.reply.code() / 100 {
            2 => Outcome::Delivered(reason),
            4 => Outcome::Deferred(reason),
            _ => Outcome::Failed(reason),
        }
    }

    pub fn reason(&self) -> &Reason {
        match self {
            Outcome::Delivered(r) | Outcome::Deferred(r) | Outcome::Failed(r) => r,
        }
    }

    pub fn reply(&self) -> &Reply {
        &self.reason().reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_outcomes_follow_the_reply_class() {
        assert!(matches!(
            Outcome::local(250, (2, 0, 0), "ok"),
            Outcome::Delivered(_)
        ));
        let deferred = Outcome::local(451, (4, 4, 1), "Connection refused by [127.0.0.1]:9");
        assert!(matches!(deferred, Outcome::Deferred(_)));
        assert_eq!(deferred.reason().remote_mta, None);
        assert_eq!(
            deferred.reply().to_string(),
            "451 4.4.1 Connection refused by [127.0.0.1]:9"
        );
        assert!(matches!(
            Outcome::local(550, (5, 1, 1), "no"),
            Outcome::Failed(_)
        ));
    }
}
