//! ESMTP parameters of MAIL FROM and RCPT TO.
//!
//! SIZE (RFC 1870), BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531),
//! RET / ENVID / NOTIFY / ORCPT (RFC 3461, with xtext decoding), AUTH (RFC 4954).

/// `BODY=` (RFC 6152 8BITMIME, RFC 3030 BINARYMIME).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// `RET=` (RFC 3461 §4.3): how much of the message a DSN returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    Full,
    Hdrs,
}

/// `NOTIFY=` (RFC 3461 §4.1): `NEVER`, or any of SUCCESS, FAILURE, DELAY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notify {
    Never,
    On {
        success: bool,
        failure: bool,
        delay: bool,
    },
}

/// `ORCPT=addr-type;xtext` (RFC 3461 §4.2), with the xtext decoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OriginalRecipient {
    /// Almost always `rfc822` (or `utf-8` under RFC 6533).
    pub addr_type: String,
    pub address: String,
}

/// Parameters of MAIL FROM. Unknown parameters are refused at parse time
/// (`555 5.5.4`), so there is no bag of leftovers here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<BodyType>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// ENVID, xtext-decoded.
    pub envid: Option<String>,
    /// AUTH=, xtext-decoded; `<>` is kept as the string "<>".
    pub auth: Option<String>,
}

/// Parameters of RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    pub orcpt: Option<OriginalRecipient>,
}
