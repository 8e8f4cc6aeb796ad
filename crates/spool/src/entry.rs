//! A queued message's envelope and the facts of its arrival, and their
//! binary encoding (see the crate documentation for the byte layout).
//!
//! The SMTP envelope is stored field by field, as the typed
//! [`sluice_smtp::Envelope`] holds it: no text is written that would have to
//! be parsed back, and what is read back is checked against the grammar's
//! own rules (a local part must be quotable, a domain must parse), so a
//! damaged record that slipped past the checksums is an error, never a
//! malformed address handed to delivery.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use sluice_smtp::address::AddressLiteral;
use sluice_smtp::{
    BodyType, Domain, Envelope, ForwardPath, LocalPart, MailParams, Mailbox, Notify,
    OriginalRecipient, Path, RcptParams, Recipient, Ret, ReversePath,
};

use crate::codec::{Reader, put_str, put_u8, put_u32, put_u64};
use crate::{QueueId, SpoolError};

/// The version byte that starts every encoded entry written now. Version 1
/// (the envelope as text) is still read: see `legacy.rs`.
const ENTRY_VERSION: u8 = 2;

/// One queued message without its body: its SMTP envelope, and what the
/// trace and the operator need to know of its arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The message's queue id, from [`Spool::new_id`](crate::Spool::new_id).
    pub id: QueueId,
    /// When the message was accepted, in milliseconds since the Unix epoch.
    pub arrival_unix_ms: u64,
    /// The SMTP client's address.
    pub client_ip: IpAddr,
    /// The client's HELO/EHLO argument, as it gave it.
    pub helo: String,
    /// The reverse-path, MAIL parameters and forward-paths. Per-recipient
    /// states refer to `envelope.recipients` by index. Shared: the front
    /// end's session that collected it and the delivery attempts that send
    /// it hold the same one.
    pub envelope: Arc<Envelope>,
}

impl Entry {
    /// Appends the binary encoding of the entry to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, ENTRY_VERSION);
        put_u64(out, self.id.0);
        put_u64(out, self.arrival_unix_ms);
        put_ip(out, self.client_ip);
        put_str(out, &self.helo);
        let env = &self.envelope;
        match &env.reverse_path {
            ReversePath::Null => put_u8(out, 0),
            ReversePath::Path(path) => {
                put_u8(out, 1);
                put_path(out, path);
            }
        }
        put_mail_params(out, &env.params);
        put_u32(out, env.recipients.len() as u32);
        for r in &env.recipients {
            match &r.forward_path {
                ForwardPath::Postmaster => put_u8(out, 0),
                ForwardPath::Path(path) => {
                    put_u8(out, 1);
                    put_path(out, path);
                }
            }
            put_rcpt_params(out, &r.params);
        }
    }

    /// Decodes an entry encoded by [`Entry::encode`] or by an earlier
    /// release; the input must be exactly one entry.
    pub(crate) fn decode(buf: &[u8]) -> Result<Entry, SpoolError> {
        let mut r = Reader::new(buf);
        match r.u8()? {
            1 => crate::legacy::decode_entry_v1(&mut r),
            ENTRY_VERSION => {
                let id = QueueId(r.u64()?);
                let arrival_unix_ms = r.u64()?;
                let client_ip = ip(&mut r)?;
                let helo = r.str()?;
                let reverse_path = match r.u8()? {
                    0 => ReversePath::Null,
                    1 => ReversePath::Path(path(&mut r)?),
                    _ => return Err(SpoolError::Corrupt("bad reverse-path tag")),
                };
                let params = mail_params(&mut r)?;
                // Each recipient is at least a tag and two absent parameters.
                let n = r.count(3)?;
                let mut recipients = Vec::with_capacity(n);
                for _ in 0..n {
                    let forward_path = match r.u8()? {
                        0 => ForwardPath::Postmaster,
                        1 => ForwardPath::Path(path(&mut r)?),
                        _ => return Err(SpoolError::Corrupt("bad forward-path tag")),
                    };
                    recipients.push(Recipient {
                        forward_path,
                        params: rcpt_params(&mut r)?,
                    });
                }
                r.finish()?;
                Ok(Entry {
                    id,
                    arrival_unix_ms,
                    client_ip,
                    helo,
                    envelope: Arc::new(Envelope {
                        reverse_path,
                        params,
                        recipients,
                    }),
                })
            }
            _ => Err(SpoolError::Corrupt("unknown entry version")),
        }
    }
}

