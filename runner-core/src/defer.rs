//! `defer`: an async `finally`. When the guard is dropped (at the end of its scope, by a panic
//! or by the cancellation of its task) its cleanup future runs on the loop, as part of the task
//! that dropped it: the task counts as finished only after the cleanup has completed.
//!
//! ```
//! use std::{cell::RefCell, rc::Rc, time::Duration};
//!
//! let log = Rc::new(RefCell::new(Vec::new()));
//! let l = log.clone();
//! runner_core::run(async move {
//!     let l2 = l.clone();
//!     let task = runner_core::spawn(async move {
//!         let _goodbye = runner_core::defer(async move {
//!             runner_core::sleep(Duration::from_millis(1)).await; // async cleanup
//!             l2.borrow_mut().push("cleanup ran");
//!         });
//!         runner_core::sleep(Duration::from_secs(60)).await;
//!     });
//!     runner_core::yield_now().await;
//!     task.cancel();
//!     assert!(task.await.unwrap_err().is_cancelled());
//!     l.borrow_mut().push("awaiter saw Cancelled");
//! })
//! .unwrap();
//! assert_eq!(*log.borrow(), ["cleanup ran", "awaiter saw Cancelled"]);
//! ```
//!
//! This module also holds the one way every async cleanup (deferred, generator, stream) is
//! scheduled, so that none is ever silently skipped: tied to the task being polled; else spawned
//! on the running loop (or the loop it belongs to) where close waits for it; else, with no open
//! loop left, run to completion on the spot.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location};
use std::pin::Pin;
use std::rc::Weak;
use std::task::{Context as Cx, Poll};

use futures_lite::FutureExt;
use pin_project_lite::pin_project;

use crate::context::Context;
use crate::error::{drop_quietly, panic_message};
use crate::event_loop::{self, EventLoop, LoopInner};
use crate::exception::{place, ExceptionContext};
use crate::task::{self, Cleanup};

/// Run `cleanup` when the returned guard is dropped, as part of the current task.
///
/// The cleanup runs in a copy of the context `defer` was called in. [`Defer::disarm`] cancels it.
#[track_caller]
pub fn defer<F: Future<Output = ()> + 'static>(cleanup: F) -> Defer {
    let at = Location::caller();
    let cleanup = guarded(in_context(Context::current(), cleanup), move || {
        format!("deferred cleanup created at {}", place(at))
    });
    let lp = event_loop::get_running_loop().map(|lp| std::rc::Rc::downgrade(&lp.inner));
    Defer {
        cleanup: Some(cleanup),
        lp,
    }
}

/// The guard [`defer`] returns: dropping it schedules the cleanup.
#[must_use = "the cleanup runs when the guard is dropped: bind it with `let _guard = defer(..)`"]
pub struct Defer {
    cleanup: Option<Cleanup>,
    lp: Option<Weak<LoopInner>>,
}

impl Defer {
    /// Cancel the cleanup: it never runs.
    pub fn disarm(mut self) {
        self.cleanup = None;
    }
}

impl Drop for Defer {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            schedule_cleanup(cleanup, self.lp.take());
        }
    }
}

impl fmt::Debug for Defer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Defer")
            .field("armed", &self.cleanup.is_some())
            .finish()
    }
}

/// Schedule an async cleanup so that it runs exactly once: as part of the task being polled,
/// else on the running loop, else on `home` (the loop it belongs to) if still open, else now.
pub(crate) fn schedule_cleanup(cleanup: Cleanup, home: Option<Weak<LoopInner>>) {
    let cleanup = match task::push_cleanup(cleanup) {
        Ok(()) => return,
        Err(cleanup) => cleanup,
    };
    let home = home
        .and_then(|w| w.upgrade())
        .map(|inner| EventLoop { inner });
    match event_loop::get_running_loop()
        .or(home)
        .filter(|lp| !lp.is_closed())
    {
        Some(lp) => lp.spawn_finalizer(cleanup),
        None => run_on_the_spot(vec![cleanup]),
    }
}

thread_local! {
    /// Set after a second Ctrl-C: the user wants out now, so cleanups are not waited for.
    static ABANDONING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// While the guard lives, cleanups that would run on the spot are dropped with a warning
/// instead (R6.3: after the second Ctrl-C nothing is waited for).
pub(crate) struct Abandoning(bool);

impl Abandoning {
    pub(crate) fn new(on: bool) -> Self {
        Abandoning(ABANDONING.with(|a| a.replace(on)))
    }
}

impl Drop for Abandoning {
    fn drop(&mut self) {
        ABANDONING.with(|a| a.set(self.0));
    }
}

/// With no loop left to run them, drive cleanups to completion on this thread.
pub(crate) fn run_on_the_spot(cleanups: Vec<Cleanup>) {
    if cleanups.is_empty() {
        return;
    }
    if ABANDONING.with(|a| a.get()) {
        crate::exception::write_stderr(format_args!(
            "runner: {} async cleanup(s) skipped: Ctrl-C was pressed twice, nothing is waited for",
            cleanups.len()
        ));
        return;
    }
    for cleanup in cleanups {
        async_io::block_on(cleanup);
    }
}

/// Wrap a cleanup so that a panic in it is reported (naming it) instead of unwinding into the
/// task or loop that runs it.
pub(crate) fn guarded<F, D>(cleanup: F, describe: D) -> Cleanup
where
    F: Future<Output = ()> + 'static,
    D: FnOnce() -> String + 'static,
{
    Box::pin(async move {
        if let Err(payload) = AssertUnwindSafe(cleanup).catch_unwind().await {
            event_loop::report(
                None,
                ExceptionContext::new(format!("panic in {}", describe()))
                    .with_error(panic_message(&*payload)),
            );
            drop_quietly(payload);
        }
    })
}

pin_project! {
    /// Polls a future inside a given context (R4.5: cleanups run in a copy of their creator's).
    pub(crate) struct InContext<F> {
        ctx: Context,
        #[pin]
        fut: F,
    }
}

pub(crate) fn in_context<F: Future>(ctx: Context, fut: F) -> InContext<F> {
    InContext { ctx, fut }
}

impl<F: Future> Future for InContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.ctx.enter();
        this.fut.poll(cx)
    }
}
