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
use std::future::{Future, IntoFuture};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe, Location};
use std::pin::pin;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

use crate::context::Context;
use crate::error::RunError;
use crate::event_loop::api::EventLoop;
use crate::event_loop::run::refuse_nested_run;
use crate::event_loop::shutdown::NOTICE_AFTER;
use crate::runner_options::{LoopFactory, RunnerBuilder};
use crate::signal::{self, Interrupt};
use crate::task::cleanup::AbandonGuard;
use crate::task::spawn::{main_end, main_task, MainEnd};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Created,
    Initialized,
    Closed,
}

/// Runs futures on one event loop and one context, then closes them (Python's `asyncio.Runner`).
///
/// `!Send`: it owns a loop bound to the thread that created it.
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// send(runner_core::Runner::new()); // a runner stays on its thread
/// ```
pub struct Runner {
    state: Cell<State>,
    debug: Option<bool>,
    workers: Option<usize>,
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
        refuse_nested_run()?;
        let lp = self.lazy_init()?;
        let sigint = signal::begin(false);
        let interrupt = sigint.as_ref().map(|s| s.interrupt());
        let result = match ctx {
            Some(ctx) => run_main(&lp, fut.into_future(), ctx, at, interrupt),
            None => {
                let mut own = RunContextGuard::take(&self.context);
                run_main(&lp, fut.into_future(), &mut own.ctx, at, interrupt)
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
                if let Some(n) = self.workers {
                    lp.want_workers(n);
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

/// The core of `Runner.run`: create the main task in `ctx`, run the loop until it is done or
/// a second Ctrl-C asks to return at once, and say how the run ended. The main task's final
/// context is left in `ctx`. With an `interrupt` (a runner handling Ctrl-C), the first Ctrl-C
/// cancels the main task, and a main task still finishing a second after it is named on stderr.
fn run_main<F: Future>(
    lp: &EventLoop,
    fut: F,
    ctx: &mut Context,
    at: &'static Location<'static>,
    interrupt: Option<&Interrupt>,
) -> Result<F::Output, RunError> {
    let inbox = lp.inner.scope.inbox.clone();
    let (main, task) = main_task(fut, std::mem::take(ctx), at, inbox);
    // Declared before `main` so that it is dropped after it: after a second Ctrl-C, the cleanups
    // the abandoned main task leaves are not waited for.
    let _abandon;
    let mut main = pin!(main);
    let ran = match interrupt {
        None => lp.run_until(async { Some(main.as_mut().await) }),
        Some(interrupt) => {
            interrupt.set_main(task.clone());
            let shown = Cell::new(false);
            let notice = async {
                interrupt.pressed().await;
                let deadline = Instant::now() + NOTICE_AFTER;
                let heading = "still finishing the main task 1 s after Ctrl-C";
                lp.notice_at(deadline, heading, Some(&task), true, &shown)
                    .await;
                None
            };
            let second_ctrl_c = async {
                interrupt.aborted().await;
                None
            };
            let ran = lp.run_until(
                async { Some(main.as_mut().await) }
                    .or(second_ctrl_c)
                    .or(notice),
            );
            interrupt.main_ended();
            ran
        }
    };
    *ctx = main.as_mut().take_context();
    let Some(output) = ran? else {
        _abandon = AbandonGuard::new(true);
        return Err(RunError::Interrupted);
    };
    match main_end(output, &task) {
        MainEnd::Returned(value) => Ok(value),
        MainEnd::Panicked(payload) => resume_unwind(payload),
        MainEnd::Cancelled { by_code: true } => Err(RunError::Cancelled),
        MainEnd::Cancelled { .. } if interrupt.is_some_and(|i| i.presses() > 0) => {
            Err(RunError::Interrupted)
        }
        MainEnd::Cancelled { .. } => Err(RunError::Cancelled),
    }
}

/// Lends the runner's context to a run; puts it back when dropped, even on panic.
struct RunContextGuard<'a> {
    slot: &'a RefCell<Context>,
    ctx: Context,
}

impl<'a> RunContextGuard<'a> {
    fn take(slot: &'a RefCell<Context>) -> Self {
        let ctx = std::mem::take(&mut *slot.borrow_mut());
        RunContextGuard { slot, ctx }
    }
}

impl Drop for RunContextGuard<'_> {
    fn drop(&mut self) {
        *self.slot.borrow_mut() = std::mem::take(&mut self.ctx);
    }
}

/// Python's `Runner.close`, in four steps; true if Ctrl-C stopped the waiting. Steps with
/// nothing to wait for are skipped. Inside another running loop the waiting steps cannot run,
/// and after a second Ctrl-C (before or during close) nothing is waited for; the loop is closed
/// either way. A close still waiting after a second says, once, what it waits for.
fn close_loop(lp: &EventLoop, timeout: Duration, abandoned: bool) -> bool {
    let mut interrupted = false;
    let work = lp.close_work();
    // With nothing to wait for, close does not handle Ctrl-C: it has nothing to stop (R6.4).
    if !abandoned && work.any() {
        let sigint = signal::begin(true);
        let waiting = Waiting {
            lp,
            interrupt: sigint.as_ref().map(|s| s.interrupt()),
            notice_at: Instant::now() + NOTICE_AFTER,
            shown: Cell::new(false),
        };
        // 1. Cancel every pending task, and wait for them.
        let _ = waiting.step(work.tasks, lp.cancel_all_tasks())
            // 2. Close the async generators still open, and wait for scheduled cleanups.
            && waiting.step(work.tasks || work.asyncgens, lp.shutdown_asyncgens())
            // 3. Join the default executor's threads, then the worker threads (each finishing
            //    the cleanups made on it), for at most `timeout` each.
            && waiting.step(work.executor, lp.shutdown_default_executor(Some(timeout)))
            && waiting.step(work.workers, lp.shutdown_workers(timeout));
        interrupted = waiting.interrupt.is_some_and(|i| i.is_aborted());
    }
    // 4. Close the loop.
    let _abandon = AbandonGuard::new(abandoned || interrupted);
    lp.close();
    interrupted
}

/// The waiting steps of one close.
struct Waiting<'a> {
    lp: &'a EventLoop,
    interrupt: Option<&'a Interrupt>,
    /// When close says what it still waits for, if it still waits.
    notice_at: Instant,
    shown: Cell<bool>,
}

impl Waiting<'_> {
    /// Run one waiting step of close if `needed`; false if Ctrl-C stopped the waiting.
    fn step<F: Future<Output = ()>>(&self, needed: bool, step: F) -> bool {
        if !needed {
            return true;
        }
        let lp = self.lp;
        let ctrl_c = self.interrupt.is_some();
        let heading = "still closing after 1 s";
        let notice = async {
            lp.notice_at(self.notice_at, heading, None, ctrl_c, &self.shown)
                .await;
            true
        };
        let stopped = async {
            match self.interrupt {
                Some(interrupt) => interrupt.aborted().await,
                None => std::future::pending().await,
            }
            false
        };
        let ran = lp.run_until(
            async {
                step.await;
                true
            }
            .or(stopped)
            .or(notice),
        );
        ran.unwrap_or(true)
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

impl RunnerBuilder {
    /// The runner; nothing is created until it is used.
    pub fn build(self) -> Runner {
        Runner {
            state: Cell::new(State::Created),
            debug: self.debug,
            workers: self.workers,
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
