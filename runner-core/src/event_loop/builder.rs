//! Building a loop: [`LoopBuilder`], and the loop's driver, the task that runs its callbacks and
//! the jobs posted from other threads.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::Location;
use std::rc::Rc;
use std::task::{Context as Cx, Poll};
use std::time::Duration;

use crate::blocking::DefaultExecutor;
use crate::callback::{run_callback, Callbacks, CALLBACK_BATCH};
use crate::debug;
use crate::event_loop::api::{EventLoop, Handler, LoopInner};
use crate::header::Header;
use crate::post::Delivery;
use crate::report::{write_to_stderr, ExceptionContext};
use crate::task::scope::Scope;
use crate::task::spawn::spawn_finalizer;

impl EventLoop {
    /// A new loop with default settings; debug mode follows the `RUNNER_DEBUG` environment
    /// variable (on when it is set to anything but empty or `0`).
    pub fn new() -> EventLoop {
        LoopBuilder::default().build()
    }

    /// Configure a loop before building it.
    pub fn builder() -> LoopBuilder {
        LoopBuilder::default()
    }
}

/// Options for a new [`EventLoop`].
///
/// ```
/// use std::time::Duration;
/// let lp = runner_core::EventLoop::builder()
///     .slow_callback_duration(Duration::from_millis(20))
///     .max_blocking_threads(4)
///     .build();
/// assert_eq!(lp.slow_callback_duration(), Duration::from_millis(20));
/// ```
pub struct LoopBuilder {
    slow_callback_duration: Duration,
    max_blocking_threads: Option<usize>,
    handler: Option<Handler>,
    debug: Option<bool>,
    workers: Option<usize>,
}

impl Default for LoopBuilder {
    fn default() -> Self {
        LoopBuilder {
            slow_callback_duration: Duration::from_millis(100),
            max_blocking_threads: None,
            handler: None,
            debug: None,
            workers: None,
        }
    }
}

impl fmt::Debug for LoopBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopBuilder")
            .field("slow_callback_duration", &self.slow_callback_duration)
            .field("max_blocking_threads", &self.max_blocking_threads)
            .field("exception_handler", &self.handler.is_some())
            .field("debug", &self.debug)
            .finish()
    }
}

impl LoopBuilder {
    /// The slow-poll threshold for debug mode (default 100 ms).
    pub fn slow_callback_duration(mut self, d: Duration) -> Self {
        self.slow_callback_duration = d;
        self
    }

    /// The most threads the default executor may start (default min(32, cores + 4)).
    pub fn max_blocking_threads(mut self, n: usize) -> Self {
        self.max_blocking_threads = Some(n.max(1));
        self
    }

    /// The exception handler to start with.
    pub fn exception_handler<H>(mut self, handler: H) -> Self
    where
        H: Fn(&EventLoop, &ExceptionContext) + 'static,
    {
        self.handler = Some(Rc::new(handler));
        self
    }

    /// Debug mode on or off; unset follows `RUNNER_DEBUG`.
    pub fn debug(mut self, enabled: bool) -> Self {
        self.debug = Some(enabled);
        self
    }

    /// Run [`spawn_send`](crate::spawn_send)'s tasks on a pool of `n` worker threads (at least
    /// one), started when the loop first runs. Unset: no pool, every task on the loop's thread.
    ///
    /// ```
    /// let lp = runner_core::EventLoop::builder().workers(2).build();
    /// let on = lp.run_until_complete(async {
    ///     runner_core::spawn_send(async { std::thread::current().name().map(str::to_owned) })
    ///         .await
    ///         .unwrap()
    /// });
    /// assert!(on.unwrap().unwrap().starts_with("runner-worker-"));
    /// lp.close();
    /// ```
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }

    /// Build the loop. Nothing runs and no thread starts until it is used.
    pub fn build(self) -> EventLoop {
        let scope = Scope::new(spawn_finalizer);
        let owner = scope.inbox.owner();
        let inner = Rc::new(LoopInner {
            scope,
            callbacks: Callbacks::default(),
            default_executor: DefaultExecutor::new(self.max_blocking_threads, owner),
            debug: Cell::new(self.debug.unwrap_or_else(debug::enabled_by_env)),
            slow_callback_duration: Cell::new(self.slow_callback_duration),
            handler: RefCell::new(self.handler),
            running: Cell::new(false),
            closed: Cell::new(false),
            workers_wanted: Cell::new(self.workers),
            workers: RefCell::new(None),
        });
        // The scope's reports reach the handler; held weakly so the loop can be dropped.
        let weak = Rc::downgrade(&inner);
        inner
            .scope
            .set_reporter(Rc::new(move |ctx| match weak.upgrade() {
                Some(inner) => EventLoop { inner }.call_exception_handler(ctx),
                None => write_to_stderr(&ctx),
            }));
        // The driver runs callbacks and posted jobs; it holds the loop weakly too.
        let weak = Rc::downgrade(&inner);
        let driver = std::future::poll_fn(move |cx| match weak.upgrade() {
            Some(inner) => drive(&EventLoop { inner }, cx),
            None => Poll::Ready(()),
        });
        // Not a runner task (nothing cancels it, it has no context), but every task on the
        // executor carries a header.
        // Unnamed: nothing reports about the driver, and a name costs an allocation per loop.
        let header = Header::new(None, Location::caller(), inner.scope.inbox.owner());
        let (runnable, task) = inner.scope.executor.spawn(header, |_| driver);
        runnable.schedule();
        task.detach();
        EventLoop { inner }
    }
}

/// One round of the driver: the reports made on other threads, a bounded batch of jobs posted
/// from there, then a round of callbacks.
fn drive(lp: &EventLoop, cx: &mut Cx<'_>) -> Poll<()> {
    let (jobs, reports, more) = lp.inner.scope.inbox.take_jobs(cx.waker(), CALLBACK_BATCH);
    for ctx in reports {
        lp.call_exception_handler(ctx);
    }
    for job in jobs {
        run_callback(|| job(Delivery::Run), None);
    }
    if more {
        // The rest waits for the next round, after tasks, timers and I/O had their turn.
        cx.waker().wake_by_ref();
    }
    lp.inner.callbacks.drive(cx)
}
