//! Just enough of an IMAP4rev1 client (RFC 3501) to read a mailbox back:
//! LOGIN, STATUS, SELECT, FETCH. It reads literals (`{n}` then n octets)
//! exactly, so a fetched message can be compared byte for byte with what was
//! sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a test waits for any one response.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A logged-in session.
#[derive(Debug)]
pub struct Imap {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    next_tag: u32,
}

/// One untagged response: its text with each literal's octets taken out
/// (the `{n}` stays in the text), and the literals in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untagged {
    pub text: String,
    pub literals: Vec<Vec<u8>>,
}

/// The counters of `STATUS mailbox (MESSAGES RECENT UNSEEN)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxStatus {
    pub messages: u32,
    pub recent: u32,
    pub unseen: u32,
}

/// One message as `FETCH n (FLAGS BODY.PEEK[])` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// As the server names them: `\Recent`, `\Seen`, ...
    pub flags: Vec<String>,
    /// The whole message, octet for octet.
    pub message: Vec<u8>,
}

impl Imap {
    /// Connects, checks the `* OK` greeting and logs in; panics on failure.
    pub fn login(addr: SocketAddr, user: &str, password: &str) -> Imap {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to IMAP at {addr}: {e}"));
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("a read timeout");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("a write timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone the stream"));
        let mut imap = Imap {
            stream,
            reader,
            next_tag: 1,
        };
        let (greeting, _) = imap.read_response_line();
        assert!(greeting.starts_with("* OK"), "IMAP greeting: {greeting:?}");
        imap.command(&format!("LOGIN {} {}", quote(user), quote(password)));
        imap
    }

    /// Sends `command` with a fresh tag; returns the untagged responses once
    /// the tagged `OK` comes, and panics on `NO` or `BAD`.
    pub fn command(&mut self, command: &str) -> Vec<Untagged> {
        let tag = format!("a{}", self.next_tag);
        self.next_tag += 1;
        self.stream
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("send {command:?}: {e}"));
        let mut untagged = Vec::new();
        loop {
            let (text, literals) = self.read_response_line();
            if let Some(status) = text.strip_prefix(&format!("{tag} ")) {
                assert!(
                    status.starts_with("OK"),
                    "{command:?} failed: {text:?} after {untagged:#?}"
                );
                return untagged;
            }
            untagged.push(Untagged { text, literals });
        }
    }

    /// `STATUS mailbox (MESSAGES RECENT UNSEEN)`.
    pub fn status(&mut self, mailbox: &str) -> MailboxStatus {
        let responses = self.command(&format!(
            "STATUS {} (MESSAGES RECENT UNSEEN)",
            quote(mailbox)
        ));
        let line = responses
            .iter()
            .find(|r| r.text.starts_with("* STATUS "))
            .unwrap_or_else(|| panic!("no STATUS response: {responses:#?}"));
        let counter = |name: &str| -> u32 {
            let words: Vec<&str> = line
                .text
                .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
                .collect();
            words
                .windows(2)
                .find(|w| w[0].eq_ignore_ascii_case(name))
                .and_then(|w| w[1].parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {:?}", line.text))
        };
        MailboxStatus {
            messages: counter("MESSAGES"),
            recent: counter("RECENT"),
            unseen: counter("UNSEEN"),
        }
    }

    /// `SELECT mailbox`; returns its `EXISTS` count.
    pub fn select(&mut self, mailbox: &str) -> u32 {
        let responses = self.command(&format!("SELECT {}", quote(mailbox)));
        responses
            .iter()
            .find_map(|r| {
                r.text
                    .strip_prefix("* ")?
                    .strip_suffix(" EXISTS")?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no EXISTS after SELECT: {responses:#?}"))
    }

    /// Message `seq` of the selected mailbox, without setting `\Seen`.
    pub fn fetch(&mut self, seq: u32) -> Fetched {
        let responses = self.command(&format!("FETCH {seq} (FLAGS BODY.PEEK[])"));
        let fetch = responses
            .iter()
            .find(|r| r.text.starts_with(&format!("* {seq} FETCH ")))
            .unwrap_or_else(|| panic!("no FETCH response for {seq}: {responses:#?}"));
        let flags = fetch
            .text
            .split_once("FLAGS (")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(flags, _)| flags.split_whitespace().map(str::to_string).collect())
            .unwrap_or_else(|| panic!("no FLAGS in {:?}", fetch.text));
        assert!(
            fetch.text.contains("BODY[] {"),
            "BODY[] is not a literal: {:?}",
            fetch.text
        );
        let message = fetch
            .literals
            .first()
            .cloned()
            .unwrap_or_else(|| panic!("no literal in {:?}", fetch.text));
        Fetched { flags, message }
    }

    /// One response line, with the literals it announces read in full.
    fn read_response_line(&mut self) -> (String, Vec<Vec<u8>>) {
        let mut text = String::new();
        let mut literals = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut line)
                .unwrap_or_else(|e| panic!("read an IMAP response after {text:?}: {e}"));
            assert!(
                n > 0,
                "the IMAP server closed the connection after {text:?}"
            );
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            text.push_str(line);
            let Some(size) = literal_size(line) else {
                return (text, literals);
            };
            let mut literal = vec![0; size];
            self.reader
                .read_exact(&mut literal)
                .unwrap_or_else(|e| panic!("read a {size}-octet literal: {e}"));
            literals.push(literal);
        }
    }
}

impl Drop for Imap {
    fn drop(&mut self) {
        let _ = self.stream.write_all(b"z LOGOUT\r\n");
    }
}

/// `{n}` at the end of a line announces n octets of literal.
fn literal_size(line: &str) -> Option<usize> {
    let open = line.strip_suffix('}')?.rfind('{')?;
    line[open + 1..line.len() - 1].parse().ok()
}

/// An IMAP quoted string.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_sizes_are_read_from_the_end_of_a_line() {
        assert_eq!(literal_size("* 1 FETCH (BODY[] {123}"), Some(123));
        assert_eq!(literal_size("* 1 FETCH (BODY[] {0}"), Some(0));
        assert_eq!(literal_size("* OK {not a literal"), None);
        assert_eq!(literal_size("* 1 EXISTS"), None);
    }
}
