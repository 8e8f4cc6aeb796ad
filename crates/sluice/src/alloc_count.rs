//! Counts heap allocations, for the per-message budget (`benches/budget.py`).
//! Only in builds with `--features count-allocations`: every allocation
//! then also adds to two counters that all threads share, which is fine for
//! measuring and wrong for serving.
//!
//! The counts are served as `sluice_heap_allocations_total` and
//! `sluice_heap_allocated_bytes_total` on `/metrics`.
//!
//! # Why the `unsafe` here is sound
//!
//! `GlobalAlloc` is an unsafe trait: an implementation promises that what
//! `alloc` returns is valid for the layout asked for, until `dealloc`. Every
//! method below forwards its arguments unchanged to `std::alloc::System`,
//! which keeps exactly those promises, and returns what `System` returned;
//! the callers' obligations (a layout of non-zero size, a pointer from this
//! allocator) are passed on as they came. The counting itself is two relaxed
//! atomic adds, which neither allocate nor touch the memory handed out.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

struct Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count(size: usize) {
    ALLOCATIONS.fetch_add(1, Relaxed);
    BYTES.fetch_add(size as u64, Relaxed);
}

// SAFETY: see the module comment: every call is forwarded to `System`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's guarantees about `layout` are `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A move to a bigger block is an allocation as far as the budget
        // is concerned (it may copy).
        count(new_size);
        // SAFETY: as for `dealloc`, and `new_size` is the caller's to vouch for.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Serves the counts on `/metrics`.
pub fn register() {
    sluice_metrics::add_collector(|e| {
        use sluice_metrics::Kind;
        let name = "sluice_heap_allocations_total";
        e.family(
            name,
            "Heap allocations (and reallocations) since start; count-allocations builds only.",
            Kind::Counter,
        );
        e.sample(name, &[], ALLOCATIONS.load(Relaxed) as f64);
        let name = "sluice_heap_allocated_bytes_total";
        e.family(
            name,
            "Bytes asked of the heap since start; count-allocations builds only.",
            Kind::Counter,
        );
        e.sample(name, &[], BYTES.load(Relaxed) as f64);
    });
}
