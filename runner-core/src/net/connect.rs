//! Connecting without blocking a thread: a non-blocking socket, `connect` (which returns at
//! once, in progress), then a wait for the socket to be writable, and its error, if any.

use std::io;
use std::net::SocketAddr;

#[cfg(unix)]
use std::os::fd::OwnedFd;

use crate::driver::source::Direction;
use crate::net::registered::Registered;

/// A new non-blocking, close-on-exec stream socket of `family`.
#[cfg(unix)]
fn stream_socket(family: rustix::net::AddressFamily) -> io::Result<OwnedFd> {
    use rustix::net::{socket_with, SocketFlags, SocketType};
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        Ok(socket_with(
            family,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )?)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let fd = socket_with(family, SocketType::STREAM, SocketFlags::empty(), None)?;
        rustix::io::ioctl_fionbio(&fd, true)?;
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
        Ok(fd)
    }
}

/// Start connecting `fd` to `addr`: done, or in progress.
#[cfg(unix)]
fn start(fd: &OwnedFd, addr: &impl rustix::net::addr::SocketAddrArg) -> io::Result<()> {
    loop {
        match rustix::net::connect(fd, addr) {
            Ok(()) | Err(rustix::io::Errno::INPROGRESS) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
}

/// Wait until the connection `io` started is made (writable), then its outcome.
async fn finish<T: crate::driver::poller::IoSource>(
    io: &Registered<T>,
    error: impl Fn(&T) -> io::Result<Option<io::Error>>,
) -> io::Result<()> {
    io.ready(Direction::Write).await?;
    match error(io.get_ref())? {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// A TCP connection to `addr`.
pub(crate) async fn tcp(addr: SocketAddr) -> io::Result<Registered<std::net::TcpStream>> {
    #[cfg(unix)]
    let stream = {
        use rustix::net::AddressFamily;
        let family = match addr {
            SocketAddr::V4(_) => AddressFamily::INET,
            SocketAddr::V6(_) => AddressFamily::INET6,
        };
        let fd = stream_socket(family)?;
        start(&fd, &addr)?;
        std::net::TcpStream::from(fd)
    };
    #[cfg(not(unix))]
    let stream = {
        // No non-blocking connect here: connect, then go non-blocking.
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nonblocking(true)?;
        stream
    };
    let io = Registered::new(stream)?;
    finish(&io, |s| s.take_error()).await?;
    // Writable with no error, yet not connected (a refused connection on some systems).
    io.get_ref().peer_addr()?;
    Ok(io)
}

/// A Unix stream connection to the socket at `path`.
#[cfg(unix)]
pub(crate) async fn unix(
    path: &std::path::Path,
) -> io::Result<Registered<std::os::unix::net::UnixStream>> {
    let addr = rustix::net::SocketAddrUnix::new(path)?;
    let fd = stream_socket(rustix::net::AddressFamily::UNIX)?;
    start(&fd, &addr)?;
    let io = Registered::new(std::os::unix::net::UnixStream::from(fd))?;
    finish(&io, |s| s.take_error()).await?;
    Ok(io)
}
