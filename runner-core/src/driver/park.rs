//! `block_on` for a loop's threads: run a future, and when it has nothing to do, wait on the
//! loop's reactor (for I/O, or the next timer) until something wakes it.
//!
//! A loop with a socket of runner's own waits on its poller. Until it has one, it runs inside
//! `async_io::block_on`, which drives async-io's reactor from this thread whenever the loop
//! waits: a server on async-io's sockets (async-net, smol's crates) is then served as fast as
//! on async-io alone, not through async-io's own thread.
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

use crate::driver::io::{Driver, JustLook, WaitHooks, Waiter};
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
    /// This thread is delivering events or firing timers (see [`delivering`]).
    static DELIVERING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// This thread's parker and its waker, made at the first `block_on`.
    static PARKER: RefCell<Option<(Arc<Parker>, Waker)>> = const { RefCell::new(None) };
    /// The reactor of the `block_on` running on this thread.
    static CURRENT: RefCell<Option<Arc<dyn ReactorHome>>> = const { RefCell::new(None) };
}

/// True while this thread delivers I/O events or fires timers, between polls of its future:
/// the tasks that wake now are run by this thread as soon as it is done (the pool's scheduler
/// wakes no other worker for them).
pub(crate) fn delivering() -> bool {
    DELIVERING.try_with(std::cell::Cell::get).unwrap_or(false)
}

/// Marks this thread as delivering while it lives (see [`delivering`]).
struct Delivering;

impl Delivering {
    fn enter() -> Delivering {
        let _ = DELIVERING.try_with(|d| d.set(true));
        Delivering
    }
}

impl Drop for Delivering {
    fn drop(&mut self) {
        let _ = DELIVERING.try_with(|d| d.set(false));
    }
}

/// The reactor of the `block_on` running on this thread, if any.
pub(crate) fn current() -> Option<Arc<dyn ReactorHome>> {
    CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
}

/// True if `home` is the reactor of the `block_on` running on this thread.
pub(crate) fn is_current(home: &Arc<dyn ReactorHome>) -> bool {
    CURRENT
        .try_with(|c| {
            c.borrow()
                .as_ref()
                .is_some_and(|current| std::ptr::addr_eq(Arc::as_ptr(current), Arc::as_ptr(home)))
        })
        .unwrap_or(false)
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
pub(crate) fn block_on<F: Future>(
    home: Option<Arc<dyn ReactorHome>>,
    who: Waiter,
    fut: F,
) -> F::Output {
    let (parker, waker) = parker();
    let _enter = Enter(CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), home.clone())));
    let mut cx = Cx::from_waker(&waker);
    let mut fut = pin!(fut);
    let Some(reactor) = home.as_deref().map(ReactorHome::reactor) else {
        loop {
            parker.state.store(RUNNING, Ordering::Release);
            if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
                return output;
            }
            if start_waiting(&parker, PARKED) {
                park_thread(&parker, None);
            }
        }
    };
    let mut busy = 0;
    loop {
        parker.state.store(RUNNING, Ordering::Release);
        if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            return output;
        }
        let next = fire_timers(reactor);
        let notified = parker.state.load(Ordering::Acquire) == NOTIFIED;
        let Some(io) = reactor.io_if_made() else {
            // No socket of runner's own yet: wait in async-io's reactor (made at the first
            // such wait only), until done or until the loop makes a driver of its own.
            if !notified {
                if let Some(output) = run_in_async_io(&parker, reactor, fut.as_mut(), &mut cx) {
                    return output;
                }
            }
            continue;
        };
        if notified {
            // More to do: look at I/O now and then without waiting, then go on.
            busy += 1;
            if busy >= IO_EVERY {
                busy = 0;
                let _delivering = Delivering::enter();
                io.turn(Some(Duration::ZERO), who, JustLook);
            }
            continue;
        }
        busy = 0;
        park_on_io(&parker, io, who, next);
        fire_timers(reactor);
    }
}

/// `block_on` while the loop has no driver of its own: run inside one `async_io::block_on`,
/// which drives async-io's reactor from this thread whenever `fut` waits, and looks at it
/// without waiting between busy batches. Staying inside it matters: each `async_io::block_on`
/// that returns wakes async-io's own thread, which then takes the reactor from this one.
/// `None` when the loop made its own driver meanwhile: the caller goes on with that.
fn run_in_async_io<F: Future>(
    parker: &Parker,
    reactor: &Reactor,
    mut fut: std::pin::Pin<&mut F>,
    cx: &mut Cx<'_>,
) -> Option<F::Output> {
    let mut timer = async_io::Timer::never();
    let mut armed = None;
    let mut waiting = None;
    async_io::block_on(std::future::poll_fn(|acx| loop {
        parker.state.store(RUNNING, Ordering::Release);
        if let Poll::Ready(output) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        let next = fire_timers(reactor);
        if reactor.io_if_made().is_some() {
            return Poll::Ready(None);
        }
        if parker.state.load(Ordering::Acquire) == NOTIFIED {
            // More to do: async-io's `block_on`, woken, looks at I/O without waiting first.
            acx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // async-io's waker is the same for the whole `block_on`: noted once.
        waiting.get_or_insert_with(|| Waiting::on(parker, WaitingOn::AsyncIo(acx.waker().clone())));
        // The next timer's deadline, as an async-io timer (re-armed only when it changes).
        if next != armed {
            armed = next;
            match next {
                Some(deadline) => timer.set_at(deadline),
                None => timer = async_io::Timer::never(),
            }
        }
        if armed.is_some() && std::pin::Pin::new(&mut timer).poll(acx).is_ready() {
            armed = None;
            continue;
        }
        if start_waiting(parker, WAITING_ASYNC_IO) {
            return Poll::Pending;
        }
    }))
}

/// Wake the timers due now; the next deadline.
fn fire_timers(reactor: &Reactor) -> Option<Instant> {
    reactor.timers.next_deadline()?;
    let _delivering = Delivering::enter();
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

impl WaitHooks for &Parker {
    fn woken(&self) -> bool {
        self.state.load(Ordering::Acquire) == NOTIFIED
    }

    fn awake(&self) {
        // Back from the wait: wake-ups made while the events are delivered (to this thread's
        // own tasks, mostly) need no notification.
        let _ =
            self.state
                .compare_exchange(WAITING_IO, RUNNING, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Wait on the loop's poller until woken or `deadline`, or park if another thread waits on it.
fn park_on_io(parker: &Parker, io: &Arc<Driver>, who: Waiter, deadline: Option<Instant>) {
    let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    if timeout == Some(Duration::ZERO) {
        return;
    }
    let _waiting = Waiting::on(parker, WaitingOn::Io(io.clone()));
    if !start_waiting(parker, WAITING_IO) {
        return;
    }
    let turned = {
        let _delivering = Delivering::enter();
        io.turn(timeout, who, parker)
    };
    if turned {
        return;
    }
    // Another thread waits on the poller (or a worker wants to): park instead.
    if parker
        .state
        .compare_exchange(WAITING_IO, PARKED, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
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
