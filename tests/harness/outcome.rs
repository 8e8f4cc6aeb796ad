//! Submitting a message with MAIL parameters, and waiting for what delivery
//! made of it: its outcome in the log, and the queue emptying.

use std::net::SocketAddr;
use std::time::Duration;

use crate::client::Client;
use crate::queue::read_queue;
use crate::server::Server;
use crate::wait_for;

/// `content` as it goes on the wire inside DATA: a line that starts with a
/// dot gets another one (RFC 5321 §4.5.2).
pub fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(content.len() + 16);
    for line in content.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    wire
}

/// One transaction on a fresh connection, with MAIL parameters
/// (`mail_params` may be empty; `from` may be empty for `<>`); `content`
/// must end with CRLF and is dot-stuffed here. Returns the queue id,
/// panicking on any refusal.
pub fn submit(
    addr: SocketAddr,
    from: &str,
    mail_params: &str,
    rcpts: &[&str],
    content: &[u8],
) -> String {
    let mut c = Client::connect_ehlo(addr);
    let params = if mail_params.is_empty() {
        String::new()
    } else {
        format!(" {mail_params}")
    };
    c.command_expect(&format!("MAIL FROM:<{from}>{params}"), "250 2.1.0");
    for r in rcpts {
        c.command_expect(&format!("RCPT TO:<{r}>"), "250 2.1.5");
    }
    c.command_expect("DATA", "354");
    let mut wire = dot_stuff(content);
    wire.extend_from_slice(b".\r\n");
    c.send(wire);
    let reply = c.read_reply();
    let id = reply
        .queue_id()
        .unwrap_or_else(|| panic!("message refused: {reply:?}"));
    c.command_expect("QUIT", "221 2.0.0");
    id
}

impl Server {
    /// Waits at most `limit` for the `delivery` log line of `recipient` (as
    /// given at RCPT) of message `id` with `outcome` (`delivered`,
    /// `deferred`, `failed`), and returns it; panics with the logs if none
    /// comes.
    pub fn wait_delivery(
        &self,
        id: &str,
        recipient: &str,
        outcome: &str,
        limit: Duration,
    ) -> String {
        let id_field = format!("queue_id={id} ");
        let recipient_field = format!("recipient=\"{recipient}\"");
        let outcome_field = format!("outcome=\"{outcome}\"");
        wait_for(limit, || {
            self.logs().into_iter().find(|l| {
                l.contains(" delivery ")
                    && l.contains(&id_field)
                    && l.contains(&recipient_field)
                    && l.contains(&outcome_field)
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "no {outcome} delivery of {id} to {recipient} within {limit:?}; logs:\n{}",
                self.logs().join("\n")
            )
        })
    }

    /// Waits at most `limit` for the queue to be empty (every outcome
    /// journaled, every message gone); panics with the queue if it is not.
    pub fn wait_queue_empty(&self, limit: Duration) {
        wait_for(limit, || {
            read_queue(self.spool_dir()).is_empty().then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "the queue did not empty within {limit:?}: {:#?}\nlogs:\n{}",
                read_queue(self.spool_dir()),
                self.logs().join("\n")
            )
        });
    }
}

/// Content with everything a careless transport breaks: lines that start
/// with a dot (one that is only a dot), 8-bit octets (UTF-8 and not), a
/// long line, and an empty line inside the body.
pub const TRICKY: &[u8] = b"From: Sender <sender@example.org>\r\n\
To: alice@example.test\r\n\
Subject: dots and octets\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
.leading dot\r\n\
.\r\n\
..two dots\r\n\
Gr\xc3\xbc\xc3\x9fe, na\xc3\xafve caf\xc3\xa9\r\n\
raw \xff\xfe\x80 octets\r\n\
\r\n\
. \r\n\
last line ends the content\r\n";
