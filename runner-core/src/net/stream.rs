//! What TCP and Unix streams share: reads and writes through the driver, `futures-io`'s
//! `AsyncRead` and `AsyncWrite` on the stream and on `&stream`, and halves to split it into.

use std::io::{self, IoSlice, Read, Write};
use std::task::{Context as Cx, Poll};

use crate::driver::poller::{IoSource, SHORT_READ_DRAINS};
use crate::driver::source::Direction;
use crate::net::registered::Registered;

/// A std stream type the driver can poll: `TcpStream`, `UnixStream`.
pub(crate) trait StdStream: IoSource + Send + Sync + 'static
where
    for<'a> &'a Self: Read + Write,
{
    /// A read shorter than its buffer means the socket is drained (see `SHORT_READ_DRAINS`).
    const SHORT_READ_DRAINS: bool;
}

impl StdStream for std::net::TcpStream {
    const SHORT_READ_DRAINS: bool = SHORT_READ_DRAINS;
}

/// Not on a Unix stream: a read stops short after a message that carried descriptors, with
/// data queued behind it, and no event says so.
#[cfg(unix)]
impl StdStream for std::os::unix::net::UnixStream {
    const SHORT_READ_DRAINS: bool = false;
}

/// Read into `buf`. A read shorter than `buf` means the socket is drained: its readiness is
/// cleared, so that the next read waits for data instead of failing with `WouldBlock` first.
pub(crate) fn poll_read<T: StdStream>(
    io: &Registered<T>,
    cx: &mut Cx<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>>
where
    for<'a> &'a T: Read + Write,
{
    let len = buf.len();
    io.poll_io(
        Direction::Read,
        cx,
        |s| (&*s).read(buf),
        |&n| T::SHORT_READ_DRAINS && n > 0 && n < len,
    )
}

pub(crate) fn poll_write<T: StdStream>(
    io: &Registered<T>,
    cx: &mut Cx<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>>
where
    for<'a> &'a T: Read + Write,
{
    io.poll_io(Direction::Write, cx, |s| (&*s).write(buf), |_| false)
}

pub(crate) fn poll_write_vectored<T: StdStream>(
    io: &Registered<T>,
    cx: &mut Cx<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>>
where
    for<'a> &'a T: Read + Write,
{
    io.poll_io(
        Direction::Write,
        cx,
        |s| (&*s).write_vectored(bufs),
        |_| false,
    )
}

/// `AsyncRead` and `AsyncWrite` for a stream type wrapping `Registered<$std>` in a field `io`,
/// on the type and on references to it, and its halves.
macro_rules! stream_io {
    ($stream:ident, $std:ty) => {
        // The stream and `&stream` read and write alike: two tasks may share one.
        $crate::net::stream::io_traits!(&$stream, read, stream => stream);
        $crate::net::stream::io_traits!(&$stream, write, stream => stream);
        $crate::net::stream::io_traits!($stream, read, stream => stream);
        $crate::net::stream::io_traits!($stream, write, stream => stream);

        impl $stream {
            /// Borrow the stream as a read half and a write half, for two tasks (or two
            /// futures joined) to use at once.
            pub fn split(&self) -> (ReadHalf<'_>, WriteHalf<'_>) {
                (ReadHalf(self), WriteHalf(self))
            }

            /// Split the stream into halves that own it (shared): each may move into a task of
            /// its own. Dropping the write half shuts the write side down (the peer reads the
            /// end of the stream); [`OwnedReadHalf::reunite`] puts them back together.
            pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
                let shared = std::sync::Arc::new(self);
                (
                    OwnedReadHalf(shared.clone()),
                    OwnedWriteHalf {
                        stream: shared,
                        shut_down_on_drop: true,
                    },
                )
            }
        }

        /// The read half of a borrowed stream: see `split`.
        #[derive(Debug)]
        pub struct ReadHalf<'a>(&'a $stream);

        /// The write half of a borrowed stream: see `split`.
        #[derive(Debug)]
        pub struct WriteHalf<'a>(&'a $stream);

        /// The read half of a stream, owning it with its write half: see `into_split`.
        #[derive(Debug)]
        pub struct OwnedReadHalf(std::sync::Arc<$stream>);

        /// The write half of a stream, owning it with its read half: see `into_split`.
        #[derive(Debug)]
        pub struct OwnedWriteHalf {
            stream: std::sync::Arc<$stream>,
            shut_down_on_drop: bool,
        }

        impl OwnedReadHalf {
            /// Put the stream back together, if `write` is this half's other half.
            pub fn reunite(self, mut write: OwnedWriteHalf) -> Result<$stream, ReuniteError> {
                if !std::sync::Arc::ptr_eq(&self.0, &write.stream) {
                    return Err(ReuniteError(self, write));
                }
                write.shut_down_on_drop = false;
                let stream = write.stream.clone();
                drop((self, write));
                match std::sync::Arc::try_unwrap(stream) {
                    Ok(stream) => Ok(stream),
                    Err(_) => unreachable!("both halves were dropped"),
                }
            }
        }

        impl OwnedWriteHalf {
            /// Drop this half without shutting the write side down.
            pub fn forget(mut self) {
                self.shut_down_on_drop = false;
            }
        }

        impl Drop for OwnedWriteHalf {
            fn drop(&mut self) {
                if self.shut_down_on_drop {
                    let _ = self.stream.shutdown(std::net::Shutdown::Write);
                }
            }
        }

        /// The halves given to `reunite` were not of one stream.
        #[derive(Debug)]
        pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

        impl std::fmt::Display for ReuniteError {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("tried to reunite halves that are not from the same stream")
            }
        }

        impl std::error::Error for ReuniteError {}

        $crate::net::stream::io_traits!(ReadHalf<'_>, read, half => half.0);
        $crate::net::stream::io_traits!(WriteHalf<'_>, write, half => half.0);
        $crate::net::stream::io_traits!(OwnedReadHalf, read, half => &*half.0);
        $crate::net::stream::io_traits!(OwnedWriteHalf, write, half => &*half.stream);
    };
}

/// `AsyncRead` (`read`) or `AsyncWrite` (`write`) for a stream, a reference to one or a half,
/// through the stream `$stream` computes from `$this`.
macro_rules! io_traits {
    ($half:ty, read, $this:ident => $stream:expr) => {
        impl futures_lite::io::AsyncRead for $half {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $this = &*self;
                let stream = $stream;
                $crate::net::stream::poll_read(&stream.io, cx, buf)
            }
        }
    };
    ($half:ty, write, $this:ident => $stream:expr) => {
        impl futures_lite::io::AsyncWrite for $half {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $this = &*self;
                let stream = $stream;
                $crate::net::stream::poll_write(&stream.io, cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $this = &*self;
                let stream = $stream;
                $crate::net::stream::poll_write_vectored(&stream.io, cx, bufs)
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }

            /// Shuts down the write side: the peer reads the end of the stream.
            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let $this = &*self;
                let stream = $stream;
                std::task::Poll::Ready(stream.shutdown(std::net::Shutdown::Write))
            }
        }
    };
}

pub(crate) use io_traits;
pub(crate) use stream_io;
