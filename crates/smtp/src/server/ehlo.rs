//! The service extensions a server advertises in its EHLO reply.

use std::borrow::Cow;

/// Which ESMTP extensions this server offers. The session refuses the
/// parameters of an extension it did not advertise (`555 5.5.4`), so this
/// set is both the advertisement and the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extensions {
    /// RFC 2920: the client may send commands without waiting for replies.
    pub pipelining: bool,
    /// RFC 6152: `BODY=8BITMIME`.
    pub eight_bit_mime: bool,
    /// RFC 2034: enhanced status codes in every reply.
    pub enhanced_status_codes: bool,
    /// RFC 6531: UTF-8 addresses and headers.
    pub smtputf8: bool,
    /// RFC 3030: BDAT.
    pub chunking: bool,
    /// RFC 3030: `BODY=BINARYMIME` (needs chunking).
    pub binary_mime: bool,
    /// RFC 3461: delivery status notification parameters.
    pub dsn: bool,
    /// RFC 3207: STARTTLS, offered until the session is inside TLS.
    pub starttls: bool,
    /// RFC 8689: REQUIRETLS, offered (and its MAIL parameter accepted) only
    /// inside TLS.
    pub requiretls: bool,
    /// RFC 4954: SASL mechanisms; empty means AUTH is not offered.
    pub auth: Vec<String>,
}

impl Default for Extensions {
    fn default() -> Self {
        Extensions {
            pipelining: true,
            eight_bit_mime: true,
            enhanced_status_codes: true,
            smtputf8: true,
            chunking: true,
            binary_mime: false,
            dsn: false,
            starttls: false,
            requiretls: false,
            auth: Vec::new(),
        }
    }
}

impl Extensions {
    /// The EHLO keyword lines, after the greeting line. `max_size` goes into
    /// SIZE (RFC 1870 §4: 0 would mean "no fixed limit", which we never say);
    /// `tls`: whether the session is inside TLS already.
    pub fn keywords(&self, max_size: u64, tls: bool) -> Vec<Cow<'static, str>> {
        let mut lines: Vec<Cow<'static, str>> = Vec::with_capacity(10);
        if self.pipelining {
            lines.push("PIPELINING".into());
        }
        lines.push(format!("SIZE {max_size}").into());
        if self.eight_bit_mime {
            lines.push("8BITMIME".into());
        }
        if self.enhanced_status_codes {
            lines.push("ENHANCEDSTATUSCODES".into());
        }
        if self.smtputf8 {
            lines.push("SMTPUTF8".into());
        }
        if self.chunking {
            lines.push("CHUNKING".into());
            if self.binary_mime {
                lines.push("BINARYMIME".into());
            }
        }
        if self.dsn {
            lines.push("DSN".into());
        }
        if self.starttls && !tls {
            lines.push("STARTTLS".into());
        }
        if self.requiretls && tls {
            lines.push("REQUIRETLS".into());
        }
        // PLAIN and LOGIN send the password as it is: only inside TLS.
        if !self.auth.is_empty() && tls {
            lines.push(format!("AUTH {}", self.auth.join(" ")).into());
        }
        lines
    }
}
