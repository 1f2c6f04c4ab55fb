//! The event loop: a single-thread executor of tasks driven by runner's own `block_on` on one
//! thread, plus the callbacks, the default executor and the exception handler around it
//! (Python's `asyncio.AbstractEventLoop`).
//!
//! ```
//! use runner_core::EventLoop;
//!
//! let lp = EventLoop::new();
//! let task = lp.spawn(async { 1 + 1 });
//! assert_eq!(lp.run_until_complete(task).unwrap().unwrap(), 2);
//! lp.close();
//! assert!(lp.is_closed());
//! ```
//!
//! The loop itself is `!Send`: tasks run on the thread that runs the loop, so their futures need
//! not be `Send`. [`LoopHandle`] is the `Send + Sync` way in from other threads.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::blocking::DefaultExecutor;
use crate::callback::{CallbackHandle, Callbacks};
use crate::context::Context;
use crate::error::{drop_quietly, panic_message};
use crate::event_loop::handle::LoopHandle;
use crate::report::{write_to_stderr, ExceptionContext};
use crate::task::handle::Task;
use crate::task::scope::{self, Scope};
use crate::task::spawn::{spawn_blocking, spawn_on};
use crate::workers::Workers;

/// An exception handler.
pub(crate) type Handler = Rc<dyn Fn(&EventLoop, &ExceptionContext)>;

/// What a loop is: the part its tasks use (scope), and what the loop keeps around them.
pub(crate) struct LoopInner {
    pub(crate) scope: Rc<Scope>,
    pub(crate) callbacks: Callbacks,
    pub(crate) default_executor: DefaultExecutor,
    pub(crate) debug: Cell<bool>,
    pub(crate) slow_callback_duration: Cell<Duration>,
    pub(crate) handler: RefCell<Option<Handler>>,
    pub(crate) running: Cell<bool>,
    pub(crate) closed: Cell<bool>,
    /// How many worker threads `workers(n)` asked for; started at the loop's first run.
    pub(crate) workers_wanted: Cell<Option<usize>>,
    /// The worker pool, once started.
    pub(crate) workers: RefCell<Option<Arc<Workers>>>,
}

/// A cheap, cloneable handle to an event loop. `!Send`: it is bound to the thread that runs it.
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// send(runner_core::EventLoop::new()); // a loop stays on its thread
/// ```
#[derive(Clone)]
pub struct EventLoop {
    pub(crate) inner: Rc<LoopInner>,
}

