//! The envelope of a bounce: from `<>` to the failed message's reverse-path.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, UNIX_EPOCH};

use sluice_spool::{Envelope, QueueId, Recipient, StoredMessage};

use crate::dsn::{self, Action, BounceInput, FailedRecipient};
use crate::outcome::split_remote_reply;

/// The bounce for the `failed` recipients (index, failure reply) of
/// `message`, as an envelope with queue id `id` and the message to submit;
/// `None` when nobody is to be told (null reverse-path, or NOTIFY).
pub(super) fn build(
    hostname: &str,
    message: &StoredMessage,
    failed: &[(u32, String)],
    now_ms: u64,
    id: QueueId,
) -> Option<(Envelope, Vec<u8>)> {
    let original = &message.envelope;
    let failed: Vec<FailedRecipient> = failed
        .iter()
        .filter_map(|(r, text)| {
            let (remote_mta, reply) = split_remote_reply(text);
            Some(FailedRecipient {
                address: original.recipients.get(*r as usize)?.address.clone(),
                original: None,
                reply: reply.to_string(),
                remote_mta: remote_mta.map(str::to_string),
                action: Action::Failed,
            })
        })
        .collect();
    let bounce = dsn::bounce(&BounceInput {
        reporting_mta: hostname,
        envelope: original,
        body: message.body(),
        failed: &failed,
        now: UNIX_EPOCH + Duration::from_millis(now_ms),
        ret_headers_only: false,
    })?;
    // The notification is 7-bit (see `dsn`); only a non-ASCII reverse-path
    // (which the original got through SMTPUTF8) needs SMTPUTF8 again.
    let smtputf8 = !bounce.recipient.is_ascii();
    let envelope = Envelope {
        id,
        reverse_path: String::new(),
        mail_params: if smtputf8 { "SMTPUTF8" } else { "" }.into(),
        recipients: vec![Recipient {
            address: bounce.recipient,
            params: String::new(),
        }],
        arrival_unix_ms: now_ms,
        // Generated here, not received: no client.
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        helo: hostname.to_owned(),
        body_type: 0,
        smtputf8,
    };
    Some((envelope, bounce.message))
}
