//! The operating system's readiness queue. Sources are registered once, edge-triggered where
//! the platform supports it, and one thread at a time waits for events.
//!
//! On Linux runner talks to epoll itself, through rustix's safe wrappers: one `epoll_wait` a
//! wait, and one `write` to an eventfd (registered edge-triggered, never read) to wake it from
//! another thread. smol's `polling`, which the other platforms use, re-arms a timerfd and its
//! notifier around every wait (`timerfd_settime`, a `read` and two `epoll_ctl`: five system
//! calls where one does), which was most of what async-io's reactor cost a server per request;
//! and it cannot ask for `EPOLLRDHUP`, which tells a read that the peer has shut down its side.
//! Without that, a read shorter than its buffer cannot be taken to mean "drained": the end of
//! the stream may already be waiting behind the data (see [`SHORT_READ_DRAINS`]).

use std::sync::atomic::{AtomicBool, Ordering};

/// What the driver registers: a socket's descriptor (Unix) or handle (Windows).
#[cfg(unix)]
pub(crate) use std::os::fd::AsFd as IoSource;
#[cfg(windows)]
pub(crate) use std::os::windows::io::AsSocket as IoSource;

/// The key of the poller's own wake-up source; sources use their slab keys.
pub(crate) const WAKE_KEY: usize = usize::MAX - 1;

/// Whether a read shorter than its buffer, on a stream, means the socket is drained (so its
/// readiness may be cleared without another read to see `WouldBlock`): where the poller reports
/// the peer's shutdown as readiness of its own that no clearing removes.
pub(crate) const SHORT_READ_DRAINS: bool = cfg!(target_os = "linux");

/// A readiness event: which source, and which directions.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Ready {
    pub(crate) key: usize,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// The peer shut down its side: reads give the end of the stream from now on.
    pub(crate) read_closed: bool,
    /// Urgent (out-of-band) data came: a read stops short at its mark with data still queued.
    pub(crate) urgent: bool,
    /// An error or hang-up: every direction is ready for good (the next operation says what
    /// happened).
    pub(crate) closed: bool,
}

#[cfg(target_os = "linux")]
pub(crate) use linux::Poller;
#[cfg(not(target_os = "linux"))]
pub(crate) use portable::Poller;

/// What a wait fills, kept between waits (on Linux, each waiting thread keeps its own).
pub(crate) struct EventBuffer {
    #[cfg(not(target_os = "linux"))]
    events: polling::Events,
}

impl EventBuffer {
    pub(crate) fn new() -> EventBuffer {
        EventBuffer {
            #[cfg(not(target_os = "linux"))]
            events: polling::Events::new(),
        }
    }
}

/// Wakes the waiting thread once per wait at most: a wake-up on its way makes another needless.
#[derive(Default)]
struct Notified(AtomicBool);

impl Notified {
    /// True if this wake-up must be sent.
    fn first(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }

    fn clear(&self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::{AsFd, OwnedFd};
    use std::time::Duration;

    use rustix::event::epoll::{self, EventData, EventFlags};
    use rustix::event::{eventfd, EventfdFlags, Timespec};

    use super::{IoSource, Notified, Ready, WAKE_KEY};

    /// How many events one wait takes at most.
    const CAPACITY: usize = 1024;

    thread_local! {
        /// The waiting thread's event buffer (an epoll event holds a pointer-sized union, so a
        /// buffer shared between threads would need `unsafe`).
        static EVENTS: RefCell<Vec<epoll::Event>> = RefCell::new(Vec::with_capacity(CAPACITY));
    }

    pub(crate) struct Poller {
        epoll: OwnedFd,
        wake: OwnedFd,
        notified: Notified,
    }

    impl Poller {
        pub(crate) fn new() -> io::Result<Poller> {
            let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
            let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
            let flags = EventFlags::IN | EventFlags::ET;
            epoll::add(&epoll, &wake, EventData::new_u64(WAKE_KEY as u64), flags)?;
            Ok(Poller {
                epoll,
                wake,
                notified: Notified::default(),
            })
        }

        /// Watch `source` under `key`, both directions and the peer's shutdown, edge-triggered.
        ///
        /// # Safety
        /// None here (the signature is the portable poller's): epoll holds the open file, not
        /// the descriptor, so a source closed while registered cannot confuse it.
        #[allow(unsafe_code)]
        pub(crate) unsafe fn add<S: IoSource>(&self, source: &S, key: usize) -> io::Result<()> {
            use EventFlags as F;
            let flags = F::IN | F::OUT | F::RDHUP | F::PRI | F::ET;
            Ok(epoll::add(
                &self.epoll,
                source.as_fd(),
                EventData::new_u64(key as u64),
                flags,
            )?)
        }

        /// Nothing to do: sources stay armed.
        pub(crate) fn rearm<S: IoSource>(&self, _: &S, _: usize, _: bool, _: bool) {}

        pub(crate) fn delete<S: IoSource>(&self, source: &S) -> io::Result<()> {
            Ok(epoll::delete(&self.epoll, source.as_fd())?)
        }

        /// Wake the thread waiting in `wait`, or the next one to wait: one eventfd write (an
        /// edge; the counter is never read, unless it is full).
        pub(crate) fn notify(&self) {
            if !self.notified.first() {
                return;
            }
            loop {
                match rustix::io::write(&self.wake, &1u64.to_ne_bytes()) {
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(rustix::io::Errno::AGAIN) => {
                        let mut drained = [0u8; 8];
                        let _ = rustix::io::read(&self.wake, &mut drained);
                    }
                    _ => return,
                }
            }
        }

        /// One `epoll_wait`, at most `timeout` (none: until an event), pushing the events to
        /// `out`. A signal that interrupts it makes it return, never an error.
        pub(crate) fn wait(
            &self,
            _: &mut super::EventBuffer,
            timeout: Option<Duration>,
            out: &mut Vec<Ready>,
        ) -> io::Result<()> {
            // Whole milliseconds, rounded up (a timer is never woken for early, which would
            // spin), so that rustix makes it one `epoll_pwait`.
            let timeout = timeout.map(|t| {
                let ms = t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i64;
                Timespec {
                    tv_sec: ms / 1000,
                    tv_nsec: (ms % 1000) * 1_000_000,
                }
            });
            let waited = EVENTS.with(|list| {
                let mut list = list.borrow_mut();
                list.clear();
                let spare = rustix::buffer::spare_capacity(&mut *list);
                match epoll::wait(self.epoll.as_fd(), spare, timeout.as_ref()) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(err) => return Err(io::Error::from(err)),
                }
                for ev in list.iter() {
                    let key = ev.data.u64() as usize;
                    if key != WAKE_KEY {
                        out.push(ready(key, ev.flags));
                    }
                }
                Ok(())
            });
            self.notified.clear();
            waited
        }
    }

