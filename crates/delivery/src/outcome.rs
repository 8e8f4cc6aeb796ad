//! What happened to one recipient in one delivery attempt.

/// The result of one attempt for one recipient. The text is the reply to
/// quote in logs and bounces: the next hop's own reply when it gave one
/// (`550 5.1.1 <bob@remote.test>: no such user`), else our own description
/// in the same form (`451 4.4.1 Connection refused by 127.0.0.1:2626`).
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
