use alloc::string::String;
use core::fmt;

use crate::{Ctx, Hooks, Verdict};

/// A filter: one method per hook of ABI v1.
///
/// Every hook has a default that lets the stage through, so a filter
/// implements only what it checks. The host creates one value per plugin
/// instance with [`Filter::init`] and may reuse it for many connections and
/// transactions, and may run consecutive hooks of one transaction on
/// different instances: per-transaction state belongs in notes
/// ([`Ctx::set_note`]), not in `self`. Fields of `self` are for configuration
/// and caches.
pub trait Filter: Sized {
    /// Builds the filter from the plugin's `[plugin.config]` table, given as
    /// JSON text (`{}` when there is none; `config::from_json`, with the
    /// `json` feature, also reads an empty string as `{}`). An error fails the
    /// plugin's load, and its message goes to the server's log.
    fn init(config: &str) -> Result<Self, InitError>;

    /// The hooks this configuration needs, asked once after
    /// [`init`](Filter::init) when the plugin loads: the host never calls
    /// the others. Every hook unless a filter says otherwise; a filter whose
    /// settings turn a check off (a DNSBL check at RCPT with no zones
    /// configured) leaves its hook out, and saves the call for every
    /// message. The answer must depend on the configuration alone: the
    /// host asks one instance and applies it to all.
    fn hooks(&self) -> Hooks {
        Hooks::ALL
    }

    /// A client connected; called before the greeting.
    fn on_connect(&mut self, ctx: &Ctx<'_>) -> Verdict {
        let _ = ctx;
        Verdict::Continue
    }

    /// HELO or EHLO with its argument as the client sent it.
    fn on_helo(&mut self, ctx: &Ctx<'_>, helo: &str) -> Verdict {
        let _ = (ctx, helo);
        Verdict::Continue
    }

    /// MAIL FROM: the reverse-path as `local@domain` (source route dropped),
    /// or `""` for the null reverse-path `<>`.
    fn on_mail(&mut self, ctx: &Ctx<'_>, reverse_path: &str) -> Verdict {
        let _ = (ctx, reverse_path);
        Verdict::Continue
    }

    /// RCPT TO: one forward-path exactly as the client wrote it between the
    /// angle brackets (source route, quoting and address literals included).
    fn on_rcpt(&mut self, ctx: &Ctx<'_>, forward_path: &str) -> Verdict {
        let _ = (ctx, forward_path);
        Verdict::Continue
    }

    /// End of data: the message is readable through [`Ctx::header`] and
    /// [`Ctx::body`], and [`Ctx::add_header`] may add fields.
    fn on_data(&mut self, ctx: &Ctx<'_>) -> Verdict {
        let _ = ctx;
        Verdict::Continue
    }

    /// The transaction ended (RSET, a new EHLO, the message accepted or
    /// refused).
    fn on_reset(&mut self, ctx: &Ctx<'_>) {
        let _ = ctx;
    }

    /// The connection closed.
    fn on_close(&mut self, ctx: &Ctx<'_>) {
        let _ = ctx;
    }
}

/// Why [`Filter::init`] refused its configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitError {
    message: String,
}

impl InitError {
    /// An error with a message for the operator ("`reject_score` must be
    /// positive").
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message given to [`InitError::new`].
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl core::error::Error for InitError {}
