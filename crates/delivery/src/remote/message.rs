//! From the spool's text form of an envelope to the client's [`Envelope`].

use sluice_smtp::client::Envelope;
use sluice_smtp::{BodyType, ForwardPath, MailParams, Path, RcptParams, ReversePath};

use super::Message;
use crate::Outcome;

/// A message ready to go out, with the recipients the spool's text could
/// not even express as an envelope already failed.
#[derive(Debug)]
pub(super) struct Prepared {
    reverse_path: ReversePath,
    params: MailParams,
    body_type: BodyType,
    smtputf8: bool,
    body_size: u64,
    /// Per recipient of the message, in its order.
    pub recipients: Vec<Result<(ForwardPath, RcptParams), Outcome>>,
}

impl Prepared {
    /// `Err` is the outcome for every recipient: the message itself cannot
    /// be sent (a reverse-path or parameters that do not parse).
    pub(super) fn new(message: &Message<'_>) -> Result<Prepared, Outcome> {
        let reverse_path = if message.reverse_path.is_empty() || message.reverse_path == "<>" {
            ReversePath::Null
        } else {
            ReversePath::Path(parse_path(message.reverse_path).map_err(|e| {
                failed(format!(
                    "550 5.1.7 Bad sender address syntax {:?} in the queue: {e}",
                    message.reverse_path
                ))
            })?)
        };
        let params = MailParams::parse(message.mail_params).map_err(|e| {
            failed(format!(
                "554 5.5.4 Bad MAIL parameters {:?} in the queue: {e:?}",
                message.mail_params
            ))
        })?;
        let body_type = match message.body_type {
            0 => BodyType::SevenBit,
            1 => BodyType::EightBitMime,
            2 => BodyType::BinaryMime,
            other => {
                return Err(failed(format!(
                    "554 5.6.0 Unknown body type {other} in the queue"
                )));
            }
        };
        let recipients = message
            .recipients
            .iter()
            .map(|&(address, params)| {
                let forward_path = if address.eq_ignore_ascii_case("postmaster")
                    || address.eq_ignore_ascii_case("<postmaster>")
                {
                    ForwardPath::Postmaster
                } else {
                    ForwardPath::Path(parse_path(address).map_err(|e| {
                        failed(format!(
                            "553 5.1.3 Bad recipient address syntax {address:?}: {e}"
                        ))
                    })?)
                };
                let params = RcptParams::parse(params).map_err(|e| {
                    failed(format!(
                        "554 5.5.4 Bad RCPT parameters {params:?} in the queue: {e:?}"
                    ))
                })?;
                Ok((forward_path, params))
            })
            .collect();
        Ok(Prepared {
            reverse_path,
            smtputf8: message.smtputf8 || params.smtputf8,
            params,
            body_type,
            body_size: message.body.len() as u64,
            recipients,
        })
    }

    /// The envelope for some of the recipients (indices into the message's
    /// list, each one that parsed); results come back in this order.
    pub(super) fn envelope(&self, indices: &[usize]) -> Envelope {
        Envelope {
            reverse_path: self.reverse_path.clone(),
            recipients: indices
                .iter()
                .filter_map(|&i| self.recipients[i].as_ref().ok().cloned())
                .collect(),
            body_size: self.body_size,
            body_type: self.body_type,
            smtputf8: self.smtputf8,
            ret: self.params.ret,
            envid: self.params.envid.clone(),
            auth: self.params.auth.clone(),
        }
    }
}

/// A path with or without its angle brackets.
fn parse_path(address: &str) -> Result<Path, sluice_smtp::AddressError> {
    if address.starts_with('<') {
        Path::parse(address.as_bytes())
    } else {
        Path::parse(format!("<{address}>").as_bytes())
    }
}

fn failed(reply: String) -> Outcome {
    Outcome::Failed { reply }
}
