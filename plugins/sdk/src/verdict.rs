/// What a hook decides about the current stage (ABI v1 verdict values).
///
/// REJECT, TEMPFAIL and DISCONNECT use the reply chosen with
/// [`Ctx::set_reply`](crate::Ctx::set_reply) when its class matches, else the
/// host's default reply; [`Ctx::reject`](crate::Ctx::reject) and friends set
/// both at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Verdict {
    /// Go on with the next plugin; the stage is accepted after the last.
    Continue = 0,
    /// Accept this stage; later plugins are skipped for this stage.
    Accept = 1,
    /// Refuse permanently (5xx; `550 5.7.1 Rejected by policy` by default).
    Reject = 2,
    /// Refuse temporarily (4xx; `451 4.7.1 Try again later` by default).
    Tempfail = 3,
    /// Answer `421` and close the connection.
    Disconnect = 4,
    /// Answer 250 at end of data, then drop the message. Given earlier, it
    /// ends that stage like [`Accept`](Self::Accept) and applies to the
    /// message when it comes (from connect or HELO: to every message of the
    /// connection).
    Discard = 5,
    /// Answer 250 at end of data, then hold the message in the queue; given
    /// earlier, as for [`Discard`](Self::Discard).
    Quarantine = 6,
}

impl Verdict {
    /// The value a hook export returns for this verdict.
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The verdict for an ABI value, if it is one.
    pub const fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            0 => Self::Continue,
            1 => Self::Accept,
            2 => Self::Reject,
            3 => Self::Tempfail,
            4 => Self::Disconnect,
            5 => Self::Discard,
            6 => Self::Quarantine,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Verdict;

    #[test]
    fn codes_match_the_abi_table_and_round_trip() {
        let table = [
            (Verdict::Continue, 0),
            (Verdict::Accept, 1),
            (Verdict::Reject, 2),
            (Verdict::Tempfail, 3),
            (Verdict::Disconnect, 4),
            (Verdict::Discard, 5),
            (Verdict::Quarantine, 6),
        ];
        for (verdict, code) in table {
            assert_eq!(verdict.code(), code);
            assert_eq!(Verdict::from_code(code), Some(verdict));
        }
        assert_eq!(Verdict::from_code(7), None);
        assert_eq!(Verdict::from_code(-1), None);
    }
}
