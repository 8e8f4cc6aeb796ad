//! Little-endian, length-prefixed primitives shared by every record payload.
//!
//! The reader never trusts a length: every read is bounds-checked against the
//! remaining input and fails with [`SpoolError::Corrupt`], so decoding any
//! byte string returns an error at worst, never panics or over-allocates.

use crate::SpoolError;

pub(crate) fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A `u32` byte length, then the bytes. Strings longer than 4 GiB cannot occur
/// in an envelope (the SMTP front end limits line lengths); they are cut rather
/// than written with a wrong length.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u32::MAX as usize)];
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], SpoolError> {
        if n > self.buf.len() {
            return Err(SpoolError::Corrupt("field runs past the end of the record"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, SpoolError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, SpoolError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, SpoolError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn str(&mut self) -> Result<String, SpoolError> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| SpoolError::Corrupt("string is not UTF-8"))
    }

    /// A count of items that each take at least `min_item_len` bytes: a
    /// corrupt count cannot make the caller reserve more than the input holds.
    pub(crate) fn count(&mut self, min_item_len: usize) -> Result<usize, SpoolError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_len) > self.remaining() {
            return Err(SpoolError::Corrupt("item count exceeds the record"));
        }
        Ok(n)
    }

    pub(crate) fn finish(&self) -> Result<(), SpoolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(SpoolError::Corrupt("trailing bytes after the last field"))
        }
    }
}
