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
use std::future::{poll_fn, Future, IntoFuture};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe, Location};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

use crate::context::Context;
use crate::error::RunError;
use crate::event_loop::api::EventLoop;
use crate::event_loop::run::refuse_nested_run;
use crate::event_loop::shutdown::NOTICE_AFTER;
use crate::header::RETURNED;
use crate::report::ExceptionContext;
use crate::runner_options::{LoopFactory, RunnerBuilder};
use crate::signal::{self, Interrupt};
use crate::task::cleanup::{Abandon, AbandonGuard};
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
            let closed = close_loop(
                &lp,
                self.executor_shutdown_timeout,
                self.abandoned.get(),
                None,
            );
            self.close_interrupted.set(closed.interrupted);
        }
    }

    /// Close the runner as [`close`](Self::close) does, waiting in all at most until
    /// `deadline`: a test's timeout. What close stopped waiting for, if it stopped.
    pub(crate) fn close_by(&self, deadline: Instant) -> Vec<String> {
        let lp = match self.state.get() {
            State::Initialized => self.event_loop.borrow().clone(),
            _ => None,
        };
        self.state.set(State::Closed);
        self.event_loop.borrow_mut().take();
        match lp {
            Some(lp) => {
                let timeout = self.executor_shutdown_timeout;
                let closed = close_loop(&lp, timeout, self.abandoned.get(), Some(deadline));
                self.close_interrupted.set(closed.interrupted);
                closed.cut_short
            }
            None => Vec::new(),
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
    let shown = Cell::new(false);
    // R2.7: a main task that returned but still runs its deferred cleanups a second later says
    // so. Polled with `main` (no waker of its own): the flag is set in one of main's polls.
    let returned = async {
        poll_fn(|_| match task.header().has(RETURNED) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        })
        .await;
        let deadline = Instant::now() + NOTICE_AFTER;
        let heading = "main returned 1 s ago and still runs its async cleanup";
        lp.notice_at(deadline, heading, Some(&task), interrupt, &shown)
            .await;
        None
    };
    let ran = match interrupt {
        None => lp.run_until(async { Some(main.as_mut().await) }.or(returned)),
        Some(interrupt) => {
            interrupt.set_main(task.clone());
            let notice = async {
                interrupt.pressed().await;
                let deadline = Instant::now() + NOTICE_AFTER;
                let heading = "still finishing the main task 1 s after Ctrl-C";
                lp.notice_at(deadline, heading, Some(&task), Some(interrupt), &shown)
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
                    .or(notice)
                    .or(returned),
            );
            interrupt.main_ended();
            ran
        }
    };
    *ctx = main.as_mut().take_context();
    let Some(output) = ran? else {
        _abandon = AbandonGuard::new(Abandon::CtrlC);
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

/// How a close ended.
#[derive(Debug, Default)]
pub(crate) struct Closed {
    /// Ctrl-C stopped the waiting.
    pub(crate) interrupted: bool,
    /// What close stopped waiting for when its time ran out: for each step cut short, what it
    /// waited for.
    pub(crate) cut_short: Vec<String>,
}

/// Python's `Runner.close`, in four steps. Steps with nothing to wait for are skipped. Each
/// waiting step waits at most `timeout`, and all of them stop at `deadline` (a test's
/// timeout). Inside another running loop the waiting steps cannot run, and after a second
/// Ctrl-C (before or during close) nothing is waited for; the loop is closed either way. A
/// close still waiting after a second says, once, what it waits for.
fn close_loop(
    lp: &EventLoop,
    timeout: Duration,
    abandoned: bool,
    deadline: Option<Instant>,
) -> Closed {
    let mut closed = Closed::default();
    let work = lp.close_work();
    // With nothing to wait for, close does not handle Ctrl-C: it has nothing to stop (R6.4).
    if !abandoned && work.any() {
        let sigint = signal::begin(true);
        let waiting = Waiting {
            lp,
            interrupt: sigint.as_ref().map(|s| s.interrupt()),
            notice_at: Instant::now() + NOTICE_AFTER,
            shown: Cell::new(false),
            deadline,
            cut_short: RefCell::new(Vec::new()),
        };
        let inbox = &lp.inner.scope.inbox;
        // Tasks spawned from here to the end of step 2 are cancelled in further rounds.
        inbox.set_closing(true);
        // 1. Cancel every pending task, and wait for them.
        let _ = waiting.step(work.tasks, Some(timeout), lp.cancel_all_tasks())
            // 2. Close the async generators still open, and wait for scheduled cleanups; the
            //    tasks their closes spawn are cancelled.
            && waiting.step(
                work.tasks || work.asyncgens,
                Some(timeout),
                lp.shutdown_asyncgens().or(lp.cancel_spawned_in_close()),
            )
            && {
                inbox.set_closing(false);
                true
            }
            // 3. Join the default executor's threads, then the worker threads (each finishing
            //    the cleanups made on it): each bounds itself by `timeout`, and reports its own
            //    overrun (R2.3).
            && waiting.step(work.executor, None, lp.shutdown_default_executor(Some(timeout)))
            && waiting.step(work.workers, None, lp.shutdown_workers(timeout))
            // Cleanups sent home or scheduled during the third step (a blocking job that drops
            // a guard): the second step once more, unless close has given up on cleanups.
            && waiting.step(
                waiting.cut_short.borrow().is_empty() && lp.has_cleanups_to_wait_for(),
                Some(timeout),
                lp.shutdown_asyncgens(),
            );
        inbox.set_closing(false);
        closed.interrupted = waiting.interrupt.is_some_and(|i| i.is_aborted());
        closed.cut_short = waiting.cut_short.take();
    }
    // 4. Close the loop. Cleanups close stopped waiting for are not run on the spot.
    let why = match (abandoned || closed.interrupted, closed.cut_short.is_empty()) {
        (true, _) => Abandon::CtrlC,
        (false, false) => Abandon::CloseTimedOut,
        (false, true) => Abandon::No,
    };
    let _abandon = AbandonGuard::new(why);
    lp.close();
    closed
}

/// The waiting steps of one close.
struct Waiting<'a> {
    lp: &'a EventLoop,
    interrupt: Option<&'a Interrupt>,
    /// When close says what it still waits for, if it still waits.
    notice_at: Instant,
    shown: Cell<bool>,
    /// When every step stops waiting.
    deadline: Option<Instant>,
    cut_short: RefCell<Vec<String>>,
}

/// How a waiting step ended.
enum Step {
    Done,
    /// Ctrl-C stopped the waiting.
    Stopped,
    /// Its time ran out while it waited for these (`EventLoop::pending_work`'s lines).
    TimedOut(Vec<String>),
}

impl Waiting<'_> {
    /// Run one waiting step of close if `needed`, for at most `timeout` (none: a step that
    /// bounds itself) and until the deadline; false if close must wait no more (Ctrl-C, or the
    /// deadline passed).
    fn step<F: Future<Output = ()>>(
        &self,
        needed: bool,
        timeout: Option<Duration>,
        step: F,
    ) -> bool {
        if !needed {
            return true;
        }
        let lp = self.lp;
        let started = Instant::now();
        let limit = match (self.deadline, timeout.map(|t| started + t)) {
            (Some(deadline), Some(limit)) => Some(deadline.min(limit)),
            (deadline, limit) => deadline.or(limit),
        };
        let heading = "still closing after 1 s";
        let notice = async {
            lp.notice_at(self.notice_at, heading, None, self.interrupt, &self.shown)
                .await;
            Step::Done
        };
        let stopped = async {
            match self.interrupt {
                Some(interrupt) => interrupt.aborted().await,
                None => std::future::pending().await,
            }
            Step::Stopped
        };
        let timed_out = async {
            // The loop runs at least once, so that the cancellations the step has asked for
            // take effect even when its time has already run out (a test that overran).
            crate::time::yield_now().await;
            match limit {
                Some(limit) => crate::time::Sleep::until(limit).await,
                None => std::future::pending().await,
            };
            // Read while the step still waits: its end lets go of what it waits for.
            Step::TimedOut(lp.pending_work(None))
        };
        let ran = lp.run_until(
            async {
                step.await;
                Step::Done
            }
            .or(stopped)
            .or(timed_out)
            .or(notice),
        );
        match ran {
            // Inside another running loop: nothing can be waited for.
            Err(_) | Ok(Step::Done) => true,
            Ok(Step::Stopped) => false,
            Ok(Step::TimedOut(lines)) => {
                self.report_cut_short(started.elapsed(), lines);
                !self.deadline.is_some_and(|d| Instant::now() >= d)
            }
        }
    }

    /// A step's time ran out while it waited for `lines`: say so. A pool task stuck in a poll
    /// leaves its worker behind: the workers are not waited for again.
    fn report_cut_short(&self, waited: Duration, mut lines: Vec<String>) {
        let lp = self.lp;
        if lines.is_empty() {
            lines.push("work runner cannot name (a generator's or stream's cleanup)".into());
        }
        let what = lines.join("; ");
        if let Some(workers) = &*lp.inner.workers.borrow() {
            let stuck = lp.inner.scope.inbox.off_loop_pending();
            if stuck.iter().any(|t| t.header().is_polling()) {
                workers.leave_behind();
            }
        }
        lp.call_exception_handler(ExceptionContext::new(format!(
            "close stopped waiting after {:.1} s for: {what}",
            waited.as_secs_f64()
        )));
        self.cut_short.borrow_mut().push(what);
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