pub(crate) fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            put_u8(out, 4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            put_u8(out, 6);
            out.extend_from_slice(&a.octets());
        }
    }
}

pub(crate) fn ip(r: &mut Reader<'_>) -> Result<IpAddr, SpoolError> {
    Ok(match r.u8()? {
        4 => {
            let b = r.take(4)?;
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
        6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(r.take(16)?);
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return Err(SpoolError::Corrupt("bad address family")),
    })
}

fn put_domain(out: &mut Vec<u8>, d: &Domain) {
    match d {
        Domain::Name(name) => {
            put_u8(out, 0);
            put_str(out, name);
        }
        Domain::Literal(AddressLiteral::Ipv4(a)) => {
            put_u8(out, 1);
            out.extend_from_slice(&a.octets());
        }
        Domain::Literal(AddressLiteral::Ipv6(a)) => {
            put_u8(out, 2);
            out.extend_from_slice(&a.octets());
        }
        Domain::Literal(AddressLiteral::General { tag, content }) => {
            put_u8(out, 3);
            put_str(out, tag);
            put_str(out, content);
        }
    }
}

fn domain(r: &mut Reader<'_>) -> Result<Domain, SpoolError> {
    Ok(match r.u8()? {
        0 => {
            let name = r.str()?;
            // The grammar decides what a domain is, here as on the wire.
            match Domain::parse(&name) {
                Some(Domain::Name(parsed)) if parsed == name => Domain::Name(name),
                _ => return Err(SpoolError::Corrupt("stored domain does not parse")),
            }
        }
        1 => {
            let b = r.take(4)?;
            Domain::Literal(AddressLiteral::Ipv4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
        }
        2 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(r.take(16)?);
            Domain::Literal(AddressLiteral::Ipv6(Ipv6Addr::from(a)))
        }
        3 => Domain::Literal(AddressLiteral::General {
            tag: r.str()?,
            content: r.str()?,
        }),
        _ => return Err(SpoolError::Corrupt("bad domain tag")),
    })
}

fn put_path(out: &mut Vec<u8>, p: &Path) {
    put_u32(out, p.source_route.len() as u32);
    for hop in &p.source_route {
        put_domain(out, hop);
    }
    // Unquoted: `LocalPart::from_unquoted` makes the canonical form again.
    put_str(out, &p.mailbox.local_part.unquoted());
    put_domain(out, &p.mailbox.domain);
}

fn path(r: &mut Reader<'_>) -> Result<Path, SpoolError> {
    // Each hop is at least a tag and an empty name.
    let n = r.count(5)?;
    let mut source_route = Vec::with_capacity(n);
    for _ in 0..n {
        source_route.push(domain(r)?);
    }
    let local_part = LocalPart::from_unquoted(&r.str()?)
        .map_err(|_| SpoolError::Corrupt("stored local part is not valid"))?;
    Ok(Path {
        source_route,
        mailbox: Mailbox {
            local_part,
            domain: domain(r)?,
        },
    })
}

/// An optional string: a presence byte, then the string.
fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => put_u8(out, 0),
        Some(s) => {
            put_u8(out, 1);
            put_str(out, s);
        }
    }
}

fn opt_str(r: &mut Reader<'_>) -> Result<Option<String>, SpoolError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.str()?)),
        _ => Err(SpoolError::Corrupt("bad presence flag")),
    }
}

fn put_mail_params(out: &mut Vec<u8>, p: &MailParams) {
    match p.size {
        None => put_u8(out, 0),
        Some(size) => {
            put_u8(out, 1);
            put_u64(out, size);
        }
    }
    put_u8(
        out,
        match p.body {
            None => 0,
            Some(BodyType::SevenBit) => 1,
            Some(BodyType::EightBitMime) => 2,
            Some(BodyType::BinaryMime) => 3,
        },
    );
    // Flags: SMTPUTF8, REQUIRETLS; the other bits must be 0.
    put_u8(out, u8::from(p.smtputf8) | (u8::from(p.requiretls) << 1));
    put_u8(
        out,
        match p.ret {
            None => 0,
            Some(Ret::Full) => 1,
            Some(Ret::Hdrs) => 2,
        },
    );
    put_opt_str(out, p.envid.as_deref());
    put_opt_str(out, p.auth.as_deref());
}

