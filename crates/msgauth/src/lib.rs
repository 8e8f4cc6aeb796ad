//! Email authentication for Sluice: SPF (RFC 7208), DKIM (RFC 6376, RFC
//! 8463), ARC (RFC 8617), DMARC (RFC 7489) and iprev checks of what clients
//! send, the `Authentication-Results:` field (RFC 8601) that reports them,
//! and DKIM signing of what our users send.
//!
//! The protocols are mail-auth's (Stalwart's implementation); this crate
//! runs it on the server's one resolver, bounds it in time, and turns its
//! answers into the filter contract's types
//! ([`sluice_filter::authres`]), which is all the rest of Sluice sees.

mod sign;
mod strip;
mod verify;

pub use sign::{Algorithm, GeneratedKey, KeyError, KeySpec, Signer, generate};
pub use strip::forged_results;
pub use verify::{Checker, Checks, MessageChecks, SenderChecks};
