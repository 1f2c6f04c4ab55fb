//! `block_on` for a loop's threads: run a future, and when it has nothing to do, wait on the
//! loop's reactor (for I/O, or the next timer) or park, until something wakes it.
//!
//! A thread's waker is cached, as `async_io::block_on` caches its parker: the main task keeps
//! the first waker it is polled with. Waking a thread costs what its parking needs: nothing
//! while it runs (a flag), an eventfd write while it waits on the poller, a futex wake while it
//! is parked.

use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as Cx, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::driver::io::Driver;
use crate::driver::{Reactor, ReactorHome};
use crate::lock::lock;

/// The thread runs (a wake-up only leaves a mark).
const RUNNING: u8 = 0;
/// Woken while running: poll again before parking.
const NOTIFIED: u8 = 1;
/// Parked in `thread::park`.
const PARKED: u8 = 2;
/// Waiting on the poller.
const WAITING_IO: u8 = 3;

/// How many busy iterations (each up to a batch of tasks) may pass before a busy thread looks
/// at I/O without waiting: so that I/O is never starved however busy the loop is.
const IO_EVERY: u32 = 1;

struct Parker {
    state: AtomicU8,
    thread: Thread,
    /// The driver this thread waits on while it does, for a wake-up to notify.
    io: Mutex<Option<Arc<Driver>>>,
}

impl Wake for Parker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self.state.swap(NOTIFIED, Ordering::AcqRel) {
            PARKED => self.thread.unpark(),
            WAITING_IO => {
                let io = lock(&self.io).clone();
                if let Some(io) = io {
                    io.notify();
                }
            }
            _ => {}
        }
    }
}

thread_local! {
    /// This thread's parker and its waker, made at the first `block_on`.
    static PARKER: RefCell<Option<(Arc<Parker>, Waker)>> = const { RefCell::new(None) };
    /// The reactor of the `block_on` running on this thread.
    static CURRENT: RefCell<Option<Arc<dyn ReactorHome>>> = const { RefCell::new(None) };
}

/// The reactor of the `block_on` running on this thread, if any.
pub(crate) fn current() -> Option<Arc<dyn ReactorHome>> {
    CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
}

/// Makes a reactor current for a `block_on`; puts the previous one back on drop.
struct Enter(Option<Arc<dyn ReactorHome>>);

impl Drop for Enter {
    fn drop(&mut self) {
        let prev = self.0.take();
        let _ = CURRENT.try_with(|c| *c.borrow_mut() = prev);
    }
}

fn parker() -> (Arc<Parker>, Waker) {
    PARKER.with(|p| {
        p.borrow_mut()
            .get_or_insert_with(|| {
                let parker = Arc::new(Parker {
                    state: AtomicU8::new(RUNNING),
                    thread: thread::current(),
                    io: Mutex::new(None),
                });
                let waker = Waker::from(parker.clone());
                (parker, waker)
            })
            .clone()
    })
}

/// Run `fut` on this thread until it completes, waiting on `home`'s reactor (none: parking)
/// whenever it has nothing to do. `home` is the current reactor meanwhile.
pub(crate) fn block_on<F: Future>(home: Option<Arc<dyn ReactorHome>>, fut: F) -> F::Output {
    let (parker, waker) = parker();
    let _enter = Enter(CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), home.clone())));
    let reactor = home.as_deref().map(ReactorHome::reactor);
    let mut cx = Cx::from_waker(&waker);
    let mut fut = pin!(fut);
    let mut busy = 0;
    loop {
        parker.state.store(RUNNING, Ordering::Release);
        if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            return output;
        }
        let Some(reactor) = reactor else {
            park(&parker, None, None);
            continue;
        };
        let next = fire_timers(reactor);
        if parker.state.load(Ordering::Acquire) == NOTIFIED {
            // More to do: look at I/O now and then without waiting, then go on.
            busy += 1;
            if busy >= IO_EVERY {
                busy = 0;
                if let Some(io) = reactor.io_if_made() {
                    io.turn(Some(Duration::ZERO), || {});
                }
            }
            continue;
        }
        busy = 0;
        park(&parker, reactor.io_if_made(), next);
        fire_timers(reactor);
    }
}

/// Wake the timers due now; the next deadline.
fn fire_timers(reactor: &Reactor) -> Option<Instant> {
    reactor.timers.next_deadline()?;
    reactor.timers.fire(Instant::now())
}

/// Wait until woken or `deadline`: on `io` if given and no other thread waits on it, else
/// parked.
fn park(parker: &Parker, io: Option<&Arc<Driver>>, deadline: Option<Instant>) {
    let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    if timeout == Some(Duration::ZERO) {
        return;
    }
    if let Some(io) = io {
        *lock(&parker.io) = Some(io.clone());
        if parker
            .state
            .compare_exchange(RUNNING, WAITING_IO, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // woken meanwhile
        }
        let awake = || {
            // Back from the wait: wake-ups made while the events are delivered (to this
            // thread's own tasks, mostly) need no notification.
            let _ = parker.state.compare_exchange(
                WAITING_IO,
                RUNNING,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        };
        if io.turn(timeout, awake) {
            return;
        }
        // Another thread waits on the poller: park instead.
        if parker
            .state
            .compare_exchange(WAITING_IO, PARKED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
    } else if parker
        .state
        .compare_exchange(RUNNING, PARKED, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    loop {
        match deadline {
            None => thread::park(),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return;
                }
                thread::park_timeout(deadline - now);
            }
        }
        if parker.state.load(Ordering::Acquire) == NOTIFIED {
            return;
        }
    }
}
