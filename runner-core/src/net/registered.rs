//! A socket registered with its loop's I/O driver: the one way `runner::net`'s types do I/O.
//! An operation is tried when the driver has seen its direction ready; `WouldBlock` (or a read
//! shorter than asked, on a stream) clears that readiness (unless a newer event came meanwhile,
//! see `driver::source`), and the task waits for the next edge. So a drained socket is not read
//! again before data arrives, and a socket is registered once, not re-armed at every wait.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::{Context as Cx, Poll};

use crate::driver;
use crate::driver::io::Driver;
use crate::driver::poller::IoSource;
use crate::driver::source::{Direction, Source, Wait};

/// See the module documentation.
pub(crate) struct Registered<T: IoSource> {
    /// `None` only once taken back by `into_inner`.
    io: Option<T>,
    source: Arc<Source>,
    driver: Arc<Driver>,
}

/// The error of an operation on a socket whose runner has closed.
fn closed() -> io::Error {
    io::Error::other(
        "the runner this socket was made in has closed: its I/O driver is gone; make sockets in \
         the runner that uses them",
    )
}

/// The error of making a socket outside any runner.
pub(crate) fn outside() -> io::Error {
    io::Error::other(
        "runner::net sockets are made inside a runner (a task of runner::run, Runner::run or \
         #[runner::main], or a spawn_send task), whose loop drives their I/O",
    )
}

impl<T: IoSource> Registered<T> {
    /// Register `io`, which must be in non-blocking mode already, with the running loop's
    /// driver (made now if this is the loop's first socket).
    pub(crate) fn new(io: T) -> io::Result<Registered<T>> {
        let home = driver::current().ok_or_else(outside)?;
        let driver = home.reactor().io()?.clone();
        // SAFETY: `io` is kept by the value returned, which deregisters it before it lets go of
        // it (`Drop`, `into_inner`).
        #[allow(unsafe_code)]
        let source = unsafe { driver.register(&io)? };
        Ok(Registered {
            io: Some(io),
            source,
            driver,
        })
    }

    pub(crate) fn get_ref(&self) -> &T {
        match &self.io {
            Some(io) => io,
            None => unreachable!("the socket is taken only by into_inner, which consumes it"),
        }
    }

    /// Deregister, and give the socket back (still non-blocking).
    pub(crate) fn into_inner(mut self) -> T {
        let io = self
            .io
            .take()
            .expect("the socket is there until it is taken");
        self.driver.deregister(&self.source, &io);
        io
    }

    /// Run `op` when `direction` is ready, until it does not return `WouldBlock`. `short` says
    /// whether a result means the socket is drained (a read shorter than its buffer). For the
    /// `poll_*` methods: the task waits in the direction's slot (`Wait::Slot`).
    pub(crate) fn poll_io<R>(
        &self,
        direction: Direction,
        cx: &mut Cx<'_>,
        op: impl FnMut(&T) -> io::Result<R>,
        short: impl Fn(&R) -> bool,
    ) -> Poll<io::Result<R>> {
        self.poll_io_waiting(direction, Wait::Slot, cx, op, short)
    }

    fn poll_io_waiting<R>(
        &self,
        direction: Direction,
        mut wait: Wait<'_>,
        cx: &mut Cx<'_>,
        mut op: impl FnMut(&T) -> io::Result<R>,
        short: impl Fn(&R) -> bool,
    ) -> Poll<io::Result<R>> {
        let io = self.get_ref();
        loop {
            let wait_now = match &mut wait {
                Wait::Slot => Wait::Slot,
                Wait::Keyed(key) => Wait::Keyed(key),
            };
            let event = match self.source.poll_ready(direction, wait_now, cx) {
                Poll::Ready(event) => event,
                Poll::Pending => {
                    self.driver.rearm(&self.source, io);
                    return Poll::Pending;
                }
            };
            if event.is_shutdown {
                return Poll::Ready(Err(closed()));
            }
            match op(io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.source.clear(event),
                // A signal interrupted the call: EINTR never reaches the user.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(done) => {
                    if short(&done) {
                        self.source.clear_drained(event);
                    }
                    return Poll::Ready(Ok(done));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Run `op` when `direction` is ready, as a future: any number may wait at once, and one
    /// dropped before it is done leaves nothing behind.
    pub(crate) async fn io<R>(
        &self,
        direction: Direction,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        let mut waiting = Waiting::new(&self.source, direction);
        poll_fn(|cx| {
            let key = &mut waiting.key;
            self.poll_io_waiting(direction, Wait::Keyed(key), cx, &mut op, |_| false)
        })
        .await
    }

    /// Wait until the driver has seen `direction` ready, as a future (see [`io`](Self::io)).
    pub(crate) async fn ready(&self, direction: Direction) -> io::Result<()> {
        let mut waiting = Waiting::new(&self.source, direction);
        poll_fn(|cx| {
            match self
                .source
                .poll_ready(direction, Wait::Keyed(&mut waiting.key), cx)
            {
                Poll::Ready(event) if event.is_shutdown => Poll::Ready(Err(closed())),
                Poll::Ready(_) => Poll::Ready(Ok(())),
                Poll::Pending => {
                    self.driver.rearm(&self.source, self.get_ref());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// A future's place among the tasks waiting for a direction of a source: given up when the
/// future is dropped.
struct Waiting<'a> {
    source: &'a Source,
    direction: Direction,
    key: Option<u64>,
}

impl<'a> Waiting<'a> {
    fn new(source: &'a Source, direction: Direction) -> Waiting<'a> {
        Waiting {
            source,
            direction,
            key: None,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.source.forget(self.direction, key);
        }
    }
}

impl<T: IoSource> Drop for Registered<T> {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            // Deregistered before it is closed (`register`'s contract).
            self.driver.deregister(&self.source, &io);
            drop(io);
        }
    }
}
