//! The stages of an SMTP transaction: one vocabulary for both sides.
//!
//! The server's filters are called at `Connect`, `Hello`, `Mail`, `Rcpt`,
//! `Data` and `EndOfData`; the client's replies come at `Connect` (the
//! connection itself), `Greeting`, `Hello`, `Mail`, `Rcpt`, `Data` and
//! `EndOfData`. A delivery outcome says at which stage the next hop
//! answered, and a bounce can say so too.

use std::fmt;

/// Where in a session something happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// The TCP connection, before anything is said.
    Connect,
    /// The server's `220` (or its refusal).
    Greeting,
    /// HELO, EHLO or LHLO.
    Hello,
    /// AUTH (RFC 4954): the server checking a client's login, or a client
    /// logging in to its next hop.
    Auth,
    /// MAIL FROM.
    Mail,
    /// One RCPT TO.
    Rcpt,
    /// DATA or the first BDAT, before any content.
    Data,
    /// The content is complete: the final dot, or BDAT LAST.
    EndOfData,
}

impl Stage {
    /// Every stage, in the order a session goes through them.
    pub const ALL: [Stage; 8] = [
        Stage::Connect,
        Stage::Greeting,
        Stage::Hello,
        Stage::Auth,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::EndOfData,
    ];

    /// A short lower-case name, for logs, metrics labels and plugin hooks.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting",
            Stage::Hello => "helo",
            Stage::Auth => "auth",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::EndOfData => "end of data",
        }
    }

    /// The stage a [`name`](Self::name) names.
    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_round_trip() {
        for stage in Stage::ALL {
            assert_eq!(Stage::from_name(stage.name()), Some(stage));
        }
        let mut names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
        names.dedup();
        assert_eq!(names.len(), Stage::ALL.len());
        assert_eq!(Stage::from_name("DATA"), None);
    }
}
