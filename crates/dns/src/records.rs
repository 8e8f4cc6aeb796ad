//! What a lookup asks and answers, in our own types, and how hickory's
//! answers and errors map onto them. Kept apart from the resolver so callers
//! never see hickory's types, and so the mapping is tested without a server.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{self, Name, RData};

/// The record types Sluice asks for: next hops (MX, A, AAAA) and what
/// plugins check (DNSBLs in A and TXT, reverse names in PTR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    A,
    Aaaa,
    Mx,
    Txt,
    Ptr,
}

impl RecordType {
    /// The type for its IANA code (RFC 1035 §3.2.2, RFC 3596 §2.1); `None`
    /// for any type not listed above.
    pub fn from_code(code: u16) -> Option<RecordType> {
        Some(match code {
            1 => RecordType::A,
            28 => RecordType::Aaaa,
            15 => RecordType::Mx,
            16 => RecordType::Txt,
            12 => RecordType::Ptr,
            _ => return None,
        })
    }

    pub fn code(self) -> u16 {
        u16::from(self.hickory())
    }

    pub(crate) fn hickory(self) -> rr::RecordType {
        match self {
            RecordType::A => rr::RecordType::A,
            RecordType::Aaaa => rr::RecordType::AAAA,
            RecordType::Mx => rr::RecordType::MX,
            RecordType::Txt => rr::RecordType::TXT,
            RecordType::Ptr => rr::RecordType::PTR,
        }
    }
}

/// One answer record. Host names are in [`host_name`] form: lower-case,
/// without the final dot, and `""` for the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// `exchange` is `""` for MX "." (a null MX, RFC 7505).
    Mx {
        preference: u16,
        exchange: String,
    },
    /// The record's character-strings as sent, neither joined nor decoded:
    /// how to join them depends on what the text is (RFC 7208 §3.3 joins
    /// SPF's without spaces).
    Txt(Vec<Vec<u8>>),
    Ptr(String),
}

impl Record {
    /// The record if it is of the type asked for; an answer may also hold
    /// the CNAMEs that led to it, which no caller wants.
    pub(crate) fn of_type(record_type: RecordType, data: &RData) -> Option<Record> {
        Some(match (record_type, data) {
            (RecordType::A, RData::A(a)) => Record::A(a.0),
            (RecordType::Aaaa, RData::AAAA(a)) => Record::Aaaa(a.0),
            (RecordType::Mx, RData::MX(mx)) => Record::Mx {
                preference: mx.preference,
                exchange: host_name(&mx.exchange),
            },
            (RecordType::Txt, RData::TXT(txt)) => {
                Record::Txt(txt.txt_data.iter().map(|s| s.to_vec()).collect())
            }
            (RecordType::Ptr, RData::PTR(ptr)) => Record::Ptr(host_name(&ptr.0)),
            _ => return None,
        })
    }
}

/// The records of one lookup, never empty (no records is
/// [`LookupError::NoRecords`]), and how long they may be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub records: Vec<Record>,
    /// What is left of the records' TTL: hickory's cache may have held
    /// them for a while already.
    pub ttl: Duration,
}

/// Why a lookup found nothing. The negative answers carry how long they may
/// be believed (RFC 2308 §5): the SOA minimum when the server sent its SOA,
/// else [`DEFAULT_NEGATIVE_TTL`]; never more than [`MAX_NEGATIVE_TTL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// NXDOMAIN: the name does not exist.
    NoSuchName { negative_ttl: Duration },
    /// NODATA: the name exists but has no record of the type asked for.
    NoRecords { negative_ttl: Duration },
    /// Not a domain name at all: asking again cannot help.
    InvalidName(String),
    /// SERVFAIL, REFUSED, a timeout, a network error: ask again later.
    Temporary(String),
}

