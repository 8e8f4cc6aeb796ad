//! Short ASCII text put together on the stack: the numbers, dates and
//! addresses every message writes (reply codes, the `Received:` field, log
//! lines), without the formatting machinery or the heap.

/// At most `N` octets of ASCII; a push past `N` panics (callers size `N`
/// for the longest text they write).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StackText<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> StackText<N> {
    pub(crate) const fn new() -> Self {
        StackText {
            bytes: [0; N],
            len: 0,
        }
    }

    /// `n` in decimal, and nothing else.
    pub(crate) fn decimal(n: u64) -> Self {
        let mut text = Self::new();
        text.number(n, 1);
        text
    }

    pub(crate) fn push(&mut self, piece: &[u8]) {
        self.bytes[self.len..self.len + piece.len()].copy_from_slice(piece);
        self.len += piece.len();
    }

    /// `n` in decimal, zero-padded to `width` digits: written in place,
    /// last digit first.
    pub(crate) fn number(&mut self, mut n: u64, width: usize) {
        let mut digits = 1;
        let mut rest = n / 10;
        while rest > 0 {
            digits += 1;
            rest /= 10;
        }
        let end = self.len + digits.max(width);
        for slot in self.bytes[self.len..end].iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        self.len = end;
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub(crate) fn as_str(&self) -> &str {
        // Every caller pushes ASCII only.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::StackText;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn numbers_are_written_as_format_writes_them(n in any::<u64>(), width in 1usize..20) {
            let alone = StackText::<20>::decimal(n);
            prop_assert_eq!(alone.as_str(), n.to_string());
            let mut padded = StackText::<24>::new();
            padded.push(b"<");
            padded.number(n, width);
            prop_assert_eq!(padded.as_str(), format!("<{n:0width$}"));
        }
    }
}
