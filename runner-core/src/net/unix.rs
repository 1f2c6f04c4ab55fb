//! Unix domain sockets: [`UnixListener`], [`UnixStream`], [`UnixDatagram`].

use std::io;
use std::net::Shutdown;
use std::os::unix::net::{self as std_unix, SocketAddr};
use std::path::Path;

use crate::driver::source::Direction;
use crate::net::connect;
use crate::net::registered::Registered;
use crate::net::std_socket;
use crate::net::stream::stream_io;

/// A Unix stream socket listening for connections, on the loop's own I/O driver.
pub struct UnixListener {
    io: Registered<std_unix::UnixListener>,
}

impl UnixListener {
    /// Listen at `path`.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        UnixListener::from_std(std_unix::UnixListener::bind(path)?)
    }

    /// Accept a connection: the stream and the peer's address.
    pub async fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (stream, peer) = self.io.io(Direction::Read, |l| l.accept()).await?;
        Ok((UnixStream::from_std(stream)?, peer))
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }
}

std_socket!(UnixListener, std_unix::UnixListener, "listener");

/// A Unix stream connection, on the loop's own I/O driver; `AsyncRead` and `AsyncWrite`, like
/// `&UnixStream`.
pub struct UnixStream {
    io: Registered<std_unix::UnixStream>,
}

impl UnixStream {
    /// Connect to the socket at `path`, without blocking a thread.
    pub async fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        Ok(UnixStream {
            io: connect::unix(path.as_ref()).await?,
        })
    }

    /// Two connected streams.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = std_unix::UnixStream::pair()?;
        Ok((UnixStream::from_std(a)?, UnixStream::from_std(b)?))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().peer_addr()
    }

    /// Shut down the read side, the write side, or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.get_ref().shutdown(how)
    }
}

std_socket!(UnixStream, std_unix::UnixStream, "stream");

stream_io!(UnixStream, std_unix::UnixStream);
#[cfg(feature = "hyper")]
crate::net::hyper_rt::hyper_io!(UnixStream);

/// A Unix datagram socket, on the loop's own I/O driver.
pub struct UnixDatagram {
    io: Registered<std_unix::UnixDatagram>,
}

impl UnixDatagram {
    /// A socket bound to `path`.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixDatagram> {
        UnixDatagram::from_std(std_unix::UnixDatagram::bind(path)?)
    }

    /// A socket bound to no address.
    pub fn unbound() -> io::Result<UnixDatagram> {
        UnixDatagram::from_std(std_unix::UnixDatagram::unbound()?)
    }

    /// Two connected sockets.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = std_unix::UnixDatagram::pair()?;
        Ok((UnixDatagram::from_std(a)?, UnixDatagram::from_std(b)?))
    }

    /// Send to, and receive only from, the socket at `path`.
    pub fn connect<P: AsRef<Path>>(&self, path: P) -> io::Result<()> {
        self.io.get_ref().connect(path)
    }

    /// Send `buf` to the socket at `path`.
    pub async fn send_to<P: AsRef<Path>>(&self, buf: &[u8], path: P) -> io::Result<usize> {
        let path = path.as_ref();
        self.io.io(Direction::Write, |s| s.send_to(buf, path)).await
    }

    /// Receive a datagram: its length and its sender.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io.io(Direction::Read, |s| s.recv_from(buf)).await
    }

    /// Send `buf` to the connected socket.
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.io.io(Direction::Write, |s| s.send(buf)).await
    }

    /// Receive a datagram from the connected socket.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.io(Direction::Read, |s| s.recv(buf)).await
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().peer_addr()
    }

    /// Shut down the read side, the write side, or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.get_ref().shutdown(how)
    }
}

std_socket!(UnixDatagram, std_unix::UnixDatagram, "socket");
