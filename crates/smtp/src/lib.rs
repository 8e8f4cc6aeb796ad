//! SMTP as a sans-IO library.
//!
//! Everything in this crate is a pure function of its input: bytes in,
//! commands, replies, events and bytes out. No sockets, files, threads or
//! clocks (the front end, the spool and the delivery side own those), which is
//! what lets every rule here be tested byte by byte and fuzzed.
//!
//! - [`address`]: mailboxes and paths (RFC 5321 §4.1.2, RFC 6531).
//! - [`params`]: ESMTP parameters of MAIL and RCPT.
//! - [`command`]: the command grammar (RFC 5321 §4.1.1) and its error replies.
//! - [`reply`]: replies with enhanced status codes (RFC 3463), formatting and parsing.
//! - [`data`]: the DATA codec: dot-unstuffing on receive, dot-stuffing on send.
//! - [`line`]: cutting the command stream into lines, with a length limit.
//! - [`envelope`]: the envelope, one type from RCPT to the next hop.
//! - [`stage`]: the stages of a transaction, one vocabulary for both sides.
//! - [`trace`]: the `Received:` header.
//! - [`server`]: the SMTP server session the front end drives.
//! - [`client`]: the SMTP client session the delivery side drives.

pub mod address;
pub mod client;
pub mod command;
pub mod data;
pub mod date;
pub mod envelope;
pub mod ip;
pub mod line;
pub mod params;
pub mod reply;
pub mod server;
pub mod stage;
pub mod trace;

pub use address::AddressError;
pub use address::{AddressLiteral, Domain, ForwardPath, LocalPart, Mailbox, Path, ReversePath};
pub use command::CommandError;
pub use command::{Command, Verb};
pub use data::{DataDecoder, DecodeProgress, DotStuffer, LineEndingCheck};
pub use envelope::{Envelope, Recipient};
pub use ip::IpText;
pub use line::{Line, LineReader};
pub use params::{BodyType, MailParams, Notify, OriginalRecipient, RcptParams, Ret};
pub use reply::ReplyError;
pub use reply::{EnhancedCode, Reply, Severity};
pub use stage::Stage;
mod stack_text;
mod syntax;
mod xtext;
pub use params::ParamError;
