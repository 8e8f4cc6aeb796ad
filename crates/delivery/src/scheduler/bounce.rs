//! The envelope of a bounce: from `<>` to the failed message's reverse-path.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, UNIX_EPOCH};

use sluice_smtp::{Envelope, ForwardPath, MailParams, Recipient, ReversePath};
use sluice_spool::{Entry, QueueId, Reason, StoredMessage, Submission};

use crate::dsn::{self, Action, BounceInput, FailedRecipient};

/// The bounce for the `failed` recipients (index, why) of `message`, with
/// queue id `id`, ready to submit; `None` when nobody is to be told (null
/// reverse-path, or NOTIFY).
pub(super) fn build(
    hostname: &str,
    message: &StoredMessage,
    failed: &[(u32, Reason)],
    now_ms: u64,
    id: QueueId,
) -> Option<Submission> {
    let failed: Vec<FailedRecipient> = failed
        .iter()
        .map(|(index, reason)| FailedRecipient {
            index: *index,
            original: None,
            reason: reason.clone(),
            action: Action::Failed,
        })
        .collect();
    let bounce = dsn::bounce(&BounceInput {
        reporting_mta: hostname,
        entry: &message.entry,
        body: message.body(),
        failed: &failed,
        now: UNIX_EPOCH + Duration::from_millis(now_ms),
        ret_headers_only: false,
    })?;
    // The notification is 7-bit (see `dsn`); only a non-ASCII reverse-path
    // (which the original got through SMTPUTF8) needs SMTPUTF8 again.
    let smtputf8 = !bounce.recipient.is_ascii();
    let entry = Entry {
        id,
        arrival_unix_ms: now_ms,
        // Generated here, not received: no client.
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        helo: hostname.to_owned(),
        envelope: Envelope {
            reverse_path: ReversePath::Null,
            params: MailParams {
                smtputf8,
                ..MailParams::default()
            },
            recipients: vec![Recipient::new(ForwardPath::Path(bounce.recipient))],
        }
        .into(),
    };
    Some(Submission::new(entry, bounce.message))
}
