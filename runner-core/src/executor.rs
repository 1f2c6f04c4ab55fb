//! The loop's task executor: a first-in first-out run queue of `async_task` runnables, run on
//! the loop's thread inside runner's `block_on` (`driver::park`).
//!
//! ```
//! // Internal: every task spawned on a loop runs here.
//! let lp = runner_core::EventLoop::new();
//! let a = lp.spawn(async { 1 });
//! let b = lp.spawn(async { 2 });
//! let sum = lp.run_until_complete(async { a.await.unwrap() + b.await.unwrap() });
//! assert_eq!(sum.unwrap(), 3);
//! ```
//!
//! Why not `async_executor::LocalExecutor`: it is the multi-thread `Executor` behind a `!Send`
//! front, so every wake-up goes through a lock-free concurrent queue and every spawn locks a
//! mutex to record the task. A loop runs on one thread. Here a task woken on that thread (the
//! common case) is pushed onto a plain `VecDeque` in a thread-local, with no atomic operation;
//! only wake-ups from other threads take a lock (see `queue`). That cut the cost of a task and
//! of a yield by about 600 and 350 instructions (callgrind), more than everything runner adds
//! around a poll.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as Cx, Poll, Waker};
use std::time::Duration;

use crate::header::{Header, Runnable};
use crate::queue::{Inbox, Local, Remote, LOCAL};

/// How many runnables one tick runs before it lets `block_on` look at I/O and timers.
const BUDGET: usize = 128;

/// How long close waits for a wake-up another thread has started but not finished (the task is
/// marked scheduled, its runnable not queued yet): a few instructions on a running thread, so
/// only a thread descheduled at that moment takes long.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);

/// A single-thread executor for `!Send` futures.
pub(crate) struct Executor {
    remote: Arc<Remote>,
    /// The local queue while the executor is not running (tasks carry over between runs).
    parked: RefCell<VecDeque<Runnable>>,
    /// `close` has torn the tasks down for good: the cross-thread queue refuses runnables
    /// since (`Remote::tear_down`), so a later close (the drop's) need not lock it again.
    torn_down: Cell<bool>,
}

thread_local! {
    /// The waker runs' main futures are polled with (see [`MainWaker`]), kept for the next runs
    /// on this thread: `block_on` keeps its own waker per thread too, so this is made once.
    static MAIN_WAKER: Cell<Option<(Arc<MainWaker>, Waker)>> = const { Cell::new(None) };
}

/// The main future's waker: marks it woken, then wakes `block_on`. `Run` polls the main future
/// only when it was woken, not whenever a task wakes `block_on`: a main future that is an accept
/// loop would otherwise retry `accept` (a system call) on every wake-up of every connection.
struct MainWaker {
    woken: AtomicBool,
    block_on: Waker,
}

impl std::task::Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.block_on.wake_by_ref();
    }
}

/// What [`Executor::close`] did.
#[derive(Debug)]
pub(crate) struct CloseOutcome {
    /// Some task could not be reached: woken elsewhere and never queued within the wait.
    pub(crate) unreached: bool,
}

impl Executor {
    pub(crate) fn new() -> Executor {
        Executor {
            remote: Remote::new(),
            parked: RefCell::default(),
            torn_down: Cell::new(false),
        }
    }

    /// Spawn the future `make` builds from the task's header (kept in the task's allocation:
    /// one allocation per task); the runnable is returned unscheduled.
    pub(crate) fn spawn<F, Fut>(
        &self,
        header: Header,
        make: F,
    ) -> (Runnable, async_task::Task<Fut::Output, Header>)
    where
        F: FnOnce(&Header) -> Fut,
        Fut: Future + 'static,
        Fut::Output: 'static,
    {
        let remote = self.remote.clone();
        async_task::Builder::new()
            .metadata(header)
            .spawn_local(make, move |r| remote.schedule(r))
    }

    /// The `Send` way in, from any thread.
    pub(crate) fn inbox(&self) -> Inbox {
        Inbox::new(self.remote.clone())
    }

