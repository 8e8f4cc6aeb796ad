//! What Sluice asks of the operating system beyond `std`, in one place.
//!
//! - [`unix_socket`]: Unix-domain sockets at paths of any length (the
//!   control socket in a deep spool directory, an LMTP server's socket).
//! - [`user`]: the user the process runs as, from the system's user
//!   database.
//! - [`socket`]: a non-blocking read of a blocking socket in one call.
//! - [`terminal`]: a secret read from standard input without echo.
//! - [`parked`]: waiting on a channel by parking at once, without the
//!   `sched_yield` calls a sandbox makes expensive.
//!
//! Nothing here is `unsafe`: the system calls go through `nix`.

mod parked;
pub mod socket;
pub mod terminal;
pub mod unix_socket;
pub mod user;

pub use parked::parked;