fn mail_params(r: &mut Reader<'_>) -> Result<MailParams, SpoolError> {
    let size = match r.u8()? {
        0 => None,
        1 => Some(r.u64()?),
        _ => return Err(SpoolError::Corrupt("bad SIZE flag")),
    };
    let body = match r.u8()? {
        0 => None,
        1 => Some(BodyType::SevenBit),
        2 => Some(BodyType::EightBitMime),
        3 => Some(BodyType::BinaryMime),
        _ => return Err(SpoolError::Corrupt("bad BODY value")),
    };
    let flags = r.u8()?;
    if flags & !0b11 != 0 {
        return Err(SpoolError::Corrupt("bad MAIL flags"));
    }
    let (smtputf8, requiretls) = (flags & 1 != 0, flags & 2 != 0);
    let ret = match r.u8()? {
        0 => None,
        1 => Some(Ret::Full),
        2 => Some(Ret::Hdrs),
        _ => return Err(SpoolError::Corrupt("bad RET value")),
    };
    Ok(MailParams {
        size,
        body,
        smtputf8,
        ret,
        envid: opt_str(r)?,
        auth: opt_str(r)?,
        requiretls,
    })
}

fn put_rcpt_params(out: &mut Vec<u8>, p: &RcptParams) {
    match p.notify {
        None => put_u8(out, 0),
        Some(Notify::Never) => put_u8(out, 1),
        Some(Notify::On {
            success,
            failure,
            delay,
        }) => put_u8(
            out,
            2 | u8::from(success) << 2 | u8::from(failure) << 3 | u8::from(delay) << 4,
        ),
    }
    match &p.orcpt {
        None => put_u8(out, 0),
        Some(o) => {
            put_u8(out, 1);
            put_str(out, &o.addr_type);
            put_str(out, &o.address);
        }
    }
}

