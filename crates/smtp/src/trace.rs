//! The `Received:` trace header (RFC 5321 §4.4) and its date (RFC 5322 §3.3).

use std::net::IpAddr;
use std::time::SystemTime;

use crate::date::Rfc5322Date;
use crate::server::Greeting;

/// Where the message came from.
#[derive(Debug, Clone, Copy)]
pub enum TraceClient<'a> {
    /// A client on the network: its HELO/EHLO argument, as it gave it, and
    /// its address.
    Network { helo: &'a str, ip: IpAddr },
    /// A local program (`sendmail`), by the user id the kernel reported.
    Local { uid: u32 },
}

/// What a trace header says about one transaction.
#[derive(Debug)]
pub struct TraceFields<'a> {
    pub client: TraceClient<'a>,
    pub hostname: &'a str,
    pub greeting: Greeting,
    /// The TLS protocol and cipher suite when the session was encrypted
    /// (`TLSv1.3 TLS_AES_256_GCM_SHA384`): named in the header, and the
    /// protocol becomes `ESMTPS` (RFC 3848).
    pub tls: Option<&'a str>,
    /// The client authenticated (SMTP AUTH): `ESMTPA` / `ESMTPSA`.
    pub authenticated: bool,
    pub queue_id: &'a str,
    /// Named only when there is exactly one recipient: naming several would
    /// disclose Bcc recipients to each other (RFC 5321 §7.2).
    pub single_recipient: Option<&'a str>,
    pub time: SystemTime,
}

/// Formats the header, folded over lines of at most 78 octets where it can be.
///
/// `Received: from <helo> ([<ip>]) by <hostname> with ESMTP id <id> for <rcpt>; <date>`,
/// with `(using <tls>)` after the client when the session was encrypted, as
/// RFC 8314 §4.3 suggests. A local submission has no `from` clause and says
/// `(Sluice, from userid <uid>)` instead, as Postfix does.
pub fn received_header(f: &TraceFields<'_>, out: &mut Vec<u8>) {
    use std::io::Write as _;
    // RFC 3848's registered values: SMTP for HELO, ESMTP for EHLO, with S
    // for TLS and A for AUTH.
    let protocol = match (f.greeting, f.tls.is_some(), f.authenticated) {
        (Greeting::Helo, _, _) => "SMTP",
        (Greeting::Ehlo, false, false) => "ESMTP",
        (Greeting::Ehlo, true, false) => "ESMTPS",
        (Greeting::Ehlo, false, true) => "ESMTPA",
        (Greeting::Ehlo, true, true) => "ESMTPSA",
    };
    // Pieces appended as they are: a header a message, and the formatting
    // machinery costs more than the text. Only an IPv6 address goes
    // through it.
    match f.client {
        TraceClient::Network { helo, ip } => {
            out.extend_from_slice(b"Received: from ");
            out.extend_from_slice(sanitize(helo).as_bytes());
            match ip {
                IpAddr::V4(v4) => {
                    out.extend_from_slice(b" ([");
                    out.extend_from_slice(crate::ip::dotted_quad(v4).as_bytes());
                    out.extend_from_slice(b"])");
                }
                IpAddr::V6(v6) => {
                    // Writing to a Vec cannot fail.
                    let _ = write!(out, " ([IPv6:{v6}])");
                }
            }
            if let Some(tls) = f.tls {
                out.extend_from_slice(b"\r\n\t(using ");
                out.extend_from_slice(sanitize(tls).as_bytes());
                out.push(b')');
            }
            out.extend_from_slice(b"\r\n\tby ");
            out.extend_from_slice(f.hostname.as_bytes());
            out.extend_from_slice(b" (Sluice) with ");
        }
        TraceClient::Local { uid } => {
            let _ = write!(
                out,
                "Received: by {} (Sluice, from userid {uid})\r\n\twith ",
                f.hostname
            );
        }
    }
    out.extend_from_slice(protocol.as_bytes());
    out.extend_from_slice(b" id ");
    out.extend_from_slice(f.queue_id.as_bytes());
    if let Some(rcpt) = f.single_recipient {
        out.extend_from_slice(b"\r\n\tfor <");
        out.extend_from_slice(sanitize(rcpt).as_bytes());
        out.push(b'>');
    }
    out.extend_from_slice(b";\r\n\t");
    Rfc5322Date(f.time).write_to(out);
    out.extend_from_slice(b"\r\n");
}

/// The HELO name and addresses come from the client. The grammar already
/// refused CR, LF and controls, but a header is no place to trust that.
fn sanitize(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(|c| c.is_control()) {
        s.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn received_names_client_helo_id_and_single_recipient() {
        let mut out = Vec::new();
        received_header(
            &TraceFields {
                client: TraceClient::Network {
                    helo: "client.example",
                    ip: "192.0.2.7".parse().unwrap(),
                },
                hostname: "mx.example.test",
                greeting: Greeting::Ehlo,
                tls: None,
                authenticated: false,
                queue_id: "ABC123",
                single_recipient: Some("alice@example.test"),
                time: UNIX_EPOCH,
            },
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Received: from client.example ([192.0.2.7])\r\n\tby mx.example.test (Sluice) with ESMTP id ABC123\r\n\
             \tfor <alice@example.test>;\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
    }

    #[test]
    fn ipv6_clients_and_helo_only_clients() {
        let mut out = Vec::new();
        received_header(
            &TraceFields {
                client: TraceClient::Network {
                    helo: "old\u{7}host",
                    ip: "::1".parse().unwrap(),
                },
                hostname: "h",
                greeting: Greeting::Helo,
                tls: None,
                authenticated: false,
                queue_id: "Q",
                single_recipient: None,
                time: UNIX_EPOCH,
            },
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(
                "Received: from old?host ([IPv6:::1])\r\n\tby h (Sluice) with SMTP id Q;"
            ),
            "{text}"
        );
        assert!(!text.contains("for <"));
    }

    #[test]
    fn tls_and_auth_name_the_protocol_and_the_cipher() {
        let header = |tls, authenticated| {
            let mut out = Vec::new();
            received_header(
                &TraceFields {
                    client: TraceClient::Network {
                        helo: "c",
                        ip: "192.0.2.7".parse().unwrap(),
                    },
                    hostname: "h",
                    greeting: Greeting::Ehlo,
                    tls,
                    authenticated,
                    queue_id: "Q",
                    single_recipient: None,
                    time: UNIX_EPOCH,
                },
                &mut out,
            );
            String::from_utf8(out).unwrap()
        };
        let tls = Some("TLSv1.3 TLS_AES_256_GCM_SHA384");
        assert_eq!(
            header(tls, false),
            "Received: from c ([192.0.2.7])\r\n\t(using TLSv1.3 TLS_AES_256_GCM_SHA384)\r\n\
             \tby h (Sluice) with ESMTPS id Q;\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
        assert!(header(tls, true).contains("with ESMTPSA id"));
        assert!(header(None, true).contains("with ESMTPA id"));
        assert!(header(None, false).contains("with ESMTP id"));
    }

    #[test]
    fn a_local_submission_names_the_user_id_and_no_client() {
        let mut out = Vec::new();
        received_header(
            &TraceFields {
                client: TraceClient::Local { uid: 1000 },
                hostname: "host.test",
                greeting: Greeting::Ehlo,
                tls: None,
                authenticated: false,
                queue_id: "Q",
                single_recipient: Some("root@host.test"),
                time: UNIX_EPOCH,
            },
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Received: by host.test (Sluice, from userid 1000)\r\n\twith ESMTP id Q\r\n\
             \tfor <root@host.test>;\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
    }
}
