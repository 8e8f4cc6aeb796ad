//! Socket reads that std does not offer.

use std::io;
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, recv};

/// One `recv` with `MSG_DONTWAIT`: a non-blocking read of a blocking
/// socket in a single system call (no switching the socket's mode back and
/// forth). `WouldBlock` when nothing is waiting.
pub fn recv_dontwait(socket: &impl AsRawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match recv(socket.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => return Ok(n),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn reads_what_waits_and_never_blocks() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut buf = [0u8; 16];
        let nothing = recv_dontwait(&server, &mut buf).unwrap_err();
        assert_eq!(nothing.kind(), io::ErrorKind::WouldBlock);
        client.write_all(b"hello").unwrap();
        let n = crate_wait(|| recv_dontwait(&server, &mut buf).ok());
        assert_eq!(&buf[..n], b"hello");
        drop(client);
        assert_eq!(crate_wait(|| recv_dontwait(&server, &mut buf).ok()), 0);
    }

    /// Loopback delivery is quick, but not instant: poll, bounded.
    fn crate_wait(mut f: impl FnMut() -> Option<usize>) -> usize {
        for _ in 0..1000 {
            if let Some(n) = f() {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        panic!("nothing arrived");
    }
}
