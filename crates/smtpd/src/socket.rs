//! A client's socket: TCP from the network, or the local submission
//! socket `sendmail` talks to. The event loop treats both alike.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

#[derive(Debug)]
pub(crate) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    /// Our end's address; `None` for the local socket.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Socket::Tcp(s) => s.local_addr().ok(),
            Socket::Unix(_) => None,
        }
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.shutdown(how),
            Socket::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A bound listening socket, before an event loop takes its copy.
#[derive(Debug)]
pub(crate) enum Bound {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Bound {
    pub(crate) fn try_clone(&self) -> io::Result<Bound> {
        Ok(match self {
            Bound::Tcp(l) => Bound::Tcp(l.try_clone()?),
            Bound::Unix(l) => Bound::Unix(l.try_clone()?),
        })
    }

    pub(crate) fn into_listening(self) -> io::Result<Listening> {
        Ok(match self {
            Bound::Tcp(l) => {
                l.set_nonblocking(true)?;
                Listening::Tcp(TcpListener::from_std(l))
            }
            Bound::Unix(l) => {
                l.set_nonblocking(true)?;
                Listening::Unix(UnixListener::from_std(l))
            }
        })
    }
}

/// Who is at the other end of an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// A network client.
    Tcp(SocketAddr),
    /// A local process, by the user id the kernel reports.
    Local { uid: u32 },
}

/// A listening socket of an event loop.
#[derive(Debug)]
pub(crate) enum Listening {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listening {
    /// The next connection waiting, and who sent it.
    pub(crate) fn accept(&self) -> io::Result<(Socket, Peer)> {
        match self {
            Listening::Tcp(l) => {
                let (stream, addr) = l.accept()?;
                // Replies are small and each one is awaited.
                let _ = stream.set_nodelay(true);
                Ok((Socket::Tcp(stream), Peer::Tcp(addr)))
            }
            Listening::Unix(l) => {
                let (stream, _) = l.accept()?;
                let uid = sluice_sys::unix_socket::peer_uid(&stream)?;
                Ok((Socket::Unix(stream), Peer::Local { uid }))
            }
        }
    }
}

/// `mio::event::Source` for an enum of a TCP and a Unix variant, each of
/// which is one already: the event loop registers either alike.
macro_rules! source_of_either {
    ($name:ident) => {
        impl Source for $name {
            fn register(
                &mut self,
                registry: &Registry,
                token: Token,
                interests: Interest,
            ) -> io::Result<()> {
                match self {
                    $name::Tcp(s) => s.register(registry, token, interests),
                    $name::Unix(s) => s.register(registry, token, interests),
                }
            }

            fn reregister(
                &mut self,
                registry: &Registry,
                token: Token,
                interests: Interest,
            ) -> io::Result<()> {
                match self {
                    $name::Tcp(s) => s.reregister(registry, token, interests),
                    $name::Unix(s) => s.reregister(registry, token, interests),
                }
            }

            fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
                match self {
                    $name::Tcp(s) => s.deregister(registry),
                    $name::Unix(s) => s.deregister(registry),
                }
            }
        }
    };
}

source_of_either!(Socket);
source_of_either!(Listening);