/// How long a negative answer is kept when the server sent no SOA to say.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// The most a negative answer is kept, whatever the SOA says: a name created
/// after a miss (a listing in a DNSBL, a new MX) is seen within minutes.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(300);

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::NoSuchName { .. } => f.write_str("no such domain (NXDOMAIN)"),
            LookupError::NoRecords { .. } => f.write_str("no records of the type asked for"),
            LookupError::InvalidName(e) | LookupError::Temporary(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for LookupError {}

/// NXDOMAIN and NODATA apart from every other failure, which is temporary.
pub(crate) fn classify(error: &NetError) -> LookupError {
    let NetError::Dns(DnsError::NoRecordsFound(no)) = error else {
        return LookupError::Temporary(error.to_string());
    };
    let negative_ttl = no
        .negative_ttl
        .map_or(DEFAULT_NEGATIVE_TTL, |secs| {
            Duration::from_secs(secs.into())
        })
        .min(MAX_NEGATIVE_TTL);
    if error.is_nx_domain() {
        LookupError::NoSuchName { negative_ttl }
    } else {
        LookupError::NoRecords { negative_ttl }
    }
}

/// The name to ask about, absolute, so no search domain from resolv.conf is
/// ever tried: a mail domain is always fully qualified (RFC 5321 §2.3.5),
/// and so is a DNSBL query. For PTR an IP address stands for its
/// `in-addr.arpa` or `ip6.arpa` name.
pub(crate) fn query_name(record_type: RecordType, name: &str) -> Result<Name, LookupError> {
    let mut query = match (record_type, name.parse::<IpAddr>()) {
        (RecordType::Ptr, Ok(ip)) => Name::from(ip),
        _ => Name::from_utf8(name)
            .map_err(|e| LookupError::InvalidName(format!("invalid domain name {name:?}: {e}")))?,
    };
    query.set_fqdn(true);
    Ok(query)
}

/// A host name as Sluice compares and prints them: lower-case ASCII (IDNs
/// as A-labels) without the final dot; the root is `""`.
pub fn host_name(name: &Name) -> String {
    let mut host = name.to_lowercase().to_ascii();
    if host.ends_with('.') {
        host.pop();
    }
    host
}

#[cfg(test)]
mod tests {
    use hickory_resolver::net::NoRecords;
    use hickory_resolver::proto::op::{Query, ResponseCode};

    use super::*;

    fn no_records(code: ResponseCode, negative_ttl: Option<u32>) -> NetError {
        let query = Query::query(Name::from_ascii("x.test.").unwrap(), rr::RecordType::A);
        let mut no = NoRecords::new(query, code);
        no.negative_ttl = negative_ttl;
        NetError::Dns(DnsError::NoRecordsFound(no))
    }

    #[test]
    fn negative_answers_keep_their_ttl_within_bounds() {
        let secs = Duration::from_secs;
        assert_eq!(
            classify(&no_records(ResponseCode::NXDomain, Some(30))),
            LookupError::NoSuchName {
                negative_ttl: secs(30)
            }
        );
        assert_eq!(
            classify(&no_records(ResponseCode::NoError, Some(45))),
            LookupError::NoRecords {
                negative_ttl: secs(45)
            }
        );
        // No SOA in the reply: the default. A huge SOA minimum: the cap.
        assert_eq!(
            classify(&no_records(ResponseCode::NXDomain, None)),
            LookupError::NoSuchName {
                negative_ttl: DEFAULT_NEGATIVE_TTL
            }
        );
        assert_eq!(
            classify(&no_records(ResponseCode::NoError, Some(86_400))),
            LookupError::NoRecords {
                negative_ttl: MAX_NEGATIVE_TTL
            }
        );
    }

    #[test]
    fn everything_else_is_temporary() {
        for error in [
            NetError::Timeout,
            NetError::NoConnections,
            NetError::Msg("SERVFAIL".into()),
        ] {
            let text = error.to_string();
            assert_eq!(classify(&error), LookupError::Temporary(text));
        }
    }

    #[test]
    fn host_names_are_lower_case_without_the_final_dot() {
        let name = |s: &str| Name::from_ascii(s).unwrap();
        assert_eq!(host_name(&name("MX1.Example.ORG.")), "mx1.example.org");
        assert_eq!(host_name(&name("mx1.example.org")), "mx1.example.org");
        assert_eq!(host_name(&name(".")), "");
    }

    #[test]
    fn query_names_are_absolute_and_ptr_takes_addresses() {
        let ptr = query_name(RecordType::Ptr, "192.0.2.7").unwrap();
        assert_eq!(ptr.to_ascii(), "7.2.0.192.in-addr.arpa.");
        let ptr6 = query_name(RecordType::Ptr, "2001:db8::1").unwrap();
        assert!(ptr6.is_fqdn());
        assert!(
            ptr6.to_ascii().ends_with(".8.b.d.0.1.0.0.2.ip6.arpa."),
            "{ptr6}"
        );
        // Only PTR turns an address into a name: an A query for one asks for
        // the name as written.
        let a = query_name(RecordType::A, "192.0.2.7").unwrap();
        assert_eq!(a.to_ascii(), "192.0.2.7.");
        let relative = query_name(RecordType::Mx, "example.org").unwrap();
        assert!(relative.is_fqdn());
        assert_eq!(relative.to_ascii(), "example.org.");
        let long_label = format!("{}.test", "x".repeat(64));
        assert!(matches!(
            query_name(RecordType::A, &long_label),
            Err(LookupError::InvalidName(e)) if e.contains("invalid domain name")
        ));
    }

    #[test]
    fn type_codes_are_the_iana_ones() {
        for (code, record_type) in [
            (1, RecordType::A),
            (28, RecordType::Aaaa),
            (15, RecordType::Mx),
            (16, RecordType::Txt),
            (12, RecordType::Ptr),
        ] {
            assert_eq!(RecordType::from_code(code), Some(record_type));
            assert_eq!(record_type.code(), code);
        }
        // Types Sluice never asks for, CNAME and ANY among them.
        for code in [0, 5, 6, 33, 255] {
            assert_eq!(RecordType::from_code(code), None, "{code}");
        }
    }
}