    /// A future that polls `main`, and runs the queued tasks between its polls, until `main`
    /// completes. Drive it with `driver::park::block_on`.
    pub(crate) fn run<F: Future>(&self, main: F) -> Run<'_, F> {
        Run {
            active: ActiveGuard::enter(self),
            main,
        }
    }

    /// The waker for a run's main future under `block_on`'s waker `cx`, marked woken so that
    /// the run's first poll polls it.
    ///
    /// It is moved out of `MAIN_WAKER` and back when the run ends (`ActiveGuard`), not cloned:
    /// two reference counts fewer per run.
    fn main_waker(cx: &Waker) -> (Arc<MainWaker>, Waker) {
        let cached = MAIN_WAKER.try_with(|cached| cached.take()).ok().flatten();
        match cached {
            Some((main, waker)) if main.block_on.will_wake(cx) => {
                main.woken.store(true, Ordering::Release);
                (main, waker)
            }
            _ => {
                let main = Arc::new(MainWaker {
                    woken: AtomicBool::new(true),
                    block_on: cx.clone(),
                });
                let waker = Waker::from(main.clone());
                (main, waker)
            }
        }
    }

    /// Run up to `BUDGET` tasks; true if more are waiting.
    fn tick(&self, local: &Local, cx: &mut Cx<'_>) -> bool {
        self.remote.drain_into(&mut local.queue.borrow_mut());
        for _ in 0..BUDGET {
            let next = local.queue.borrow_mut().pop_front();
            match next {
                Some(runnable) => {
                    runnable.run();
                }
                None => {
                    let mut waker = local.waker.borrow_mut();
                    if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *waker = Some(cx.waker().clone());
                    }
                    local.idle.set(true);
                    if self.remote.park(cx.waker()) {
                        return false;
                    }
                    local.idle.set(false);
                    self.remote.drain_into(&mut local.queue.borrow_mut());
                }
            }
        }
        true
    }

    /// Drop every task. `wakers` reach the tasks that wait on something: waking them queues
    /// them. Then what is queued is dropped, one batch at a time, until nothing is: a dropped
    /// task's destructors may wake others, which join the queue instead of being torn down
    /// inside that wake-up (no recursion, no re-entered lock). `all_dropped` tells whether
    /// every task has been torn down; while it says no, close waits for the wake-ups still on
    /// their way from other threads, at most `IN_FLIGHT_WAIT` without one arriving.
    pub(crate) fn close(
        &self,
        wakers: impl IntoIterator<Item = Waker>,
        all_dropped: impl Fn() -> bool,
    ) -> CloseOutcome {
        for waker in wakers {
            waker.wake();
        }
        loop {
            let parked = std::mem::take(&mut *self.parked.borrow_mut());
            let mut woken = self.remote.take_runnables();
            if parked.is_empty() && woken.is_empty() {
                if all_dropped() || !self.remote.wait_for_push(IN_FLIGHT_WAIT) {
                    // For good: what arrives from now on is dropped on arrival (`Remote::push`).
                    let late = match self.torn_down.replace(true) {
                        true => Vec::new(),
                        false => self.remote.tear_down(),
                    };
                    if !late.is_empty() {
                        for runnable in late {
                            drop(runnable);
                        }
                        continue;
                    }
                    return CloseOutcome {
                        unreached: !all_dropped(),
                    };
                }
                continue;
            }
            for runnable in parked.into_iter().chain(woken.drain(..)) {
                drop(runnable);
            }
            Remote::keep_spare(woken);
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Whatever was queued after close (or everything, if close never ran).
        self.close(None, || true);
    }
}

/// Makes an executor the one whose wake-ups go to this thread's local queue; undone on drop.
struct ActiveGuard<'a> {
    executor: &'a Executor,
    prev_owner: usize,
    prev_queue: VecDeque<Runnable>,
    /// The main future's waker, the same for the whole run: the main task keeps the first
    /// waker it is polled with, and Ctrl-C's cancellation wakes that one. Back to
    /// `MAIN_WAKER` on drop.
    main_waker: Option<(Arc<MainWaker>, Waker)>,
}

impl<'a> ActiveGuard<'a> {
    fn enter(executor: &'a Executor) -> Self {
        let parked = std::mem::take(&mut *executor.parked.borrow_mut());
        let (prev_owner, prev_queue) = LOCAL.with(|local| {
            local.idle.set(false);
            let prev_owner = local.owner.replace(executor.remote.id());
            let mut queue = local.queue.borrow_mut();
            // With no other executor's runnables in it (the common case), the thread's queue
            // keeps its buffer from loop to loop: a new loop's first run allocates none.
            let prev_queue = match queue.is_empty() {
                true => {
                    queue.extend(parked);
                    VecDeque::new()
                }
                false => std::mem::replace(&mut *queue, parked),
            };
            (prev_owner, prev_queue)
        });
        ActiveGuard {
            executor,
            prev_owner,
            prev_queue,
            main_waker: None,
        }
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        let prev_queue = std::mem::take(&mut self.prev_queue);
        let _ = LOCAL.try_with(|local| {
            local.idle.set(false);
            local.owner.set(self.prev_owner);
            let mut queue = local.queue.borrow_mut();
            if !queue.is_empty() || !prev_queue.is_empty() {
                let ours = std::mem::replace(&mut *queue, prev_queue);
                *self.executor.parked.borrow_mut() = ours;
            }
        });
        if let Some(main_waker) = self.main_waker.take() {
            let _ = MAIN_WAKER.try_with(|cached| cached.set(Some(main_waker)));
        }
    }
}

pin_project_lite::pin_project! {
    /// See [`Executor::run`].
    pub(crate) struct Run<'a, F> {
        active: ActiveGuard<'a>,
        #[pin]
        main: F,
    }
}

impl<F: Future> Future for Run<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<F::Output> {
        let this = self.project();
        let (main, waker) = this
            .active
            .main_waker
            .get_or_insert_with(|| Executor::main_waker(cx.waker()));
        LOCAL.with(|local| {
            // Wake-ups while this poll runs are picked up by it: no need to wake block_on.
            local.idle.set(false);
            // The swap (a locked instruction) only when woken: most polls are for tasks.
            if main.woken.load(Ordering::Acquire) && main.woken.swap(false, Ordering::AcqRel) {
                if let Poll::Ready(output) = this.main.poll(&mut Cx::from_waker(waker)) {
                    return Poll::Ready(output);
                }
            }
            if this.active.executor.tick(local, cx) {
                // Out of budget: let block_on process I/O and timers, then come back.
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        })
    }
}
