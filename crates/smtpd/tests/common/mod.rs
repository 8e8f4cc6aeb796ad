//! What the front end's socket tests share: a line-oriented SMTP client
//! that reads whole (multi-line) replies.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

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
