//! Running a loop: the loop running on this thread, the one nested-run check, and
//! `run_until_complete`.

use std::cell::RefCell;
use std::future::poll_fn;
use std::future::{Future, IntoFuture};
use std::panic::{resume_unwind, Location};
use std::pin::pin;

use crate::context::Context;
use crate::driver::io::Waiter;
use crate::driver::park::block_on;
use crate::error::RunError;
use crate::event_loop::api::EventLoop;
use crate::signal;
use crate::task::handle::Task;
use crate::task::scope::ScopeGuard;
use crate::task::spawn::{main_end, main_task, spawn_blocking, MainEnd};
use crate::workers::{self, WorkersGuard};

thread_local! {
    /// The loop running on this thread, if any: what makes a nested run refusable before
    /// anything is built.
    static RUNNING: RefCell<Option<EventLoop>> = const { RefCell::new(None) };
}

/// The loop running on this thread, if any.
///
/// ```
/// assert!(runner_core::get_running_loop().is_none());
/// runner_core::run(async { assert!(runner_core::get_running_loop().is_some()) }).unwrap();
/// ```
pub fn get_running_loop() -> Option<EventLoop> {
    RUNNING.with(|r| r.borrow().clone())
}

/// Refuse to start a run while a loop runs on this thread (Python's "cannot be called from a
/// running event loop"): the one nested-run check, made before anything is built.
pub(crate) fn refuse_nested_run() -> Result<(), RunError> {
    match RUNNING.with(|r| r.borrow().is_some()) {
        true => Err(RunError::NestedRun),
        false => Ok(()),
    }
}

impl EventLoop {
    /// Run `fut` as the main task until it completes and return its output (Python's
    /// `loop.run_until_complete`). The future may borrow from the caller.
    ///
    /// Returns `Err(RunError::NestedRun)` if a loop is already running on this thread and
    /// `Err(RunError::Closed)` if this loop is closed; the future is not polled then. A panic in
    /// the future propagates out of this call once the loop is usable again.
    #[track_caller]
    pub fn run_until_complete<F: IntoFuture>(&self, fut: F) -> Result<F::Output, RunError> {
        let inbox = self.inner.scope.inbox.clone();
        let (main, task) = main_task(
            fut.into_future(),
            Context::current(),
            Location::caller(),
            inbox,
        );
        let mut main = pin!(main);
        let output = self.run_until(main.as_mut())?;
        match main_end(output, &task) {
            MainEnd::Returned(value) => Ok(value),
            MainEnd::Panicked(payload) => resume_unwind(payload),
            MainEnd::Cancelled { .. } => Err(RunError::Cancelled),
        }
    }

    /// Run the loop until `fut` completes: the one way a loop runs. Refuses a nested run and a
    /// closed loop without polling `fut`.
    pub(crate) fn run_until<F: Future>(&self, fut: F) -> Result<F::Output, RunError> {
        refuse_nested_run()?;
        if self.is_closed() {
            return Err(RunError::Closed);
        }
        let _running = RunningGuard::enter(self);
        let mut run = pin!(self.inner.scope.executor.run(fut));
        let home = self.inner.scope.inbox.reactor_home();
        Ok(block_on(
            Some(home),
            Waiter::Loop,
            poll_fn(|cx| {
                let poll = run.as_mut().poll(cx);
                if poll.is_pending() {
                    signal::before_wait();
                }
                poll
            }),
        ))
    }
}

/// Marks a loop as the one running on this thread, and makes its scope current; undone on drop,
/// even when unwinding.
struct RunningGuard {
    lp: EventLoop,
    _scope: ScopeGuard,
    _workers: WorkersGuard,
}

impl RunningGuard {
    fn enter(lp: &EventLoop) -> Self {
        RUNNING.with(|r| *r.borrow_mut() = Some(lp.clone()));
        lp.inner.running.set(true);
        RunningGuard {
            lp: lp.clone(),
            _scope: ScopeGuard::enter(&lp.inner.scope, lp.slow_poll_threshold()),
            _workers: WorkersGuard::enter(lp.workers()),
        }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.lp.inner.running.set(false);
        let _ = RUNNING.try_with(|r| r.borrow_mut().take());
    }
}

/// Run the blocking function `f` on the running loop's default executor, in a copy of the
/// caller's context (Python's `asyncio.to_thread`).
///
/// # Panics
/// Outside a running loop, or once the loop's default executor was shut down ("executor
/// shutdown has been called").
///
/// ```
/// use runner_core::ContextVar;
/// static USER: ContextVar<&'static str> = ContextVar::new("user");
/// runner_core::run(async {
///     USER.set("ada");
///     let seen = runner_core::to_thread(|| USER.get()).await.unwrap();
///     assert_eq!(seen, Some("ada"));
/// })
/// .unwrap();
/// ```
#[track_caller]
pub fn to_thread<F, T>(f: F) -> Task<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let at = Location::caller();
    if let Some(lp) = get_running_loop() {
        return lp.spawn_blocking(f, Context::current(), at);
    }
    match workers::current() {
        // A pool task: the loop's default executor, through its `Send` handle.
        Some(pool) => spawn_blocking(pool.inbox(), f, Context::current(), at, |header, make| {
            pool.blocking.spawn(header, make, at)
        }),
        None => panic!(
            "runner::to_thread() was called outside a running event loop: call it from code \
             running inside runner::run(), Runner::run() or #[runner::main]"
        ),
    }
}
