//! The runner: Python's `asyncio.run` and `asyncio.Runner`. A runner owns one event loop and one
//! context, runs main futures on them, and closes them in order.
//!
//! ```
//! use runner_core::Runner;
//!
//! let runner = Runner::new();              // creates nothing yet
//! assert_eq!(runner.run(async { 1 }).unwrap(), 1);
//! assert_eq!(runner.run(async { 2 }).unwrap(), 2);   // same loop, same context
//! runner.close();                          // cancel leftovers, close generators, join threads
//! assert!(runner.is_closed());
//! ```
//!
//! The life cycle is three states: created (nothing built), initialized (loop and context
//! exist, made on first use), closed (for good). Close runs, in order: cancel every pending task
//! and wait for them, close async generators, join the default executor with a timeout, close
//! the loop. The runner ends closed even if a step fails.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::IntoFuture;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe, Location};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

use crate::context::Context;
use crate::defer::Abandoning;
use crate::error::RunError;
use crate::event_loop::{get_running_loop, EventLoop, NOTICE_AFTER};
use crate::signal;

/// Python's `constants.THREAD_JOIN_TIMEOUT`.
const DEFAULT_EXECUTOR_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Created,
    Initialized,
    Closed,
}

type LoopFactory = Box<dyn FnOnce() -> EventLoop>;

/// Runs futures on one event loop and one context, then closes them (Python's `asyncio.Runner`).
///
/// `!Send`: it owns a loop bound to the thread that created it.
pub struct Runner {
    state: Cell<State>,
    debug: Option<bool>,
    loop_factory: Cell<Option<LoopFactory>>,
    executor_shutdown_timeout: Duration,
    event_loop: RefCell<Option<EventLoop>>,
    context: RefCell<Context>,
    /// A second Ctrl-C ended a run: close waits for nothing.
    abandoned: Cell<bool>,
    /// Ctrl-C stopped close's waiting: `RunnerBuilder::run` reports the run as interrupted.
    close_interrupted: Cell<bool>,
}

impl Runner {
    /// A runner with default settings. Nothing is created until the first use.
    pub fn new() -> Runner {
        RunnerBuilder::default().build()
    }

    /// Configure a runner.
    pub fn builder() -> RunnerBuilder {
        RunnerBuilder::default()
    }

    /// Run `fut` as the main task in the runner's context and return its output.
    ///
    /// The future may borrow from the caller. Tasks it leaves pending keep running in the next
    /// `run` and are cancelled at close. Errors: [`RunError::NestedRun`] inside a running loop,
    /// [`RunError::Closed`] after close (the future is not polled in either case),
    /// [`RunError::Cancelled`] if the main task was cancelled. A panic in `fut` propagates.
    #[track_caller]
    pub fn run<F: IntoFuture>(&self, fut: F) -> Result<F::Output, RunError> {
        self.run_at(fut, None, Location::caller())
    }

    /// Like [`run`](Self::run), in `ctx` instead of the runner's context; the main task's final
    /// context is left in `ctx`.
    #[track_caller]
    pub fn run_with_context<F: IntoFuture>(
        &self,
        fut: F,
        ctx: &mut Context,
    ) -> Result<F::Output, RunError> {
        self.run_at(fut, Some(ctx), Location::caller())
    }

    /// Python's `Runner.run`: refuse a nested run, initialise lazily, run the main task in
    /// `ctx` or else the runner's own context (put back afterwards, even on panic).
    fn run_at<F: IntoFuture>(
        &self,
        fut: F,
        ctx: Option<&mut Context>,
        at: &'static Location<'static>,
    ) -> Result<F::Output, RunError> {
        if get_running_loop().is_some() {
            return Err(RunError::NestedRun);
        }
        let lp = self.lazy_init()?;
        let handling = signal::begin(false);
        let interrupt = handling.as_ref().map(|h| h.interrupt());
        let result = match ctx {
            Some(ctx) => lp.run_main(fut.into_future(), ctx, at, interrupt),
            None => {
                let mut own = PutBack::take(&self.context);
                lp.run_main(fut.into_future(), &mut own.ctx, at, interrupt)
            }
        };
        if interrupt.is_some_and(|i| i.is_aborted()) {
            self.abandoned.set(true);
        }
        result
    }

