//! Queue ids: 64-bit, time-ordered, unique across restarts and clock steps.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Low bits of an id that count within one millisecond. 2^16 ids per
/// millisecond before the generator runs ahead of the clock (which is harmless:
/// ids only need to be unique and roughly time-ordered).
const COUNTER_BITS: u32 = 16;

/// Crockford's base32 alphabet: no I, L, O, U, so an id read aloud or typed
/// from a log line survives the usual confusions.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Number of characters of the text form: 13 × 5 bits ≥ 64 bits.
pub const QUEUE_ID_LEN: usize = 13;

/// A message's queue id, as shown in `250 2.0.0 Ok: queued as <id>`, the
/// `Received:` header and the logs.
///
/// The value is `(unix_ms << 16) | counter`, so ids sort by arrival. Its text
/// form is always 13 characters of Crockford base32 (e.g. `0CJ5N3R8G2K00`)
/// and sorts the same way as the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(pub u64);

impl QueueId {
    /// The id's raw value.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The text form, on the stack: for a caller that writes the id where
    /// it goes, without a string of its own.
    pub fn text(self) -> QueueIdText {
        let mut out = [0u8; QUEUE_ID_LEN];
        let mut v = self.0;
        for slot in out.iter_mut().rev() {
            *slot = ALPHABET[(v & 31) as usize];
            v >>= 5;
        }
        QueueIdText(out)
    }
}

/// A queue id's text ([`QueueId::text`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueIdText([u8; QUEUE_ID_LEN]);

impl QueueIdText {
    /// The 13 characters, as `Display` writes them.
    pub fn as_str(&self) -> &str {
        // Every byte comes from ALPHABET, which is ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// The text was not a 13-character base32 queue id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a queue id (expected 13 characters of Crockford base32)")]
pub struct ParseQueueIdError;

impl FromStr for QueueId {
    type Err = ParseQueueIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != QUEUE_ID_LEN {
            return Err(ParseQueueIdError);
        }
        let mut v: u64 = 0;
        for (i, c) in s.bytes().enumerate() {
            let digit = match c.to_ascii_uppercase() {
                // Crockford decoding folds the look-alikes.
                b'O' => 0,
                b'I' | b'L' => 1,
                c => ALPHABET
                    .iter()
                    .position(|&a| a == c)
                    .ok_or(ParseQueueIdError)? as u64,
            };
            // 65 bits of text for 64 bits of value: the first digit carries
            // only the top 4 bits.
            if i == 0 && digit > 15 {
                return Err(ParseQueueIdError);
            }
            v = (v << 5) | digit;
        }
        Ok(QueueId(v))
    }
}

/// Thread-safe generator: `next = max(now_ms << 16, last + 1)`.
///
/// Taking the maximum with `last + 1` keeps ids strictly increasing when the
/// clock steps backwards; seeding `last` with the largest id found on disk (see
/// recovery) keeps them unique across restarts even if the clock is behind.
#[derive(Debug)]
pub(crate) struct IdGenerator {
    last: AtomicU64,
}

impl IdGenerator {
    pub(crate) fn new(floor: u64) -> Self {
        IdGenerator {
            last: AtomicU64::new(floor),
        }
    }

    pub(crate) fn next(&self) -> QueueId {
        let now = now_unix_ms() << COUNTER_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return QueueId(next),
                Err(seen) => last = seen,
            }
        }
    }

    /// The largest id issued so far (persisted in each new segment's header).
    pub(crate) fn high_water(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    /// Raises the floor (ids seen on disk must never be issued again).
    pub(crate) fn observe(&self, id: u64) {
        self.last.fetch_max(id, Ordering::Relaxed);
    }
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn text_form_round_trips_and_sorts(a: u64, b: u64) {
            let (ta, tb) = (QueueId(a).to_string(), QueueId(b).to_string());
            prop_assert_eq!(ta.len(), QUEUE_ID_LEN);
            prop_assert_eq!(ta.parse::<QueueId>(), Ok(QueueId(a)));
            prop_assert_eq!(ta.to_ascii_lowercase().parse::<QueueId>(), Ok(QueueId(a)));
            prop_assert_eq!(ta.cmp(&tb), a.cmp(&b));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,20}") {
            let _ = s.parse::<QueueId>();
        }
    }

    #[test]
    fn rejects_overflowing_and_malformed_text() {
        assert_eq!("G000000000000".parse::<QueueId>(), Err(ParseQueueIdError));
        assert_eq!("FZZZZZZZZZZZZ".parse::<QueueId>(), Ok(QueueId(u64::MAX)));
        assert!("000000000000".parse::<QueueId>().is_err());
        assert!("0000000000000U".parse::<QueueId>().is_err());
        assert!("000000000000U".parse::<QueueId>().is_err());
    }

    #[test]
    fn ids_stay_above_a_floor_from_the_future() {
        // A floor far ahead of the clock (a clock that stepped back by a day).
        let floor = (now_unix_ms() + 86_400_000) << COUNTER_BITS;
        let ids = IdGenerator::new(floor);
        let a = ids.next();
        let b = ids.next();
        assert_eq!(a.0, floor + 1);
        assert_eq!(b.0, floor + 2);
    }

    #[test]
    fn concurrent_ids_are_distinct() {
        let ids = std::sync::Arc::new(IdGenerator::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let ids = ids.clone();
                std::thread::spawn(move || (0..5000).map(|_| ids.next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<QueueId> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
