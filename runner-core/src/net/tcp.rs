//! TCP: [`TcpListener`] and [`TcpStream`].

use std::io;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};

use crate::driver::source::Direction;
use crate::net::registered::Registered;
use crate::net::std_socket;
use crate::net::stream::stream_io;
use crate::net::{connect, each_addr};

/// A TCP socket listening for connections, on the loop's own I/O driver.
///
/// ```
/// use futures_lite::{AsyncReadExt, AsyncWriteExt};
/// use runner_core::net::{TcpListener, TcpStream};
///
/// runner_core::run(async {
///     let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
///     let addr = listener.local_addr().unwrap();
///     let client = runner_core::spawn(async move {
///         let mut stream = TcpStream::connect(addr).await.unwrap();
///         stream.write_all(b"ping").await.unwrap();
///     });
///     let (mut stream, _) = listener.accept().await.unwrap();
///     let mut got = Vec::new();
///     stream.read_to_end(&mut got).await.unwrap();
///     assert_eq!(got, b"ping");
///     client.await.unwrap();
/// })
/// .unwrap();
/// ```
pub struct TcpListener {
    io: Registered<std::net::TcpListener>,
}

impl TcpListener {
    /// Listen on `addr` (the first of its addresses that can be bound). Addresses are resolved
    /// with std's `ToSocketAddrs`, which blocks on a DNS lookup: give IP addresses, or resolve
    /// host names with `to_thread`.
    ///
    /// # Errors
    /// When no address can be bound, or outside a runner.
    pub async fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        let listener = each_addr(addr, std::net::TcpListener::bind)?;
        TcpListener::from_std(listener)
    }

    /// Accept a connection: the stream and the peer's address. Any number of tasks may wait
    /// to accept at once.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self.io.io(Direction::Read, |l| l.accept()).await?;
        Ok((TcpStream::from_std(stream)?, peer))
    }

    /// Poll for a connection (see [`accept`](Self::accept)). Of the tasks polling at once, the
    /// last one is woken, as `futures-io`'s `poll_*` methods do.
    pub fn poll_accept(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<(TcpStream, SocketAddr)>> {
        let accepted = self
            .io
            .poll_io(Direction::Read, cx, |l| l.accept(), |_| false);
        accepted.map(|accepted| {
            let (stream, peer) = accepted?;
            Ok((TcpStream::from_std(stream)?, peer))
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// The IP time-to-live of packets sent from the socket.
    pub fn ttl(&self) -> io::Result<u32> {
        self.io.get_ref().ttl()
    }

    /// Set the IP time-to-live.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.io.get_ref().set_ttl(ttl)
    }
}

std_socket!(TcpListener, std::net::TcpListener, "listener");

/// A TCP connection, on the loop's own I/O driver. It is `futures-io`'s `AsyncRead` and
/// `AsyncWrite`, and so is `&TcpStream`: two tasks may read and write it at once.
pub struct TcpStream {
    io: Registered<std::net::TcpStream>,
}

impl TcpStream {
    /// Connect to `addr` (its addresses in turn, until one accepts), without blocking a
    /// thread. Addresses are resolved with std's `ToSocketAddrs` (see [`TcpListener::bind`]).
    pub async fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match connect::tcp(addr).await {
                Ok(io) => return Ok(TcpStream { io }),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to")
        }))
    }

    /// The local address of the connection.
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

    /// Whether Nagle's algorithm is off (`TCP_NODELAY`).
    pub fn nodelay(&self) -> io::Result<bool> {
        self.io.get_ref().nodelay()
    }

    /// Turn Nagle's algorithm off (`true`) or on.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.io.get_ref().set_nodelay(nodelay)
    }

    /// The IP time-to-live of packets sent from the socket.
    pub fn ttl(&self) -> io::Result<u32> {
        self.io.get_ref().ttl()
    }

    /// Set the IP time-to-live.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.io.get_ref().set_ttl(ttl)
    }

    /// Read without removing: what the next read would give.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.io(Direction::Read, |s| s.peek(buf)).await
    }

    /// Wait until the stream is readable.
    pub async fn readable(&self) -> io::Result<()> {
        self.io.ready(Direction::Read).await
    }

    /// Wait until the stream is writable.
    pub async fn writable(&self) -> io::Result<()> {
        self.io.ready(Direction::Write).await
    }
}

std_socket!(TcpStream, std::net::TcpStream, "stream");

stream_io!(TcpStream, std::net::TcpStream);
#[cfg(feature = "hyper")]
crate::net::hyper_rt::hyper_io!(TcpStream);