    /// The runner's loop, creating it (and the runner's context) on first use.
    pub fn get_loop(&self) -> Result<EventLoop, RunError> {
        self.lazy_init()
    }

    fn lazy_init(&self) -> Result<EventLoop, RunError> {
        match self.state.get() {
            State::Closed => Err(RunError::Closed),
            State::Initialized => self.event_loop.borrow().clone().ok_or(RunError::Closed),
            State::Created => {
                let lp = match self.loop_factory.take() {
                    Some(factory) => factory(),
                    None => EventLoop::new(),
                };
                if let Some(debug) = self.debug {
                    lp.set_debug(debug);
                }
                *self.context.borrow_mut() = Context::current();
                *self.event_loop.borrow_mut() = Some(lp.clone());
                self.state.set(State::Initialized);
                Ok(lp)
            }
        }
    }

    /// Close the runner: cancel pending tasks and wait for them, close async generators, join the
    /// default executor (at most the shutdown timeout), close the loop. Idempotent; a runner that
    /// was never used is closed too.
    ///
    /// # Panics
    /// If called from inside this runner's own `run`: close it after `run` returns.
    pub fn close(&self) {
        let lp = match self.state.get() {
            State::Closed => return,
            State::Created => None,
            State::Initialized => self.event_loop.borrow().clone(),
        };
        if lp.as_ref().is_some_and(|lp| lp.is_running()) {
            panic!("Runner::close() was called while the runner is running; close it after run() returns");
        }
        self.state.set(State::Closed);
        self.event_loop.borrow_mut().take();
        if let Some(lp) = lp {
            let interrupted = close_loop(&lp, self.executor_shutdown_timeout, self.abandoned.get());
            self.close_interrupted.set(interrupted);
        }
    }

    /// True once the runner is closed.
    pub fn is_closed(&self) -> bool {
        self.state.get() == State::Closed
    }
}

/// Holds the runner's context while a run uses it; puts it back when dropped.
struct PutBack<'a> {
    slot: &'a RefCell<Context>,
    ctx: Context,
}

impl<'a> PutBack<'a> {
    fn take(slot: &'a RefCell<Context>) -> Self {
        let ctx = std::mem::take(&mut *slot.borrow_mut());
        PutBack { slot, ctx }
    }
}

impl Drop for PutBack<'_> {
    fn drop(&mut self) {
        *self.slot.borrow_mut() = std::mem::take(&mut self.ctx);
    }
}

/// R2's steps, in order; true if Ctrl-C stopped the waiting. Inside another running loop the
/// waiting steps cannot run, and after a second Ctrl-C (before or during close) nothing is
/// waited for; the loop is closed either way. A close still waiting after a second says, once,
/// what it waits for.
fn close_loop(lp: &EventLoop, timeout: Duration, abandoned: bool) -> bool {
    let mut interrupted = false;
    if !abandoned {
        let handling = signal::begin(true);
        let interrupt = handling.as_ref().map(|h| h.interrupt());
        let (tasks, gens, executor) = lp.close_work();
        let waiting = Waiting {
            lp,
            interrupt,
            notice_at: Instant::now() + NOTICE_AFTER,
            shown: Cell::new(false),
        };
        let _ = (!tasks || waiting.step(lp.cancel_all_tasks()))
            && (!(tasks || gens) || waiting.step(lp.shutdown_asyncgens()))
            && (!executor || waiting.step(lp.shutdown_default_executor(Some(timeout))));
        interrupted = interrupt.is_some_and(|i| i.is_aborted());
    }
    let _abandoning = Abandoning::new(abandoned || interrupted);
    lp.close();
    interrupted
}

/// The waiting steps of one close.
struct Waiting<'a> {
    lp: &'a EventLoop,
    interrupt: Option<&'a signal::Interrupt>,
    /// When close says what it still waits for, if it still waits.
    notice_at: Instant,
    shown: Cell<bool>,
}