fn rcpt_params(r: &mut Reader<'_>) -> Result<RcptParams, SpoolError> {
    let notify = match r.u8()? {
        0 => None,
        1 => Some(Notify::Never),
        bits if bits & 0b11 == 2 && bits & !0b1_1110 == 0 => Some(Notify::On {
            success: bits & 1 << 2 != 0,
            failure: bits & 1 << 3 != 0,
            delay: bits & 1 << 4 != 0,
        }),
        _ => return Err(SpoolError::Corrupt("bad NOTIFY value")),
    };
    let orcpt = match r.u8()? {
        0 => None,
        1 => Some(OriginalRecipient {
            addr_type: r.str()?,
            address: r.str()?,
        }),
        _ => return Err(SpoolError::Corrupt("bad ORCPT flag")),
    };
    Ok(RcptParams { notify, orcpt })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_domain() -> impl Strategy<Value = Domain> {
        prop_oneof![
            "[a-z][a-z0-9-]{0,10}[a-z0-9](\\.[a-z]{2,6}){0,2}".prop_map(Domain::Name),
            "[a-zé]{1,6}\\.例子".prop_map(Domain::Name),
            any::<[u8; 4]>().prop_map(|a| Domain::Literal(AddressLiteral::Ipv4(a.into()))),
            any::<[u8; 16]>().prop_map(|a| Domain::Literal(AddressLiteral::Ipv6(a.into()))),
            ("x-[a-z]{1,5}", "[a-z0-9:]{1,10}").prop_map(|(tag, content)| Domain::Literal(
                AddressLiteral::General { tag, content }
            )),
        ]
    }

    fn arb_path() -> impl Strategy<Value = Path> {
        (
            proptest::collection::vec(arb_domain(), 0..3),
            prop_oneof!["[a-z0-9.+-]{1,20}", "[ -~]{0,20}", "[a-zö]{1,8}"],
            arb_domain(),
        )
            .prop_filter_map("a valid local part", |(source_route, local, domain)| {
                Some(Path {
                    source_route,
                    mailbox: Mailbox {
                        local_part: LocalPart::from_unquoted(&local).ok()?,
                        domain,
                    },
                })
            })
    }

    pub(crate) fn arb_envelope() -> impl Strategy<Value = Envelope> {
        let reverse_path = prop_oneof![
            Just(ReversePath::Null),
            arb_path().prop_map(ReversePath::Path)
        ];
        let params = (
            proptest::option::of(any::<u64>()),
            proptest::option::of(prop_oneof![
                Just(BodyType::SevenBit),
                Just(BodyType::EightBitMime),
                Just(BodyType::BinaryMime)
            ]),
            any::<bool>(),
            proptest::option::of(prop_oneof![Just(Ret::Full), Just(Ret::Hdrs)]),
            proptest::option::of("[!-~]{1,20}"),
            proptest::option::of("[!-~]{1,20}"),
            any::<bool>(),
        )
            .prop_map(
                |(size, body, smtputf8, ret, envid, auth, requiretls)| MailParams {
                    size,
                    body,
                    smtputf8,
                    ret,
                    envid,
                    auth,
                    requiretls,
                },
            );
        let notify = proptest::option::of(prop_oneof![
            Just(Notify::Never),
            (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(success, failure, delay)| {
                Notify::On {
                    success,
                    failure,
                    delay,
                }
            })
        ]);
        let orcpt = proptest::option::of(
            ("rfc822|utf-8", "[!-~]{1,20}")
                .prop_map(|(addr_type, address)| OriginalRecipient { addr_type, address }),
        );
        let recipient = (
            prop_oneof![
                Just(ForwardPath::Postmaster),
                arb_path().prop_map(ForwardPath::Path)
            ],
            notify,
            orcpt,
        )
            .prop_map(|(forward_path, notify, orcpt)| Recipient {
                forward_path,
                params: RcptParams { notify, orcpt },
            });
        (
            reverse_path,
            params,
            proptest::collection::vec(recipient, 0..6),
        )
            .prop_map(|(reverse_path, params, recipients)| Envelope {
                reverse_path,
                params,
                recipients,
            })
    }

    pub(crate) fn arb_entry() -> impl Strategy<Value = Entry> {
        let ip = prop_oneof![
            any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ];
        (any::<u64>(), any::<u64>(), ip, "\\PC{0,30}", arb_envelope()).prop_map(
            |(id, arrival_unix_ms, client_ip, helo, envelope)| Entry {
                id: QueueId(id),
                arrival_unix_ms,
                client_ip,
                helo,
                envelope: envelope.into(),
            },
        )
    }

    proptest! {
        #[test]
        fn entry_round_trips(entry in arb_entry()) {
            let mut buf = Vec::new();
            entry.encode(&mut buf);
            prop_assert_eq!(Entry::decode(&buf).unwrap(), entry);
        }

        #[test]
        fn truncated_entry_is_an_error(entry in arb_entry(), cut in any::<prop::sample::Index>()) {
            let mut buf = Vec::new();
            entry.encode(&mut buf);
            let cut = cut.index(buf.len());
            prop_assert!(Entry::decode(&buf[..cut]).is_err());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Entry::decode(&bytes);
            let mut with_version = vec![ENTRY_VERSION];
            with_version.extend_from_slice(&bytes);
            let _ = Entry::decode(&with_version);
            let mut v1 = vec![1];
            v1.extend_from_slice(&bytes);
            let _ = Entry::decode(&v1);
        }
    }

    #[test]
    fn huge_recipient_count_is_rejected_without_allocating() {
        let entry = Entry {
            id: QueueId(1),
            arrival_unix_ms: 0,
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            helo: "h".into(),
            envelope: Envelope::new(ReversePath::Null, MailParams::default()).into(),
        };
        let mut buf = Vec::new();
        entry.encode(&mut buf);
        let n = buf.len();
        buf[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Entry::decode(&buf), Err(SpoolError::Corrupt(_))));
    }

    #[test]
    fn a_stored_domain_that_does_not_parse_is_corrupt() {
        let mut buf = Vec::new();
        put_domain(&mut buf, &Domain::Name("bad domain".into()));
        assert!(matches!(
            domain(&mut Reader::new(&buf)),
            Err(SpoolError::Corrupt(_))
        ));
    }
}
