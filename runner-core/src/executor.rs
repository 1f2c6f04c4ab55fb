//! The loop's task executor: a first-in first-out run queue of `async_task` runnables, run on
//! the loop's thread inside `async_io::block_on`.
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
//! only wake-ups from other threads take a lock. That cut the cost of a task and of a yield by
//! about 600 and 350 instructions (callgrind), more than everything runner adds around a poll.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context as Cx, Poll, Waker};
use std::thread;

use async_task::Runnable;

/// How many runnables one tick runs before it lets `block_on` look at I/O and timers.
const BUDGET: usize = 128;

/// What the thread running an executor keeps at hand, so that a wake-up on that thread costs a
/// thread-local access and a push.
struct Local {
    /// The address of the running executor's `Remote`; 0 when none runs on this thread.
    owner: Cell<usize>,
    queue: RefCell<VecDeque<Runnable>>,
    /// The run loop found nothing to do and waits for `waker`.
    idle: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            owner: Cell::new(0),
            queue: RefCell::new(VecDeque::new()),
            idle: Cell::new(false),
            waker: RefCell::new(None),
        }
    };
}

/// The part schedule functions hold: wake-ups from other threads, or from the loop's thread
/// while the loop is not running, wait here.
struct Remote {
    queue: Mutex<RemoteQueue>,
    /// Something is in `queue` (read without the lock on every tick).
    pending: AtomicBool,
}

#[derive(Default)]
struct RemoteQueue {
    runnables: Vec<Runnable>,
    /// Wakes the thread running the executor.
    waker: Option<Waker>,
}

impl Remote {
    fn lock(&self) -> MutexGuard<'_, RemoteQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn id(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    /// The schedule function of every task.
    fn schedule(self: &Arc<Self>, runnable: Runnable) {
        let mut runnable = Some(runnable);
        let _ = LOCAL.try_with(|local| {
            if local.owner.get() == self.id() {
                if let Some(r) = runnable.take() {
                    local.queue.borrow_mut().push_back(r);
                }
                if local.idle.replace(false) {
                    if let Some(waker) = &*local.waker.borrow() {
                        waker.wake_by_ref();
                    }
                }
            }
        });
        if let Some(runnable) = runnable {
            self.push(runnable);
        }
    }

    /// Queue a runnable woken off the loop (another thread, or this one while the loop is not
    /// running). Never drops it, even on a closed loop: dropping a task runs its destructors,
    /// and a wake-up may come from inside someone's lock (a channel waking its receivers), so
    /// teardown happens only in [`Executor::close`], which drains this queue.
    fn push(&self, runnable: Runnable) {
        let waker = {
            let mut queue = self.lock();
            queue.runnables.push(runnable);
            self.pending.store(true, Ordering::Release);
            queue.waker.clone()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Move what waits here onto the local queue.
    fn drain_into(&self, local: &mut VecDeque<Runnable>) {
        if self.pending.load(Ordering::Acquire) {
            let mut queue = self.lock();
            self.pending.store(false, Ordering::Relaxed);
            local.extend(queue.runnables.drain(..));
        }
    }

    /// Remember who to wake; false if something arrived meanwhile.
    fn park(&self, waker: &Waker) -> bool {
        let mut queue = self.lock();
        if !queue.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            queue.waker = Some(waker.clone());
        }
        !self.pending.load(Ordering::Acquire)
    }
}

/// A single-thread executor for `!Send` futures.
pub(crate) struct Executor {
    remote: Arc<Remote>,
    /// The local queue while the executor is not running (tasks carry over between runs).
    parked: RefCell<VecDeque<Runnable>>,
}

impl Executor {
    pub(crate) fn new() -> Executor {
        Executor {
            remote: Arc::new(Remote {
                queue: Mutex::default(),
                pending: AtomicBool::new(false),
            }),
            parked: RefCell::default(),
        }
    }

    /// Spawn `fut`, queued to run.
    pub(crate) fn spawn<F>(&self, fut: F) -> async_task::Task<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let remote = self.remote.clone();
        let (runnable, task) = async_task::spawn_local(fut, move |r| remote.schedule(r));
        runnable.schedule();
        task
    }