impl Waiting<'_> {
    /// Run one waiting step of close; false if Ctrl-C stopped the waiting (R6.5).
    #[track_caller]
    fn step<F: std::future::Future<Output = ()>>(&self, step: F) -> bool {
        let lp = self.lp;
        let ctrl_c = self.interrupt.is_some();
        let notice = lp.notice_at(
            self.notice_at,
            "still closing after 1 s",
            None,
            ctrl_c,
            &self.shown,
        );
        let step = step.or(notice);
        let result = lp.run_main(
            step,
            &mut Context::new(),
            Location::caller(),
            self.interrupt,
        );
        result != Err(RunError::Interrupted)
    }
}

impl Default for Runner {
    fn default() -> Self {
        Runner::new()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("state", &self.state.get())
            .finish_non_exhaustive()
    }
}

/// Options for a [`Runner`].
///
/// ```
/// use std::time::Duration;
/// use runner_core::{EventLoop, Runner};
///
/// let out = Runner::builder()
///     .debug(true)
///     .loop_factory(EventLoop::new)
///     .executor_shutdown_timeout(Duration::from_secs(5))
///     .run(async { runner_core::get_running_loop().unwrap().debug() })
///     .unwrap();
/// assert!(out);
/// ```
pub struct RunnerBuilder {
    debug: Option<bool>,
    loop_factory: Option<LoopFactory>,
    executor_shutdown_timeout: Duration,
}

impl Default for RunnerBuilder {
    fn default() -> Self {
        RunnerBuilder {
            debug: None,
            loop_factory: None,
            executor_shutdown_timeout: DEFAULT_EXECUTOR_SHUTDOWN_TIMEOUT,
        }
    }
}

impl RunnerBuilder {
    /// Debug mode on or off; never called means the global setting (`RUNNER_DEBUG`).
    pub fn debug(mut self, enabled: bool) -> Self {
        self.debug = Some(enabled);
        self
    }

    /// Make the loop with `factory` (called once, at first use) instead of `EventLoop::new`.
    pub fn loop_factory<F>(mut self, factory: F) -> Self
    where
        F: FnOnce() -> EventLoop + 'static,
    {
        self.loop_factory = Some(Box::new(factory));
        self
    }

    /// How long close waits for the default executor's threads (default 300 s).
    pub fn executor_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.executor_shutdown_timeout = timeout;
        self
    }

    /// The runner; nothing is created until it is used.
    pub fn build(self) -> Runner {
        Runner {
            state: Cell::new(State::Created),
            debug: self.debug,
            loop_factory: Cell::new(self.loop_factory),
            executor_shutdown_timeout: self.executor_shutdown_timeout,
            event_loop: RefCell::new(None),
            context: RefCell::new(Context::new()),
            abandoned: Cell::new(false),
            close_interrupted: Cell::new(false),
        }
    }

    /// Build a runner, run `fut`, close the runner (also when `fut` panics), return the output.
    /// A Ctrl-C that stopped close's waiting makes it `Err(RunError::Interrupted)`, as Python's
    /// `KeyboardInterrupt` raised during `asyncio.run`'s close would.
    #[track_caller]
    pub fn run<F: IntoFuture>(self, fut: F) -> Result<F::Output, RunError> {
        let at = Location::caller();
        if get_running_loop().is_some() {
            return Err(RunError::NestedRun);
        }
        let runner = self.build();
        let result = catch_unwind(AssertUnwindSafe(|| runner.run_at(fut, None, at)));
        runner.close();
        let result = result.unwrap_or_else(|payload| resume_unwind(payload));
        match runner.close_interrupted.get() {
            true => result.and(Err(RunError::Interrupted)),
            false => result,
        }
    }
}

impl fmt::Debug for RunnerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerBuilder")
            .field("debug", &self.debug)
            .field("loop_factory", &self.loop_factory.is_some())
            .field("executor_shutdown_timeout", &self.executor_shutdown_timeout)
            .finish()
    }
}

/// Run `fut` on a fresh runner and close it: the analogue of `asyncio.run(main)`.
///
/// ```
/// let answer = runner_core::run(async { 40 + 2 }).unwrap();
/// assert_eq!(answer, 42);
/// ```
#[track_caller]
pub fn run<F: IntoFuture>(fut: F) -> Result<F::Output, RunError> {
    RunnerBuilder::default().run(fut)
}
