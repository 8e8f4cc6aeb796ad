//! Reads a spool back through the spool crate, read-only, whether or not a
//! server has it open, to check exactly what was queued.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use sluice_smtp::{ForwardPath, ReversePath};
use sluice_spool::Spool;

/// One queued message: its envelope and the stored body (the `Received:`
/// header the server prepended, then the content as the client sent it,
/// dot-unstuffed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: String,
    /// Without angle brackets; empty for the null reverse-path.
    pub reverse_path: String,
    pub recipients: Vec<String>,
    pub helo: String,
    pub client_ip: IpAddr,
    pub body: Vec<u8>,
}

impl QueuedMessage {
    /// The stored `Received:` header field, folding included (CRLFs kept).
    pub fn received(&self) -> &str {
        let end = header_field_end(&self.body);
        std::str::from_utf8(&self.body[..end]).expect("the Received header is ASCII")
    }

    /// The body after the first header field: what the client sent.
    pub fn content(&self) -> &[u8] {
        &self.body[header_field_end(&self.body)..]
    }
}

/// End of the first header field: its first CRLF not followed by folding
/// whitespace.
pub(crate) fn header_field_end(body: &[u8]) -> usize {
    let mut i = 0;
    while let Some(pos) = body[i..].windows(2).position(|w| w == b"\r\n") {
        let next = i + pos + 2;
        if !matches!(body.get(next), Some(b' ' | b'\t')) {
            return next;
        }
        i = next;
    }
    body.len()
}

/// Every message queued in `spool_dir`, oldest first.
pub fn read_queue(spool_dir: &Path) -> Vec<QueuedMessage> {
    let (spool, _report) = Spool::open_read_only(spool_dir).unwrap_or_else(|e| {
        panic!(
            "cannot open the spool {} read-only: {e}",
            spool_dir.display()
        )
    });
    let summaries = spool.messages().expect("list the spool");
    let mut out = Vec::with_capacity(summaries.len());
    for s in summaries {
        let m = spool
            .get(s.id)
            .expect("read a queued message")
            .unwrap_or_else(|| panic!("message {} listed but not readable", s.id));
        let entry = &m.entry;
        out.push(QueuedMessage {
            id: entry.id.to_string(),
            reverse_path: match &entry.envelope.reverse_path {
                ReversePath::Null => String::new(),
                ReversePath::Path(p) => p.mailbox.to_string(),
            },
            recipients: entry
                .envelope
                .recipients
                .iter()
                .map(|r| match &r.forward_path {
                    ForwardPath::Postmaster => "postmaster".to_owned(),
                    ForwardPath::Path(p) => p.mailbox.to_string(),
                })
                .collect(),
            helo: entry.helo.clone(),
            client_ip: entry.client_ip,
            body: m.body().to_vec(),
        });
    }
    out
}

/// The queue by id; panics if an id appears twice.
pub fn queue_by_id(spool_dir: &Path) -> HashMap<String, QueuedMessage> {
    let mut map = HashMap::new();
    for m in read_queue(spool_dir) {
        let id = m.id.clone();
        if let Some(dup) = map.insert(id.clone(), m) {
            panic!("queue id {id} listed twice (second: {dup:?})");
        }
    }
    map
}
