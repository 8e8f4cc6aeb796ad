//! ESMTP parameters of MAIL FROM and RCPT TO.
//!
//! SIZE (RFC 1870), BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531),
//! RET / ENVID / NOTIFY / ORCPT (RFC 3461, with xtext decoding), AUTH (RFC 4954),
//! REQUIRETLS (RFC 8689).

use std::fmt;

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
    /// RFC 8689: the message may leave only over verified TLS to a server
    /// that offers REQUIRETLS, all the way to its destination.
    pub requiretls: bool,
}

/// Parameters of RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    pub orcpt: Option<OriginalRecipient>,
}

/// Why the parameters of a MAIL or RCPT line were refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParamError {
    /// Not `keyword[=value]` (RFC 5321 §4.1.2 esmtp-param).
    Syntax,
    /// A parameter we support with a value outside its grammar.
    InvalidValue {
        keyword: &'static str,
        /// The accepted form, for the reply text.
        expected: &'static str,
    },
    /// The same keyword twice with different values (`BODY=7BIT
    /// BODY=8BITMIME`). An identical repeat is accepted, as Postfix does:
    /// Python's `smtplib` sends `SMTPUTF8` twice when the caller asked for it
    /// and an address needs it too.
    Conflicting { keyword: &'static str },
    /// A keyword this server does not implement (RFC 5321 §4.1.1.11: 555).
    Unsupported { keyword: String },
    /// A MAIL parameter on RCPT or the other way round.
    WrongCommand { keyword: &'static str },
}

/// Keywords are echoed in replies; an absurdly long one is cut short there.
const MAX_ECHOED_KEYWORD: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    Size,
    Body,
    SmtpUtf8,
    Ret,
    Envid,
    Auth,
    RequireTls,
    Notify,
    Orcpt,
}

impl Keyword {
    const ALL: [Keyword; 9] = [
        Keyword::Size,
        Keyword::Body,
        Keyword::SmtpUtf8,
        Keyword::Ret,
        Keyword::Envid,
        Keyword::Auth,
        Keyword::RequireTls,
        Keyword::Notify,
        Keyword::Orcpt,
    ];

    fn name(self) -> &'static str {
        match self {
            Keyword::Size => "SIZE",
            Keyword::Body => "BODY",
            Keyword::SmtpUtf8 => "SMTPUTF8",
            Keyword::Ret => "RET",
            Keyword::Envid => "ENVID",
            Keyword::Auth => "AUTH",
            Keyword::RequireTls => "REQUIRETLS",
            Keyword::Notify => "NOTIFY",
            Keyword::Orcpt => "ORCPT",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Keyword::Size => "SIZE=<message size in octets>",
            Keyword::Body => "BODY=7BIT, BODY=8BITMIME or BODY=BINARYMIME",
            Keyword::SmtpUtf8 => "SMTPUTF8 without a value",
            Keyword::Ret => "RET=FULL or RET=HDRS",
            Keyword::Envid => "ENVID=<xtext of at most 100 printable ASCII characters>",
            Keyword::Auth => "AUTH=<xtext mailbox> or AUTH=<>",
            Keyword::RequireTls => "REQUIRETLS without a value",
            Keyword::Notify => "NOTIFY=NEVER or NOTIFY= a comma list of SUCCESS, FAILURE, DELAY",
            Keyword::Orcpt => "ORCPT=<address type>;<xtext address>",
        }
    }

    fn is_mail(self) -> bool {
        !matches!(self, Keyword::Notify | Keyword::Orcpt)
    }

    fn lookup(keyword: &str) -> Option<Keyword> {
        Keyword::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(keyword))
    }

    fn invalid(self) -> ParamError {
        ParamError::InvalidValue {
            keyword: self.name(),
            expected: self.expected(),
        }
    }
}

/// `esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")`
fn is_esmtp_keyword(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
}

/// `esmtp-value = 1*(%d33-60 / %d62-126)`, plus UTF-8 under RFC 6531.
fn is_esmtp_value(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            if c.is_ascii() {
                c.is_ascii_graphic() && c != '='
            } else {
                !c.is_control()
            }
        })
}