impl EventLoop {
    /// Spawn `fut` on this loop in a copy of the current context. The future runs on the loop's
    /// thread, so it need not be `Send`. On a closed loop the task is cancelled at once.
    #[track_caller]
    pub fn spawn<F>(&self, fut: F) -> Task<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        spawn_on(&self.inner.scope, fut, Location::caller(), true)
    }

    /// Run `f` on the loop's default executor, a pool of threads created on first use.
    ///
    /// # Panics
    /// After [`shutdown_default_executor`](Self::shutdown_default_executor):
    /// "executor shutdown has been called".
    #[track_caller]
    pub fn run_in_executor<F, T>(&self, f: F) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_blocking(f, Context::new(), Location::caller())
    }

    /// Run `f` on the default executor in `ctx`; `at` is where it was asked for.
    pub(crate) fn spawn_blocking<F, T>(
        &self,
        f: F,
        ctx: Context,
        at: &'static Location<'static>,
    ) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.inner.default_executor.open_handle();
        spawn_blocking(&self.inner.scope.inbox, f, ctx, at, |header, make| {
            pool.spawn(header, make, at)
        })
    }

    /// Schedule `f` to run on the loop's next iteration, in a copy of the current context.
    /// Callbacks run in the order they were scheduled.
    #[track_caller]
    pub fn call_soon<F: FnOnce() + 'static>(&self, f: F) -> CallbackHandle {
        let inbox = &self.inner.scope.inbox;
        self.inner
            .callbacks
            .call_soon(inbox, Box::new(f), Location::caller())
    }

    /// Schedule `f` to run once `delay` has passed.
    #[track_caller]
    pub fn call_later<F: FnOnce() + 'static>(&self, delay: Duration, f: F) -> CallbackHandle {
        let inbox = &self.inner.scope.inbox;
        self.inner
            .callbacks
            .call_later(inbox, delay, Box::new(f), Location::caller())
    }

    /// A `Send + Sync` handle for other threads.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle::new(self.inner.scope.inbox.clone())
    }

    /// True if the loop is in debug mode: polls and callbacks are timed and slow ones reported.
    pub fn debug(&self) -> bool {
        self.inner.debug.get()
    }

    /// Turn debug mode on or off.
    pub fn set_debug(&self, enabled: bool) {
        self.inner.debug.set(enabled);
        self.publish_slow_poll();
    }

    /// The slow-poll threshold every poll reads: this loop's, in debug mode, else none.
    pub(crate) fn slow_poll_threshold(&self) -> Option<Duration> {
        self.debug().then(|| self.slow_callback_duration())
    }

    /// Ask for a pool of `n` worker threads (see [`LoopBuilder::workers`](crate::LoopBuilder::workers)),
    /// if none was started yet.
    pub(crate) fn want_workers(&self, n: usize) {
        if self.inner.workers.borrow().is_none() {
            self.inner.workers_wanted.set(Some(n.max(1)));
        }
    }

    /// The worker pool, started now if it was asked for and the loop is open.
    pub(crate) fn workers(&self) -> Option<Arc<Workers>> {
        let mut workers = self.inner.workers.borrow_mut();
        if workers.is_none() && !self.is_closed() {
            if let Some(n) = self.inner.workers_wanted.take() {
                let inbox = self.inner.scope.inbox.clone();
                let blocking = self.inner.default_executor.handle();
                *workers = Workers::start(n, inbox, blocking, self.slow_poll_threshold());
            }
        }
        workers.clone()
    }

    /// Keep the thread's slow-poll threshold in step with this loop's settings while it runs.
    fn publish_slow_poll(&self) {
        if self.is_running() {
            scope::set_slow_poll_threshold(self.slow_poll_threshold());
        }
    }

    /// In debug mode, polls and callbacks at least this long are reported (default 100 ms).
    pub fn slow_callback_duration(&self) -> Duration {
        self.inner.slow_callback_duration.get()
    }

    /// Set the slow-poll threshold.
    pub fn set_slow_callback_duration(&self, d: Duration) {
        self.inner.slow_callback_duration.set(d);
        self.publish_slow_poll();
    }

    /// Send reports to `handler` instead of the default handler.
    pub fn set_exception_handler<H>(&self, handler: H)
    where
        H: Fn(&EventLoop, &ExceptionContext) + 'static,
    {
        *self.inner.handler.borrow_mut() = Some(Rc::new(handler));
    }

    /// Go back to the default handler.
    pub fn clear_exception_handler(&self) {
        *self.inner.handler.borrow_mut() = None;
    }

    /// Report `ctx` to the handler. A handler that panics is itself reported by the default
    /// handler ("unhandled error in exception handler") and the loop goes on.
    pub fn call_exception_handler(&self, ctx: ExceptionContext) {
        let handler = self.inner.handler.borrow().clone();
        let Some(handler) = handler else {
            self.default_exception_handler(&ctx);
            return;
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| handler(self, &ctx))) {
            self.default_exception_handler(
                &ExceptionContext::new("unhandled error in exception handler")
                    .with_error(panic_message(&*payload)),
            );
            self.default_exception_handler(&ctx);
            drop_quietly(payload);
        }
    }

    /// Write `ctx` to stderr: the message, then the task and the error on their own lines.
    pub fn default_exception_handler(&self, ctx: &ExceptionContext) {
        write_to_stderr(ctx);
    }

    /// True while `run_until_complete` (or a runner's `run`) is running this loop.
    pub fn is_running(&self) -> bool {
        self.inner.running.get()
    }

    /// True once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.get()
    }
}

impl Default for EventLoop {
    fn default() -> Self {
        EventLoop::new()
    }
}

/// Two handles are equal when they refer to the same loop.
impl PartialEq for EventLoop {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for EventLoop {}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("running", &self.is_running())
            .field("closed", &self.is_closed())
            .field("debug", &self.debug())
            .finish()
    }
}