    /// The `Send` way in: spawns onto this executor from any thread.
    pub(crate) fn spawner(&self) -> Spawner {
        Spawner(self.remote.clone())
    }

    /// A future that polls `main`, and runs the queued tasks between its polls, until `main`
    /// completes. Drive it with `async_io::block_on`.
    pub(crate) fn run<F: Future>(&self, main: F) -> Run<'_, F> {
        Run {
            active: Active::enter(self),
            main,
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
        let mut outcome = CloseOutcome::default();
        loop {
            let mut batch = std::mem::take(&mut *self.parked.borrow_mut());
            self.remote.drain_into(&mut batch);
            if batch.is_empty() {
                if all_dropped() || !self.remote.wait_for_push(IN_FLIGHT_WAIT) {
                    outcome.unreached = !all_dropped();
                    return outcome;
                }
                continue;
            }
            while let Some(runnable) = batch.pop_front() {
                outcome.dropped += 1;
                drop(runnable);
            }
        }
    }
}

/// How long close waits for a wake-up another thread has started but not finished (the task is
/// marked scheduled, its runnable not queued yet): a few instructions on a running thread, so
/// only a thread descheduled at that moment takes long.
const IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What [`Executor::close`] did.
#[derive(Default, Debug)]
pub(crate) struct CloseOutcome {
    /// Runnables dropped (each one a task torn down, or a finished task's last reference).
    pub(crate) dropped: usize,
    /// Some task could not be reached: woken elsewhere and never queued within the wait.
    pub(crate) unreached: bool,
}

/// Wakes a thread parked in [`Remote::wait_for_push`].
struct ThreadWaker(thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

impl Remote {
    /// Park this thread until something is pushed; false if `limit` passed first.
    fn wait_for_push(&self, limit: std::time::Duration) -> bool {
        let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
        let deadline = std::time::Instant::now() + limit;
        loop {
            if !self.park(&waker) {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            thread::park_timeout(deadline - now);
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Whatever was queued after close (or everything, if close never ran).
        self.close(None, || true);
    }
}

/// Spawns `Send` futures onto an executor from any thread. Their wake-ups go through the same
/// queue as every other task's, so close tears them down the same way.
#[derive(Clone)]
pub(crate) struct Spawner(Arc<Remote>);

impl Spawner {
    /// Spawn `fut`, queued to run on the executor's thread.
    pub(crate) fn spawn<F>(&self, fut: F) -> async_task::Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let remote = self.0.clone();
        let (runnable, task) = async_task::spawn(fut, move |r| remote.schedule(r));
        runnable.schedule();
        task
    }
}

/// Makes an executor the one whose wake-ups go to this thread's local queue; undone on drop.
struct Active<'a> {
    executor: &'a Executor,
    prev_owner: usize,
    prev_queue: VecDeque<Runnable>,
}

impl<'a> Active<'a> {
    fn enter(executor: &'a Executor) -> Self {
        let parked = std::mem::take(&mut *executor.parked.borrow_mut());
        let (prev_owner, prev_queue) = LOCAL.with(|local| {
            local.idle.set(false);
            (
                local.owner.replace(executor.remote.id()),
                std::mem::replace(&mut *local.queue.borrow_mut(), parked),
            )
        });
        Active {
            executor,
            prev_owner,
            prev_queue,
        }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let prev_queue = std::mem::take(&mut self.prev_queue);
        let _ = LOCAL.try_with(|local| {
            local.idle.set(false);
            local.owner.set(self.prev_owner);
            let ours = std::mem::replace(&mut *local.queue.borrow_mut(), prev_queue);
            *self.executor.parked.borrow_mut() = ours;
        });
    }
}

pin_project_lite::pin_project! {
    /// See [`Executor::run`].
    pub(crate) struct Run<'a, F> {
        active: Active<'a>,
        #[pin]
        main: F,
    }
}

impl<F: Future> Future for Run<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<F::Output> {
        let this = self.project();
        LOCAL.with(|local| {
            // Wake-ups while this poll runs are picked up by it: no need to wake block_on.
            local.idle.set(false);
            if let Poll::Ready(output) = this.main.poll(cx) {
                return Poll::Ready(output);
            }
            if this.active.executor.tick(local, cx) {
                // Out of budget: let block_on process I/O and timers, then come back.
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        })
    }
}
