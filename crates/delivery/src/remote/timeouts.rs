//! How long the client waits at each step of a session (RFC 5321 §4.5.3.2).

use std::time::Duration;

use sluice_smtp::client::TimeoutClass;

/// The client's waits, one per kind of step. The defaults are RFC 5321's
/// minimums: a client that gives up sooner can cut off a slow server that
/// was about to say yes, and then sends the message again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the TCP connection (RFC 5321 names no minimum; 30 s,
    /// after which the next address is tried).
    pub connect: Duration,
    /// The `220` greeting (§4.5.3.2.1: 5 minutes).
    pub greeting: Duration,
    /// The reply to EHLO/HELO/LHLO, MAIL, RCPT and RSET (§4.5.3.2.2–3:
    /// 5 minutes; the RFC names none for EHLO and RSET, so they get the
    /// same).
    pub command: Duration,
    /// The `354` to DATA (§4.5.3.2.4: 2 minutes).
    pub data_init: Duration,
    /// Each write, of the body and of commands, must make progress within
    /// this (§4.5.3.2.5: 3 minutes).
    pub data_block: Duration,
    /// The reply to the end of data, the final `.` or `BDAT … LAST`
    /// (§4.5.3.2.6: 10 minutes: the server may be filtering or storing).
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            greeting: TimeoutClass::Greeting.rfc5321_minimum(),
            command: TimeoutClass::Mail.rfc5321_minimum(),
            data_init: TimeoutClass::DataInit.rfc5321_minimum(),
            data_block: TimeoutClass::DataBlock.rfc5321_minimum(),
            data_end: TimeoutClass::DataTermination.rfc5321_minimum(),
        }
    }
}

impl Timeouts {
    /// The shortest wait of any class: what a socket can keep for all of
    /// them, waiting again when a class allows longer.
    pub fn shortest_wait(&self) -> Duration {
        [
            self.greeting,
            self.command,
            self.data_init,
            self.data_block,
            self.data_end,
        ]
        .into_iter()
        .min()
        .unwrap_or(self.command)
    }

    /// How long to wait while the session waits in `class`.
    pub fn of(&self, class: TimeoutClass) -> Duration {
        match class {
            TimeoutClass::Greeting => self.greeting,
            TimeoutClass::Hello
            | TimeoutClass::StartTls
            | TimeoutClass::Auth
            | TimeoutClass::Mail
            | TimeoutClass::Rcpt
            | TimeoutClass::Rset
            | TimeoutClass::Quit => self.command,
            TimeoutClass::DataInit => self.data_init,
            TimeoutClass::DataBlock => self.data_block,
            TimeoutClass::DataTermination => self.data_end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_rfc_minimums() {
        let t = Timeouts::default();
        assert_eq!(t.greeting, Duration::from_secs(300));
        assert_eq!(t.command, Duration::from_secs(300));
        assert_eq!(t.data_init, Duration::from_secs(120));
        assert_eq!(t.data_block, Duration::from_secs(180));
        assert_eq!(t.data_end, Duration::from_secs(600));
    }

    #[test]
    fn each_class_gets_its_own_setting() {
        let secs = Duration::from_secs;
        let t = Timeouts {
            connect: secs(9),
            greeting: secs(1),
            command: secs(2),
            data_init: secs(3),
            data_block: secs(4),
            data_end: secs(5),
        };
        assert_eq!(t.of(TimeoutClass::Greeting), secs(1));
        for class in [
            TimeoutClass::Hello,
            TimeoutClass::Mail,
            TimeoutClass::Rcpt,
            TimeoutClass::Rset,
            TimeoutClass::Quit,
        ] {
            assert_eq!(t.of(class), secs(2), "{class:?}");
        }
        assert_eq!(t.of(TimeoutClass::DataInit), secs(3));
        assert_eq!(t.of(TimeoutClass::DataBlock), secs(4));
        assert_eq!(t.of(TimeoutClass::DataTermination), secs(5));
    }
}