/// Splits `Mail-parameters` / `Rcpt-parameters` into keyword and value,
/// checking the generic syntax and the command the keyword belongs to.
fn each_param(
    s: &str,
    for_mail: bool,
) -> impl Iterator<Item = Result<(Keyword, Option<&str>), ParamError>> {
    s.split([' ', '\t'])
        .filter(|p| !p.is_empty())
        .map(move |param| {
            let (keyword, value) = match param.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (param, None),
            };
            if !is_esmtp_keyword(keyword) || !value.is_none_or(is_esmtp_value) {
                return Err(ParamError::Syntax);
            }
            match Keyword::lookup(keyword) {
                Some(k) if k.is_mail() == for_mail => Ok((k, value)),
                Some(k) => Err(ParamError::WrongCommand { keyword: k.name() }),
                None => {
                    let mut keyword = keyword.to_ascii_uppercase();
                    keyword.truncate(MAX_ECHOED_KEYWORD);
                    Err(ParamError::Unsupported { keyword })
                }
            }
        })
}

/// Sets a parameter's value; a repeat must say the same thing.
fn set_once<T: PartialEq>(slot: &mut Option<T>, k: Keyword, value: T) -> Result<(), ParamError> {
    match slot {
        Some(old) if *old != value => Err(ParamError::Conflicting { keyword: k.name() }),
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// One of `choices`, compared without regard to case.
fn choose<T: Copy>(value: Option<&str>, choices: &[(&str, T)]) -> Option<T> {
    let value = value?;
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
        .map(|&(_, t)| t)
}

/// `1*20DIGIT` that fits a u64 (RFC 1870 size-value; RFC 3030 chunk-size).
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.bytes().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

impl MailParams {
    /// Parses the parameters after `MAIL FROM:<path>` (also what
    /// [`Display`](fmt::Display) wrote, as the spool stores them).
    pub fn parse(s: &str) -> Result<MailParams, ParamError> {
        let mut p = MailParams::default();
        for param in each_param(s, true) {
            let (k, value) = param?;
            match k {
                Keyword::Size => {
                    let size = value.and_then(parse_decimal).ok_or(k.invalid())?;
                    set_once(&mut p.size, k, size)?;
                }
                Keyword::Body => {
                    let body = choose(
                        value,
                        &[
                            ("7BIT", BodyType::SevenBit),
                            ("8BITMIME", BodyType::EightBitMime),
                            ("BINARYMIME", BodyType::BinaryMime),
                        ],
                    )
                    .ok_or(k.invalid())?;
                    set_once(&mut p.body, k, body)?;
                }
                Keyword::SmtpUtf8 => {
                    if value.is_some() {
                        return Err(k.invalid());
                    }
                    p.smtputf8 = true;
                }
                Keyword::RequireTls => {
                    if value.is_some() {
                        return Err(k.invalid());
                    }
                    p.requiretls = true;
                }
                Keyword::Ret => {
                    let ret = choose(value, &[("FULL", Ret::Full), ("HDRS", Ret::Hdrs)])
                        .ok_or(k.invalid())?;
                    set_once(&mut p.ret, k, ret)?;
                }
                Keyword::Envid => {
                    // RFC 3461 §4.4: printable US-ASCII, at most 100 characters;
                    // it is copied into DSNs, so nothing else may get through.
                    let envid = value
                        .and_then(crate::xtext::decode)
                        .filter(|id| {
                            id.len() <= 100 && id.bytes().all(|b| (b' '..=b'~').contains(&b))
                        })
                        .ok_or(k.invalid())?;
                    set_once(&mut p.envid, k, envid)?;
                }
                Keyword::Auth => {
                    // `<>` is itself valid xtext, decoding to "<>".
                    let auth = value
                        .and_then(crate::xtext::decode)
                        .filter(|a| !a.is_empty() && !has_control(a))
                        .ok_or(k.invalid())?;
                    set_once(&mut p.auth, k, auth)?;
                }
                Keyword::Notify | Keyword::Orcpt => {
                    unreachable!("each_param filters RCPT keywords")
                }
            }
        }
        Ok(p)
    }

    /// Writes each parameter as ` KEYWORD=value`, in a fixed order.
    pub(crate) fn write_wire(&self, f: &mut impl fmt::Write) -> fmt::Result {
        if let Some(size) = self.size {
            write!(f, " SIZE={size}")?;
        }
        if let Some(body) = self.body {
            f.write_str(match body {
                BodyType::SevenBit => " BODY=7BIT",
                BodyType::EightBitMime => " BODY=8BITMIME",
                BodyType::BinaryMime => " BODY=BINARYMIME",
            })?;
        }
        if self.smtputf8 {
            f.write_str(" SMTPUTF8")?;
        }
        if let Some(ret) = self.ret {
            f.write_str(match ret {
                Ret::Full => " RET=FULL",
                Ret::Hdrs => " RET=HDRS",
            })?;
        }
        if let Some(envid) = &self.envid {
            f.write_str(" ENVID=")?;
            crate::xtext::write(f, envid)?;
        }
        if let Some(auth) = &self.auth {
            f.write_str(" AUTH=")?;
            crate::xtext::write(f, auth)?;
        }
        if self.requiretls {
            f.write_str(" REQUIRETLS")?;
        }
        Ok(())
    }
}

fn parse_notify(value: &str) -> Option<Notify> {
    if value.eq_ignore_ascii_case("NEVER") {
        return Some(Notify::Never);
    }
    let (mut success, mut failure, mut delay) = (false, false, false);
    for item in value.split(',') {
        if item.eq_ignore_ascii_case("SUCCESS") {
            success = true;
        } else if item.eq_ignore_ascii_case("FAILURE") {
            failure = true;
        } else if item.eq_ignore_ascii_case("DELAY") {
            delay = true;
        } else {
            // Includes NEVER in a list: RFC 3461 §4.1 allows it only alone.
            return None;
        }
    }
    Some(Notify::On {
        success,
        failure,
        delay,
    })
}

/// `addr-type ";" xtext` with `addr-type` an atom (RFC 3461 §4.2) less `=`,
/// which no esmtp-value may hold.
fn parse_orcpt(value: &str) -> Option<OriginalRecipient> {
    let (addr_type, address) = value.split_once(';')?;
    let atom = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/?^_`{|}~".contains(&b);
    if addr_type.is_empty() || !addr_type.bytes().all(atom) {
        return None;
    }
    let address = crate::xtext::decode(address).filter(|a| !a.is_empty() && !has_control(a))?;
    Some(OriginalRecipient {
        addr_type: addr_type.to_owned(),
        address,
    })
}

impl RcptParams {
    /// Parses the parameters after `RCPT TO:<path>`.
    pub fn parse(s: &str) -> Result<RcptParams, ParamError> {
        let mut p = RcptParams::default();
        for param in each_param(s, false) {
            let (k, value) = param?;
            match k {
                Keyword::Notify => {
                    let notify = value.and_then(parse_notify).ok_or(k.invalid())?;
                    set_once(&mut p.notify, k, notify)?;
                }
                Keyword::Orcpt => {
                    let orcpt = value.and_then(parse_orcpt).ok_or(k.invalid())?;
                    set_once(&mut p.orcpt, k, orcpt)?;
                }
                _ => unreachable!("each_param filters MAIL keywords"),
            }
        }
        Ok(p)
    }

    /// Writes each parameter as ` KEYWORD=value`. `Notify::On` with no flag
    /// set has no wire form and is left out rather than sent malformed.
    pub(crate) fn write_wire(&self, f: &mut impl fmt::Write) -> fmt::Result {
        match self.notify {
            Some(Notify::Never) => f.write_str(" NOTIFY=NEVER")?,
            Some(Notify::On {
                success,
                failure,
                delay,
            }) if success || failure || delay => {
                f.write_str(" NOTIFY=")?;
                let mut sep = "";
                for (on, name) in [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")] {
                    if on {
                        f.write_str(sep)?;
                        f.write_str(name)?;
                        sep = ",";
                    }
                }
            }
            _ => {}
        }
        if let Some(orcpt) = &self.orcpt {
            write!(f, " ORCPT={};", orcpt.addr_type)?;
            crate::xtext::write(f, &orcpt.address)?;
        }
        Ok(())
    }
}

/// The parameters as they stand on the MAIL line, without the leading space:
/// `SIZE=1000 BODY=8BITMIME`. This is what the spool keeps, and
/// [`MailParams::parse`] reads it back.
impl fmt::Display for MailParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        self.write_wire(&mut text)?;
        f.write_str(text.trim_start())
    }
}

/// The parameters as they stand on the RCPT line, without the leading space.
impl fmt::Display for RcptParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        self.write_wire(&mut text)?;
        f.write_str(text.trim_start())
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn params_text_round_trips_as_the_spool_stores_it() {
        let mail = MailParams::parse("SIZE=1000 BODY=8BITMIME ENVID=a+2Bb").unwrap();
        assert_eq!(mail.to_string(), "SIZE=1000 BODY=8BITMIME ENVID=a+2Bb");
        assert_eq!(MailParams::parse(&mail.to_string()).unwrap(), mail);
        assert_eq!(MailParams::default().to_string(), "");
        let rcpt = RcptParams::parse("NOTIFY=FAILURE,DELAY ORCPT=rfc822;x+40y").unwrap();
        // `@` needs no xtext escape, so the canonical form has none.
        assert_eq!(rcpt.to_string(), "NOTIFY=FAILURE,DELAY ORCPT=rfc822;x@y");
        assert_eq!(RcptParams::parse(&rcpt.to_string()).unwrap(), rcpt);
    }
}
