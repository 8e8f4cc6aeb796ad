//! Giving freed heap memory back to the system.
//!
//! After a big queue drains, the allocator keeps what it freed for the next
//! allocation: glibc's `malloc` returns memory at the top of the heap on its
//! own, but not the holes below, nor its other arenas. `malloc_trim(0)` walks
//! them and gives every free page back. It is cheap enough to call when the
//! queue becomes empty, and pointless more often.
//!
//! # Why the `unsafe` here is sound
//!
//! `malloc_trim` takes a size and no pointer, touches only the allocator's own
//! free lists under the allocator's own locks (it is thread-safe in glibc),
//! and frees nothing that is in use. There is no precondition for the caller
//! to uphold, which is what makes the call below sound. It exists only in
//! glibc: elsewhere this does nothing.
#![allow(unsafe_code)]

/// Gives the heap's free pages back to the system; returns whether any were.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: see the module comment; no arguments but a size.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    #[test]
    fn memory_freed_below_the_top_of_the_heap_goes_back() {
        // Many small blocks, touched, then all but the last freed: the last
        // one pins the top of the heap, so only a trim can give the rest back.
        let mut blocks: Vec<Vec<u8>> = (0..40_000).map(|_| vec![1u8; 1000]).collect();
        let pin = blocks.pop();
        let before = anon_kib();
        drop(blocks);
        assert!(release_free_memory(), "nothing was released");
        let after = anon_kib();
        assert!(
            after + 20_000 < before,
            "anonymous memory {before} KiB → {after} KiB"
        );
        drop(pin);
    }
}
