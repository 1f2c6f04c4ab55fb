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

/// What every socket type has, around the `Registered<$std>` in its field `io`: `from_std`,
/// `into_std`, `get_ref`, and `Debug` as its std socket. `$what` names it in the docs.
macro_rules! std_socket {
    ($socket:ident, $std:ty, $what:literal) => {
        impl $socket {
            #[doc = concat!("Take a std ", $what, " (made non-blocking here) to the running loop's driver.")]
            ///
            /// # Errors
            /// Outside a runner, or when the socket cannot be registered.
            pub fn from_std(socket: $std) -> std::io::Result<$socket> {
                socket.set_nonblocking(true)?;
                Ok($socket {
                    io: $crate::net::registered::Registered::new(socket)?,
                })
            }

            #[doc = concat!("The std ", $what, ", deregistered (and still non-blocking).")]
            pub fn into_std(self) -> std::io::Result<$std> {
                Ok(self.io.into_inner())
            }

            #[doc = concat!("The std ", $what, ", for what this type does not offer.")]
            pub fn get_ref(&self) -> &$std {
                self.io.get_ref()
            }
        }

        impl std::fmt::Debug for $socket {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($socket))
                    .field(self.io.get_ref())
                    .finish()
            }
        }
    };
}

pub(crate) use std_socket;