    fn ready(key: usize, flags: EventFlags) -> Ready {
        use EventFlags as F;
        let closed = flags.intersects(F::ERR | F::HUP);
        Ready {
            key,
            readable: flags.intersects(F::IN | F::PRI),
            writable: flags.intersects(F::OUT),
            read_closed: flags.intersects(F::RDHUP),
            urgent: flags.intersects(F::PRI),
            closed,
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod portable {
    use std::io;
    use std::time::Duration;

    use polling::{Event, PollMode};

    use super::{IoSource, Notified, Ready};

    pub(crate) struct Poller {
        poller: polling::Poller,
        /// Sources are registered edge-triggered; else one-shot, and re-armed before a wait.
        edge: bool,
        notified: Notified,
    }

    impl Poller {
        pub(crate) fn new() -> io::Result<Poller> {
            let poller = polling::Poller::new()?;
            let edge = poller.supports_edge();
            Ok(Poller {
                poller,
                edge,
                notified: Notified::default(),
            })
        }

        /// Watch `source` under `key`, both directions.
        ///
        /// # Safety
        /// `source` must stay open until it is deleted (`polling`'s rule).
        #[allow(unsafe_code)]
        pub(crate) unsafe fn add<S: IoSource>(&self, source: &S, key: usize) -> io::Result<()> {
            let mode = match self.edge {
                true => PollMode::Edge,
                false => PollMode::Oneshot,
            };
            #[cfg(unix)]
            let raw = std::os::fd::AsRawFd::as_raw_fd(&source.as_fd());
            #[cfg(windows)]
            let raw = std::os::windows::io::AsRawSocket::as_raw_socket(&source.as_socket());
            // SAFETY: the caller keeps `source` open until it is deleted.
            unsafe { self.poller.add_with_mode(raw, Event::all(key), mode) }
        }

        /// One-shot platforms: ask again for the directions wanted.
        pub(crate) fn rearm<S: IoSource>(&self, source: &S, key: usize, read: bool, write: bool) {
            if self.edge {
                return;
            }
            let interest = match (read, write) {
                (true, true) => Event::all(key),
                (true, false) => Event::readable(key),
                (false, true) => Event::writable(key),
                (false, false) => return,
            };
            let _ = self
                .poller
                .modify_with_mode(source, interest, PollMode::Oneshot);
        }

        pub(crate) fn delete<S: IoSource>(&self, source: &S) -> io::Result<()> {
            self.poller.delete(source)
        }

        pub(crate) fn notify(&self) {
            if self.notified.first() {
                let _ = self.poller.notify();
            }
        }

        pub(crate) fn wait(
            &self,
            buffer: &mut super::EventBuffer,
            timeout: Option<Duration>,
            out: &mut Vec<Ready>,
        ) -> io::Result<()> {
            buffer.events.clear();
            let waited = match self.poller.wait(&mut buffer.events, timeout) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
                Err(e) => Err(e),
            };
            self.notified.clear();
            for ev in buffer.events.iter() {
                let closed = ev.is_err().unwrap_or(false);
                out.push(Ready {
                    key: ev.key,
                    readable: ev.readable,
                    writable: ev.writable,
                    read_closed: false,
                    urgent: false,
                    closed,
                });
            }
            waited
        }
    }
}
