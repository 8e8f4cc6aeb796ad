//! What a server offers in its EHLO reply (RFC 5321 §4.1.1.1, §2.2.2).

use crate::reply::Reply;

/// The service extensions a server advertised. After HELO (no EHLO) this is
/// [`Capabilities::default`]: plain RFC 821 SMTP, nothing offered.
///
/// Keywords are matched case-insensitively (RFC 5321 §2.4); the EHLO
/// keywords this client acts on get fields, the rest are kept in
/// [`Capabilities::other`] so a log line or a later feature can still see them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 1870 `SIZE [limit]`: `None` when not advertised; `Some(0)` when
    /// advertised without a limit (or with one that does not parse, which
    /// RFC 1870 §4 gives no meaning to, so nothing is refused for it).
    pub size: Option<u64>,
    /// RFC 6152.
    pub eight_bit_mime: bool,
    /// RFC 6531.
    pub smtputf8: bool,
    /// RFC 3030 BDAT.
    pub chunking: bool,
    /// RFC 3030 `BODY=BINARYMIME` (meaningful only with [`Capabilities::chunking`]).
    pub binary_mime: bool,
    /// RFC 3461.
    pub dsn: bool,
    /// RFC 2034.
    pub enhanced_status_codes: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 8689 (offered only inside TLS).
    pub requiretls: bool,
    /// RFC 4954 SASL mechanisms, upper-cased; empty when AUTH is not offered.
    /// The pre-standard `AUTH=MECH ...` form some servers still send counts too.
    pub auth: Vec<String>,
    /// Keywords not listed above, in the order advertised.
    pub other: Vec<Extension>,
}

/// One advertised EHLO keyword with its parameters, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Upper-cased.
    pub keyword: String,
    pub params: Vec<String>,
}

impl Capabilities {
    /// Reads the EHLO reply's lines after the first (the first names the
    /// server). Malformed lines are skipped rather than refused: what a server
    /// fails to advertise properly is simply not used.
    pub fn from_ehlo_reply(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.lines().iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(first) = words.next() else {
                continue;
            };
            let mut params: Vec<String> = words.map(str::to_owned).collect();
            let mut keyword = first.to_ascii_uppercase();
            // `AUTH=LOGIN PLAIN`: pre-RFC 4954 servers (and some current ones,
            // for old clients) glue the first mechanism to the keyword.
            if let Some(first_mechanism) = keyword.strip_prefix("AUTH=") {
                if !first_mechanism.is_empty() {
                    params.insert(0, first_mechanism.to_owned());
                }
                keyword = "AUTH".to_owned();
            }
            match keyword.as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => {
                    let limit = params.first().and_then(|p| p.parse::<u64>().ok());
                    caps.size = Some(limit.unwrap_or(0));
                }
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "CHUNKING" => caps.chunking = true,
                "BINARYMIME" => caps.binary_mime = true,
                "DSN" => caps.dsn = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "STARTTLS" => caps.starttls = true,
                "REQUIRETLS" => caps.requiretls = true,
                "AUTH" => {
                    for mechanism in params {
                        let mechanism = mechanism.to_ascii_uppercase();
                        if !caps.auth.contains(&mechanism) {
                            caps.auth.push(mechanism);
                        }
                    }
                }
                _ => caps.other.push(Extension { keyword, params }),
            }
        }
        caps
    }

    /// The SIZE limit when one is advertised (RFC 1870: 0 means none).
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&limit| limit > 0)
    }

    /// Whether a `BODY=BINARYMIME` message can be sent (RFC 3030 §3: only over BDAT).
    pub fn can_send_binary(&self) -> bool {
        self.chunking && self.binary_mime
    }
}

/// The first word of a greeting or HELO/EHLO reply: the name the server
/// gives itself (RFC 5321 §4.1.1.1, §4.2: `220 domain text`).
pub(crate) fn announced_name(reply: &Reply) -> Option<String> {
    reply
        .lines()
        .first()
        .and_then(|line| line.split_ascii_whitespace().next())
        .map(str::to_owned)
}
