//! `block_on` for a loop's threads: run a future, and when it has nothing to do, wait on the
//! loop's reactor (for I/O, or the next timer) until something wakes it.
//!
//! A loop with a socket of runner's own waits on its poller. A loop without one waits inside
//! `async_io::block_on`, which drives async-io's reactor from this thread meanwhile: a server on
//! async-io's sockets (async-net, smol's crates) is then served as fast as it was on async-io
//! alone, not through async-io's own thread. (A loop that never waits never touches async-io.)
//!
//! A thread's waker is cached, as `async_io::block_on` caches its parker: the main task keeps
//! the first waker it is polled with. Waking a thread costs what its wait needs: nothing while
//! it runs (a flag), an eventfd write while it waits on the poller, async-io's wake-up inside
//! `async_io::block_on`, a futex wake while it is parked.

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
/// Waiting inside `async_io::block_on`.
const WAITING_ASYNC_IO: u8 = 4;

/// How many busy iterations (each up to a batch of tasks) may pass before a busy thread looks
/// at I/O without waiting: so that I/O is never starved however busy the loop is.
const IO_EVERY: u32 = 1;

struct Parker {
    state: AtomicU8,
    thread: Thread,
    /// What a wake-up must poke while this thread waits: the poller it waits on, or the waker
    /// of the `async_io::block_on` it waits in. Emptied when the wait ends: the parker is the
    /// thread's, and outlives loops.
    waiting_on: Mutex<WaitingOn>,
}

#[derive(Default)]
enum WaitingOn {
    #[default]
    Nothing,
    Io(Arc<Driver>),
    AsyncIo(Waker),
}

impl Wake for Parker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self.state.swap(NOTIFIED, Ordering::AcqRel) {
            PARKED => self.thread.unpark(),
            WAITING_IO | WAITING_ASYNC_IO => match &*lock(&self.waiting_on) {
                WaitingOn::Io(io) => io.notify(),
                WaitingOn::AsyncIo(waker) => waker.wake_by_ref(),
                WaitingOn::Nothing => {}
            },
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
                    waiting_on: Mutex::default(),
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
        match reactor.io_if_made() {
            Some(io) => park_on_io(&parker, io, next),
            None => park_in_async_io(&parker, next),
        }
        fire_timers(reactor);
    }
}

/// Wake the timers due now; the next deadline.
fn fire_timers(reactor: &Reactor) -> Option<Instant> {
    reactor.timers.next_deadline()?;
    reactor.timers.fire(Instant::now())
}

/// Note what a wake-up must poke (`on`) while the guard lives; forgotten on drop.
struct Waiting<'a>(&'a Mutex<WaitingOn>);

impl<'a> Waiting<'a> {
    fn on(parker: &'a Parker, on: WaitingOn) -> Waiting<'a> {
        *lock(&parker.waiting_on) = on;
        Waiting(&parker.waiting_on)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let was = std::mem::take(&mut *lock(self.0));
        drop(was);
    }
}

/// Move from running to `waiting`; false if woken meanwhile.
fn start_waiting(parker: &Parker, waiting: u8) -> bool {
    parker
        .state
        .compare_exchange(RUNNING, waiting, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// Wait on the loop's poller until woken or `deadline`, or park if another thread waits on it.
fn park_on_io(parker: &Parker, io: &Arc<Driver>, deadline: Option<Instant>) {
    let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    if timeout == Some(Duration::ZERO) {
        return;
    }
    let _waiting = Waiting::on(parker, WaitingOn::Io(io.clone()));
    if !start_waiting(parker, WAITING_IO) {
        return;
    }
    let awake = || {
        // Back from the wait: wake-ups made while the events are delivered (to this thread's
        // own tasks, mostly) need no notification.
        let _ =
            parker
                .state
                .compare_exchange(WAITING_IO, RUNNING, Ordering::AcqRel, Ordering::Acquire);
    };
    if io.turn(timeout, awake) {
        return;
    }
    // Another thread waits on the poller: park instead.
    if parker
        .state
        .compare_exchange(WAITING_IO, PARKED, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        park_thread(parker, deadline);
    }
}

/// Wait inside `async_io::block_on` until woken or `deadline`, driving async-io's reactor.
fn park_in_async_io(parker: &Parker, deadline: Option<Instant>) {
    if deadline.is_some_and(|d| d <= Instant::now()) {
        return;
    }
    let mut timer = deadline.map(async_io::Timer::at);
    let waiting = std::future::poll_fn(|cx| {
        if parker.state.load(Ordering::Acquire) == NOTIFIED {
            return Poll::Ready(());
        }
        *lock(&parker.waiting_on) = WaitingOn::AsyncIo(cx.waker().clone());
        if parker.state.load(Ordering::Acquire) == NOTIFIED {
            return Poll::Ready(());
        }
        match &mut timer {
            Some(timer) => std::pin::Pin::new(timer).poll(cx).map(|_| ()),
            None => Poll::Pending,
        }
    });
    let _waiting = Waiting::on(parker, WaitingOn::Nothing);
    if start_waiting(parker, WAITING_ASYNC_IO) {
        async_io::block_on(waiting);
    }
}

/// Park this thread until woken or `deadline`, when there is no reactor to wait on.
fn park(parker: &Parker, _: Option<&Arc<Driver>>, deadline: Option<Instant>) {
    if start_waiting(parker, PARKED) {
        park_thread(parker, deadline);
    }
}

/// Parked (`PARKED` already): until woken or `deadline`.
fn park_thread(parker: &Parker, deadline: Option<Instant>) {
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
