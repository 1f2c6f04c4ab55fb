//! runner's own I/O driver and timers: what a loop's threads wait on when they have nothing to
//! run. Layers, each file importing only from those above it in this list: `poller` (the
//! operating system's readiness queue, through smol's `polling`), `source` (one registered
//! socket's readiness, with a tick), `io` (the loop's poller and its sources: who waits, and
//! delivering events), `timers` (the loop's deadlines), `park` (`block_on`: running a future on
//! a thread that waits on the driver, or parks, when it is idle).
//!
//! Each loop has one [`Reactor`]: its timers, and its I/O driver, made when the first socket is
//! registered (a poller costs system calls, which a loop that does no I/O should not pay). The
//! loop's thread and its worker threads share it: whichever of them goes idle first waits for
//! events, with the earliest timer's deadline as its timeout; the others park until woken. A
//! thread that stays busy still looks at I/O and timers between batches of tasks (`park`).

pub(crate) mod io;
pub(crate) mod park;
pub(crate) mod poller;
pub(crate) mod source;
pub(crate) mod timers;

use std::sync::{Arc, OnceLock};

use crate::driver::io::Driver;
use crate::driver::timers::Timers;

/// A loop's timers and I/O driver. See the module documentation.
pub(crate) struct Reactor {
    pub(crate) timers: Timers,
    io: OnceLock<Result<Arc<Driver>, std::io::ErrorKind>>,
}

impl Reactor {
    pub(crate) fn new() -> Reactor {
        Reactor {
            timers: Timers::new(),
            io: OnceLock::new(),
        }
    }

    /// The I/O driver, made now if it was not yet.
    pub(crate) fn io(&self) -> std::io::Result<&Arc<Driver>> {
        let made = self
            .io
            .get_or_init(|| Driver::new().map(Arc::new).map_err(|e| e.kind()));
        made.as_ref().map_err(|&kind| {
            std::io::Error::new(kind, "runner could not make its I/O driver (a poller)")
        })
    }

    /// The I/O driver, if a socket was ever registered.
    pub(crate) fn io_if_made(&self) -> Option<&Arc<Driver>> {
        self.io.get().and_then(|made| made.as_ref().ok())
    }

    /// The loop is closing: sockets' operations fail from now on.
    pub(crate) fn shutdown(&self) {
        if let Some(io) = self.io_if_made() {
            io.shutdown();
        }
    }
}

/// What keeps a loop's reactor alive (the loop's cross-thread queue): sockets and timers hold
/// one, so that they can reach their reactor from any thread.
pub(crate) trait ReactorHome: Send + Sync {
    fn reactor(&self) -> &Reactor;
}

/// The reactor of the loop whose thread (or worker thread) this is, while it runs.
pub(crate) fn current() -> Option<Arc<dyn ReactorHome>> {
    park::current()
}

/// True if `home` is the reactor of the loop running on this thread.
pub(crate) fn is_current(home: &Arc<dyn ReactorHome>) -> bool {
    park::is_current(home)
}
