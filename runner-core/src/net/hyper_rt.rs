//! hyper's own I/O traits (`hyper::rt::Read` and `hyper::rt::Write`) on runner's streams, with
//! the `hyper` feature: a stream goes to `hyper::server::conn::http1::Builder::serve_connection`
//! as it is, with no adapter.
//!
//! They do what an adapter from `futures-io` cannot: a read goes straight into hyper's
//! uninitialised buffer (an adapter must zero it first, 8 KiB or more at every read), and
//! writes are vectored (hyper then sends a response's head and body in one `writev`, without
//! copying the body). See docs/performance.md for what this measured.

use std::io;
use std::task::{Context as Cx, Poll};

use crate::driver::source::Direction;
use crate::net::registered::Registered;
use crate::net::stream::StdStream;

/// Read into what is left of hyper's buffer. As for `AsyncRead`, a short read means the socket
/// is drained.
pub(crate) fn poll_read<T: StdStream>(
    io: &Registered<T>,
    cx: &mut Cx<'_>,
    mut buf: hyper::rt::ReadBufCursor<'_>,
) -> Poll<io::Result<()>>
where
    for<'a> &'a T: io::Read + io::Write,
{
    let len = buf.remaining();
    io.poll_io(
        Direction::Read,
        cx,
        |s| read_into(s, &mut buf),
        |&n| T::SHORT_READ_DRAINS && n > 0 && n < len,
    )
    .map_ok(|_| ())
}

/// `recv` into the cursor's unfilled part, which may be uninitialised, and advance the cursor
/// over what was received: the bytes received.
#[cfg(unix)]
fn read_into<T: StdStream>(stream: &T, buf: &mut hyper::rt::ReadBufCursor<'_>) -> io::Result<usize>
where
    for<'a> &'a T: io::Read + io::Write,
{
    // SAFETY: the slice is only written to, by `recv`, which never de-initialises bytes.
    #[allow(unsafe_code)]
    let unfilled = unsafe { buf.as_mut() };
    let ((received, _), _) = rustix::net::recv(stream, unfilled, rustix::net::RecvFlags::empty())?;
    let n = received.len();
    // SAFETY: `recv` initialised the first `n` bytes of the unfilled part (rustix hands back
    // exactly those as `received`).
    #[allow(unsafe_code)]
    unsafe {
        buf.advance(n)
    };
    Ok(n)
}

/// Where there is no `recv` into uninitialised memory: read into zeroed bytes, then copy.
#[cfg(not(unix))]
fn read_into<T: StdStream>(stream: &T, buf: &mut hyper::rt::ReadBufCursor<'_>) -> io::Result<usize>
where
    for<'a> &'a T: io::Read + io::Write,
{
    let mut bytes = vec![0; buf.remaining().min(64 * 1024)];
    let n = io::Read::read(&mut &*stream, &mut bytes)?;
    buf.put_slice(&bytes[..n]);
    Ok(n)
}

/// `hyper::rt::Read` and `hyper::rt::Write` for a stream type wrapping `Registered<$std>` in a
/// field `io`.
macro_rules! hyper_io {
    ($stream:ident) => {
        impl hyper::rt::Read for $stream {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: hyper::rt::ReadBufCursor<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                $crate::net::hyper_rt::poll_read(&self.io, cx, buf)
            }
        }

        impl hyper::rt::Write for $stream {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                $crate::net::stream::poll_write(&self.io, cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                $crate::net::stream::poll_write_vectored(&self.io, cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }

            /// Shuts down the write side: the peer reads the end of the stream.
            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(self.shutdown(std::net::Shutdown::Write))
            }
        }
    };
}

pub(crate) use hyper_io;
