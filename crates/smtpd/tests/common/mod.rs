//! What the front end's socket tests share: a line-oriented SMTP client
//! that reads whole (multi-line) replies.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_filter::NoFilter;
use sluice_smtp::server::ServerConfig;
use sluice_smtpd::{RecipientPolicy, Smtpd, SmtpdConfig};
use sluice_spool::{Spool, SpoolConfig};

/// A front end on 127.0.0.1 with no filters, `loops` event loops and a spool
/// in `dir`, owning `example.test` with the one mailbox `alice`.
#[allow(dead_code)] // Not every test file starts its front end this way.
pub fn start_smtpd(dir: &Path, loops: usize, max_message_size: u64) -> (Smtpd, Spool) {
    let (spool, _) = Spool::open(dir, SpoolConfig::default()).unwrap();
    let directory = sluice_directory::Directory::new(sluice_directory::DirectoryConfig {
        domains: vec!["example.test".into()],
        users: vec!["alice".into()],
        ..Default::default()
    });
    let policy = RecipientPolicy::new(Arc::new(directory), []);
    let mut config = SmtpdConfig::new(
        ServerConfig {
            hostname: "mx.example.test".into(),
            max_message_size,
            ..ServerConfig::default()
        },
        vec!["127.0.0.1:0".parse().unwrap()],
        policy,
    );
    config.event_loops = loops;
    config.shutdown_grace = Duration::from_secs(2);
    let smtpd = Smtpd::start(config, spool.handle(), Arc::new(NoFilter)).unwrap();
    (smtpd, spool)
}

pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects without reading the greeting (see [`Client::connect`]).
    pub fn open(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        // A front end that stops answering fails the test instead of hanging it.
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Connects and expects the `220` greeting.
    #[allow(dead_code)] // Not every test file greets.
    pub fn connect(addr: SocketAddr) -> Client {
        let mut client = Client::open(addr);
        let greeting = client.reply();
        assert!(greeting.starts_with("220 "), "{greeting:?}");
        client
    }

    /// Reads one whole reply, multi-line or not; returns its last line.
    pub fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(line.len() >= 4, "connection closed or short line: {line:?}");
            if line.as_bytes()[3] == b' ' {
                return line;
            }
        }
    }

    /// Sends bytes as they are, without waiting for a reply.
    #[allow(dead_code)] // Not every test file pipelines.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Reads until the server closes the connection; returns what came.
    #[allow(dead_code)] // Not every test file waits for the close.
    pub fn read_to_close(&mut self) -> String {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.reader, &mut rest).unwrap();
        rest
    }

    pub fn command(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }
}
