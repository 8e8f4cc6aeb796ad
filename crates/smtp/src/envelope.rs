//! The SMTP envelope (RFC 5321 §2.3.1): the reverse-path, the MAIL
//! parameters, and each forward-path with its RCPT parameters.
//!
//! One type from the RCPT that builds it to the next hop that receives it:
//! the server session collects it, the spool stores it (field by field,
//! never as text to parse again), and the client sends it.

use crate::address::{ForwardPath, ReversePath};
use crate::params::{BodyType, MailParams, RcptParams};

/// The envelope of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub reverse_path: ReversePath,
    pub params: MailParams,
    /// In the order they were accepted; delivery states refer to them by
    /// their index.
    pub recipients: Vec<Recipient>,
}

/// One forward-path with its RCPT parameters (NOTIFY, ORCPT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub forward_path: ForwardPath,
    pub params: RcptParams,
}

impl Envelope {
    /// An envelope with no recipients yet, as MAIL FROM starts it.
    pub fn new(reverse_path: ReversePath, params: MailParams) -> Envelope {
        Envelope {
            reverse_path,
            params,
            recipients: Vec::new(),
        }
    }

    /// The body type MAIL declared (7bit when it declared none).
    pub fn body_type(&self) -> BodyType {
        self.params.body.unwrap_or_default()
    }

    /// Whether the message needs SMTPUTF8: declared, or an address is UTF-8.
    pub fn needs_smtputf8(&self) -> bool {
        self.params.smtputf8
            || !self.reverse_path.is_ascii()
            || self.recipients.iter().any(|r| !r.forward_path.is_ascii())
    }
}

impl Recipient {
    /// A forward-path without parameters.
    pub fn new(forward_path: ForwardPath) -> Recipient {
        Recipient {
            forward_path,
            params: RcptParams::default(),
        }
    }
}
