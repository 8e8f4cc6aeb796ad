//! The destinations of queued recipients, each kept once.
//!
//! A recipient's destination is found when its message is loaded
//! ([`Transport::destination`](super::Transport::destination) is pure:
//! routing does not change while the server runs) and the recipient keeps
//! its number here rather than its forward-path: four bytes instead of a
//! parsed address, for each of a million queued recipients. An entry lives
//! while some queued recipient uses it.

use super::Destination;
use super::state::DestId;

#[derive(Debug, Default)]
pub(super) struct Destinations {
    ids: foldhash::HashMap<Destination, DestId>,
    /// By number: the destination and how many queued recipients use it;
    /// `None` once unused (its number is in `free`).
    slots: Vec<Option<(Destination, u32)>>,
    free: Vec<DestId>,
}

impl Destinations {
    /// The number of `dest`, counting one more user of it.
    pub(super) fn intern(&mut self, dest: Destination) -> DestId {
        if let Some(&id) = self.ids.get(&dest) {
            if let Some((_, users)) = &mut self.slots[id as usize] {
                *users += 1;
            }
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.slots.push(None);
                // Distinct destinations of queued mail: far below 2^32.
                (self.slots.len() - 1) as DestId
            }
        };
        self.slots[id as usize] = Some((dest.clone(), 1));
        self.ids.insert(dest, id);
        id
    }

    /// One user fewer; the entry goes when none is left.
    pub(super) fn release(&mut self, id: DestId) {
        let Some(slot) = self.slots.get_mut(id as usize) else {
            return;
        };
        if let Some((dest, users)) = slot {
            *users -= 1;
            if *users == 0 {
                self.ids.remove(dest);
                *slot = None;
                self.free.push(id);
            }
        }
    }

    pub(super) fn get(&self, id: DestId) -> Option<&Destination> {
        self.slots
            .get(id as usize)
            .and_then(|s| s.as_ref())
            .map(|(d, _)| d)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    pub(super) fn shrink_to_fit(&mut self) {
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        let end = self.slots.len() as DestId;
        self.free.retain(|&id| id < end);
        self.ids.shrink_to_fit();
        self.slots.shrink_to_fit();
        self.free.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_lives_while_used_and_its_number_is_reused() {
        let mut d = Destinations::default();
        let a = d.intern(Destination::Remote("a.test".into()));
        let b = d.intern(Destination::Local);
        assert_eq!(d.intern(Destination::Remote("a.test".into())), a);
        assert_ne!(a, b);
        d.release(a);
        assert_eq!(d.get(a), Some(&Destination::Remote("a.test".into())));
        d.release(a);
        assert_eq!(d.get(a), None, "no user left");
        assert_eq!(d.len(), 1);
        let c = d.intern(Destination::Lmtp);
        assert_eq!(c, a, "the free number is reused");
        assert_eq!(d.get(b), Some(&Destination::Local));
        d.release(b);
        d.release(c);
        d.shrink_to_fit();
        assert_eq!(d.len(), 0);
        assert_eq!(d.slots.len(), 0);
    }
}
