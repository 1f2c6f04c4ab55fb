//! Networking on runner's own I/O driver: TCP, UDP and Unix domain sockets.
//!
//! ```
//! use futures_lite::{AsyncReadExt, AsyncWriteExt};
//! use runner_core::net::{TcpListener, TcpStream};
//!
//! runner_core::run(async {
//!     let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     // An echo server: one task per connection.
//!     runner_core::spawn(async move {
//!         loop {
//!             let (stream, _) = listener.accept().await.unwrap();
//!             runner_core::spawn(async move {
//!                 let (mut read, mut write) = stream.split();
//!                 futures_lite::io::copy(&mut read, &mut write).await.unwrap();
//!             });
//!         }
//!     });
//!     let mut stream = TcpStream::connect(addr).await.unwrap();
//!     stream.write_all(b"hello").await.unwrap();
//!     let mut buf = [0; 5];
//!     stream.read_exact(&mut buf).await.unwrap();
//!     assert_eq!(&buf, b"hello");
//! })
//! .unwrap();
//! ```
//!
//! A socket is made in a runner (in a task of its loop, or of its worker pool) and belongs to
//! that runner's loop: its I/O driver watches it, registered once, edge-triggered, and the
//! loop's threads wait for its events themselves, with no helper thread. Streams are
//! `futures-io`'s `AsyncRead` and `AsyncWrite` (as are references to them, and the halves they
//! split into), so smol-hyper, futures-rustls and other `futures-io` crates take them as they
//! are. Sockets move freely between the loop's tasks and its pool tasks. When the runner closes,
//! the sockets its tasks held are closed with them, and an operation on a socket still held
//! elsewhere fails at once.
//!
//! async-io's sockets (async-net, smol's crates) keep working inside runner, on async-io's own
//! reactor.

mod connect;
#[cfg(feature = "hyper")]
mod hyper_rt;
mod registered;
mod stream;
pub mod tcp;
pub mod udp;
#[cfg(unix)]
pub mod unix;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;
#[cfg(unix)]
pub use unix::{UnixDatagram, UnixListener, UnixStream};

/// `f` on each of `addr`'s addresses until one succeeds: the first success, or the last error.
fn each_addr<A: ToSocketAddrs, T>(
    addr: A,
    mut f: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for addr in addr.to_socket_addrs()? {
        match f(addr) {
            Ok(done) => return Ok(done),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address given")))
}
