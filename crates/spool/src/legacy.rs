//! Reading what earlier releases wrote: the version 1 entry, whose SMTP
//! envelope was kept as text, and recipient states whose reason was one
//! string (`host said: reply`). Never written any more; read so that a spool
//! left by an older release is delivered by this one (tested against a spool
//! that release made, in `tests/fixtures/v1`).

use std::net::SocketAddr;
use std::sync::Arc;

use sluice_smtp::{
    BodyType, Envelope, ForwardPath, MailParams, Path, RcptParams, Recipient, Reply, ReversePath,
};

use crate::codec::Reader;
use crate::entry::{Entry, ip};
use crate::state::{Reason, RemoteMta};
use crate::{QueueId, SpoolError};

/// The rest of a version 1 entry, after its version byte: u64 queue id, u64
/// arrival, address, u8 body type (0 7bit, 1 8bitmime, 2 binarymime), u8
/// SMTPUTF8, str reverse-path, str MAIL parameters, str HELO, u32 count,
/// then per recipient str forward-path and str RCPT parameters. The texts
/// were written by the grammar's own formatter, so they parse back.
pub(crate) fn decode_entry_v1(r: &mut Reader<'_>) -> Result<Entry, SpoolError> {
    let id = QueueId(r.u64()?);
    let arrival_unix_ms = r.u64()?;
    let client_ip = ip(r)?;
    let body_type = match r.u8()? {
        0 => BodyType::SevenBit,
        1 => BodyType::EightBitMime,
        2 => BodyType::BinaryMime,
        _ => return Err(SpoolError::Corrupt("bad body type")),
    };
    let smtputf8 = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(SpoolError::Corrupt("bad SMTPUTF8 flag")),
    };
    let reverse_path = match r.str()?.as_str() {
        "" | "<>" => ReversePath::Null,
        text => ReversePath::Path(path(text)?),
    };
    let mut params = MailParams::parse(&r.str()?)
        .map_err(|_| SpoolError::Corrupt("version 1 MAIL parameters do not parse"))?;
    // The flags were kept beside the text; they say the same, or more (a
    // bounce's SMTPUTF8 had no parameter text).
    params.smtputf8 |= smtputf8;
    if body_type != BodyType::SevenBit || params.body.is_some() {
        params.body = Some(body_type);
    }
    let helo = r.str()?;
    let n = r.count(8)?;
    let mut recipients = Vec::with_capacity(n);
    for _ in 0..n {
        let address = r.str()?;
        let forward_path = if address.eq_ignore_ascii_case("postmaster")
            || address.eq_ignore_ascii_case("<postmaster>")
        {
            ForwardPath::Postmaster
        } else {
            ForwardPath::Path(path(&address)?)
        };
        let params = RcptParams::parse(&r.str()?)
            .map_err(|_| SpoolError::Corrupt("version 1 RCPT parameters do not parse"))?;
        recipients.push(Recipient {
            forward_path,
            params,
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

/// A version 1 path, with or without its angle brackets.
fn path(text: &str) -> Result<Path, SpoolError> {
    let parsed = if text.starts_with('<') {
        Path::parse(text.as_bytes())
    } else {
        Path::parse(format!("<{text}>").as_bytes())
    };
    parsed.map_err(|_| SpoolError::Corrupt("version 1 path does not parse"))
}

/// A version 1 reason: `name[ip]:port said: <reply>` when the next hop
/// said it, else our own reply text. A text without a code that parses gets
/// 451 (deferred, `class` 4) or 554 (failed, `class` 5).
pub(crate) fn reason_v1(text: &str, class: u16) -> Reason {
    let (remote_mta, reply_text) = match text.split_once(" said: ") {
        Some((host, reply)) if !host.is_empty() && !host.contains(' ') => {
            (Some(remote_mta(host)), reply)
        }
        _ => (None, text),
    };
    let reply = Reply::parse(format!("{reply_text}\r\n").as_bytes())
        .ok()
        .flatten()
        .map(|(reply, _)| reply)
        .unwrap_or_else(|| {
            let code = if class == 4 { 451 } else { 554 };
            Reply::new(code, None, reply_text.to_owned())
        });
    Reason {
        reply,
        remote_mta,
        stage: None,
    }
}

/// `name[ip]:port`, `[ip]:port`, or a bare name.
fn remote_mta(host: &str) -> RemoteMta {
    if let Some(rest) = host.strip_prefix('[')
        && let Some((ip, port)) = rest.split_once("]:")
        && let Ok(addr) = format!("{ip}:{port}")
            .parse::<SocketAddr>()
            .or_else(|_| format!("[{ip}]:{port}").parse::<SocketAddr>())
    {
        return RemoteMta {
            name: format!("[{ip}]"),
            addr: Some(addr),
        };
    }
    if let Some((name, rest)) = host.split_once('[')
        && let Some((ip, port)) = rest.split_once("]:")
    {
        let addr = format!("{ip}:{port}")
            .parse::<SocketAddr>()
            .or_else(|_| format!("[{ip}]:{port}").parse::<SocketAddr>())
            .ok();
        return RemoteMta {
            name: name.to_owned(),
            addr,
        };
    }
    RemoteMta {
        name: host.to_owned(),
        addr: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_smtp::EnhancedCode;

    #[test]
    fn remote_reasons_keep_their_host_and_own_reasons_have_none() {
        let r = reason_v1(
            "[127.0.0.1]:2798 said: 450 4.2.1 mailbox busy, try later",
            4,
        );
        assert_eq!(
            r.remote_mta,
            Some(RemoteMta {
                name: "[127.0.0.1]".into(),
                addr: Some("127.0.0.1:2798".parse().unwrap()),
            })
        );
        assert_eq!(r.reply.code(), 450);
        assert_eq!(r.reply.enhanced(), Some(EnhancedCode::new(4, 2, 1)));
        assert_eq!(r.reply.text(), "mailbox busy, try later");

        let r = reason_v1(
            "mx1.remote.test[192.0.2.1]:25 said: 550 5.1.1 <b@x>: no such user",
            5,
        );
        let remote = r.remote_mta.unwrap();
        assert_eq!(remote.name, "mx1.remote.test");
        assert_eq!(remote.addr, Some("192.0.2.1:25".parse().unwrap()));

        let r = reason_v1("451 4.4.1 Connection refused by [127.0.0.1]:9", 4);
        assert_eq!(r.remote_mta, None);
        assert_eq!(r.reply.code(), 451);
        assert_eq!(r.reply.text(), "Connection refused by [127.0.0.1]:9");

        // Our own words that quote someone are still ours.
        let own = "451 4.4.7 message expired after 5 days; last error: x said: 451 busy";
        assert_eq!(reason_v1(own, 4).remote_mta, None);

        // Text without a code keeps its words and gets a code of its class.
        let r = reason_v1("something odd", 5);
        assert_eq!(r.reply.code(), 554);
        assert_eq!(r.reply.text(), "something odd");
    }
}
