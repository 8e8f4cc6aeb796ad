//! What hooks change on a connection: the HELO name, notes, scores and the
//! DISCARD/QUARANTINE marks, per connection and per transaction.
//!
//! A stage run on an event loop is abandoned when a hook would wait (a DNS
//! lookup), and its changes are put back before a filter thread runs it
//! again; so the state is snapshotted before every such stage. Every part
//! is shared until written: a snapshot copies pointers, and the first write
//! after one copies what it writes.

use std::collections::HashMap;
use std::sync::Arc;

/// What hooks change (see the module documentation).
#[derive(Debug, Default, Clone)]
pub(crate) struct HookState {
    pub helo: Option<Arc<str>>,
    pub conn_notes: Notes,
    pub tx_notes: Notes,
    /// Scores from connect and HELO count for every transaction.
    pub conn_scores: Scores,
    pub tx_scores: Scores,
    pub conn_marks: Marks,
    pub tx_marks: Marks,
}

/// DISCARD and QUARANTINE given before the end of data: they apply to the
/// message when it comes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marks {
    pub discard: bool,
    pub quarantine: bool,
}

impl HookState {
    pub fn notes(&mut self, scope: i32) -> Option<&mut Notes> {
        match scope {
            0 => Some(&mut self.conn_notes),
            1 => Some(&mut self.tx_notes),
            _ => None,
        }
    }

    /// Every symbol and score so far: the connection's, then the
    /// transaction's.
    pub fn scores(&self) -> impl Iterator<Item = &(String, f64)> {
        self.conn_scores.iter().chain(self.tx_scores.iter())
    }

    pub fn score_total(&self) -> f64 {
        self.scores().map(|(_, s)| s).sum()
    }

    pub fn reset_transaction(&mut self) {
        self.tx_notes = Notes::default();
        self.tx_scores = Scores::default();
        self.tx_marks = Marks::default();
    }
}

/// Scores of one scope, copied on write like the [`Notes`]; `None` while
/// empty.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scores(Option<Arc<Vec<(String, f64)>>>);

impl Scores {
    pub fn iter(&self) -> std::slice::Iter<'_, (String, f64)> {
        self.0.as_deref().map_or(&[][..], Vec::as_slice).iter()
    }

    pub fn extend_from_slice(&mut self, more: &[(String, f64)]) {
        if !more.is_empty() {
            Arc::make_mut(self.0.get_or_insert_default()).extend_from_slice(more);
        }
    }
}

/// Notes of one scope, bounded so that a plugin cannot grow the host's
/// memory without end through them.
///
/// Copied on write: the connection's state is snapshotted before every
/// stage run on an event loop (to be put back if the stage is abandoned),
/// and most stages write no note, so a snapshot shares the map and the
/// first write after one copies it. `None` while empty, so that a new
/// transaction's notes allocate nothing.
#[derive(Debug, Default, Clone)]
pub(crate) struct Notes {
    map: Option<Arc<HashMap<Vec<u8>, Vec<u8>>>>,
    bytes: usize,
}

pub(crate) const MAX_NOTE_KEY: usize = 256;
pub(crate) const MAX_NOTES_BYTES: usize = 256 << 10;

impl Notes {
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.as_deref()?.get(key).map(Vec::as_slice)
    }

    /// Stores the note; false if it would pass the bounds.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> bool {
        if key.len() > MAX_NOTE_KEY {
            return false;
        }
        let old = self.get(key).map_or(0, |v| key.len() + v.len());
        let bytes = self.bytes - old + key.len() + value.len();
        if bytes > MAX_NOTES_BYTES {
            return false;
        }
        self.bytes = bytes;
        Arc::make_mut(self.map.get_or_insert_default()).insert(key.to_vec(), value.to_vec());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_bounded() {
        let mut notes = Notes::default();
        assert!(notes.set(b"k", &[0; 1000]));
        assert!(!notes.set(&[b'x'; MAX_NOTE_KEY + 1], b"v"));
        assert!(!notes.set(b"big", &vec![0; MAX_NOTES_BYTES]));
        // Overwriting frees the old value's share.
        for _ in 0..1000 {
            assert!(notes.set(b"k", &[1; 1000]));
        }
        assert_eq!(notes.get(b"k"), Some(&[1u8; 1000][..]));
    }
}
