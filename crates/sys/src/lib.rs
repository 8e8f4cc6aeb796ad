//! What Sluice asks of the operating system beyond `std`, in one place.
//!
//! - [`unix_socket`]: Unix-domain sockets at paths of any length (the
//!   control socket in a deep spool directory, an LMTP server's socket).
//! - [`user`]: the user the process runs as, from the system's user
//!   database.
//! - [`socket`]: a non-blocking read of a blocking socket in one call.
//! - [`terminal`]: a secret read from standard input without echo.
//! - [`parked`], [`parked_timeout`]: waiting on a channel by parking at once, without the
//!   `sched_yield` calls a sandbox makes expensive.
//!
//! - [`release_free_memory`]: the heap's free pages back to the system.
//! - [`disk`]: the room left on a file system, and its kind.
//! - [`sched`]: a short time slice for the threads a client waits on.
//! - [`content`]: a received message's bytes, large ones spilled to an
//!   unnamed file and mapped.
//!
//! The system calls go through `nix`; the `unsafe` calls (glibc's
//! `malloc_trim`, which nix does not wrap, in `memory`; mapping a spilled
//! message, in `content`; `sync_file_range`, which nix does not wrap
//! either, in `disk`; `sched_setattr` and its neighbours, in `sched`) each
//! come with why they are sound.

pub mod content;
pub mod disk;
mod memory;
mod parked;
pub mod sched;
pub mod socket;
pub mod terminal;
pub mod unix_socket;
pub mod user;

pub use content::{Content, Spill};
pub use memory::release_free_memory;
pub use parked::{parked, parked_timeout};
