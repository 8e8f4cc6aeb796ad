//! What the crate's unit tests share.

use std::net::{IpAddr, Ipv4Addr};

use crate::{Entry, QueueId};

/// `<a@example.org>` to `<b@example.net>`, from 127.0.0.1, arrived at
/// `arrival_unix_ms`.
pub(crate) fn entry(id: QueueId, arrival_unix_ms: u64) -> Entry {
    let path = |s: &str| sluice_smtp::Path::parse(s.as_bytes()).unwrap();
    let mut envelope = sluice_smtp::Envelope::new(
        sluice_smtp::ReversePath::Path(path("<a@example.org>")),
        sluice_smtp::MailParams::default(),
    );
    envelope
        .recipients
        .push(sluice_smtp::Recipient::new(sluice_smtp::ForwardPath::Path(
            path("<b@example.net>"),
        )));
    Entry {
        id,
        arrival_unix_ms,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        helo: "h".into(),
        envelope: envelope.into(),
    }
}
