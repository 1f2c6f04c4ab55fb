//! The one home of async cleanup scheduling. Every async cleanup (a dropped `defer` guard, a
//! closing generator or finalized stream) is scheduled here so that none is ever silently
//! skipped: tied to the task being polled, which finishes only after it; else spawned on the
//! running loop (or the loop it belongs to) as a finalizer, which close waits for; else on the
//! worker thread it was made on, which finishes its cleanups before it exits; else, with no open
//! loop left, run to completion on the spot.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context as Cx, Poll};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use pin_project_lite::pin_project;

use crate::context::Context;
use crate::driver::io::Waiter;
use crate::driver::park::block_on;
use crate::error::{drop_quietly, panic_message};
use crate::report::{write_stderr, ExceptionContext};
use crate::task::current::push_cleanup;
use crate::task::scope::{self, Cleanup, Closable, Scope, What};
use crate::task::worker_local;
use crate::time::Sleep;

/// Schedule an async cleanup so that it runs exactly once: as part of the task being polled,
/// else on the running loop, else on `home` (the loop it belongs to) if still open, else on this
/// worker thread, else now.
pub(crate) fn schedule_cleanup(cleanup: Cleanup, home: Option<Weak<Scope>>) {
    let cleanup = match push_cleanup(cleanup) {
        Ok(()) => return,
        Err(cleanup) => cleanup,
    };
    let home = home.and_then(|w| w.upgrade());
    match scope::current().or(home).filter(|s| !s.is_closed()) {
        Some(scope) => scope.spawn_finalizer(cleanup),
        None => {
            if let Err(cleanup) = worker_local::spawn_finalizer(cleanup) {
                run_now(vec![cleanup]);
            }
        }
    }
}

/// Register `what` with the running loop, which closes it at shutdown (R5.4): its scope. On a
/// worker thread, with the worker, which closes it at the same point of close (`None`).
pub(crate) fn register_closable(
    what: Weak<dyn Closable>,
    describe: &dyn Fn() -> String,
) -> Option<Weak<Scope>> {
    match scope::current() {
        Some(scope) => {
            scope.register_asyncgen(what, describe);
            Some(Rc::downgrade(&scope))
        }
        None => {
            if let Some(worker) = worker_local::current() {
                worker.register_asyncgen(what, describe);
            }
            None
        }
    }
}

/// Why cleanups that would run on the spot are dropped unfinished instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Abandon {
    /// They run.
    No,
    /// Ctrl-C stopped the waiting (a second one during a run, or one during close): the user
    /// wants out now, nothing is waited for.
    CtrlC,
    /// Close stopped waiting for them: its shutdown timeout ran out.
    CloseTimedOut,
}

thread_local! {
    /// Whether, and why, this thread's close drops cleanups instead of running them.
    static ABANDONING: Cell<Abandon> = const { Cell::new(Abandon::No) };
    /// Cleanups sent home to this thread's loop as it closed: its close runs them.
    static ORPHANS: std::cell::RefCell<Vec<Cleanup>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A cleanup sent home to this thread's loop while it closes (its job refused): the close runs
/// it on the spot, with the cleanups its torn-down tasks left (R5.3).
pub(crate) fn orphan(cleanup: Cleanup) {
    // The thread exiting: the cleanup is dropped with the closure, unrun.
    let _ = ORPHANS.try_with(|o| o.borrow_mut().push(cleanup));
}

/// The cleanups [`orphan`] kept on this thread.
pub(crate) fn take_orphans() -> Vec<Cleanup> {
    ORPHANS
        .try_with(|o| std::mem::take(&mut *o.borrow_mut()))
        .unwrap_or_default()
}

/// While the guard lives, cleanups that would run on the spot are dropped, named on stderr.
pub(crate) struct AbandonGuard(Abandon);

impl AbandonGuard {
    pub(crate) fn new(why: Abandon) -> Self {
        AbandonGuard(ABANDONING.with(|a| a.replace(why)))
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        let _ = ABANDONING.try_with(|a| a.set(self.0));
    }
}

/// True after a second Ctrl-C on this thread: nothing is waited for.
pub(crate) fn is_abandoning() -> bool {
    ABANDONING.try_with(|a| a.get()).unwrap_or(Abandon::No) != Abandon::No
}

/// With no loop left to run them, drive cleanups to completion on this thread.
pub(crate) fn run_now(cleanups: Vec<Cleanup>) {
    run_now_until(cleanups, None);
}

/// With no loop left to run them, drive cleanups to completion on this thread, all at once, for
/// `wait` at most: what is left then is dropped unfinished, and named on stderr (R5.3).
pub(crate) fn run_now_until(mut cleanups: Vec<Cleanup>, wait: Option<Duration>) {
    if cleanups.is_empty() {
        // Before the clock is read: every close gets here, most with nothing to run.
        return;
    }
    let deadline = wait.map(|w| Instant::now() + w);
    let why = ABANDONING.try_with(|a| a.get()).unwrap_or(Abandon::No);
    if why == Abandon::No {
        let all = poll_fn(|cx| {
            cleanups.retain_mut(|c| Pin::new(c).poll(cx).is_pending());
            match cleanups.is_empty() {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        });
        // On the spot: no loop runs here (a timer falls back to async-io's).
        match deadline {
            None => block_on(None, Waiter::Loop, all),
            Some(deadline) => block_on(None, Waiter::Loop, all.or(Sleep::until(deadline))),
        }
        if cleanups.is_empty() {
            return;
        }
    }
    let reason = match why {
        Abandon::CtrlC => "skipped: Ctrl-C stopped the waiting, nothing is waited for",
        _ => "cut short: close stopped waiting for them",
    };
    let names: Vec<String> = cleanups.iter().map(|c| c.what().to_string()).collect();
    write_stderr(format_args!(
        "runner: {} async cleanup(s) {reason}: the {}",
        names.len(),
        names.join(", the ")
    ));
}

/// Wrap a cleanup so that a panic in it is reported (naming it) instead of unwinding into the
/// task or loop that runs it.
pub(crate) fn guarded<F>(cleanup: F, what: What) -> Cleanup
where
    F: Future<Output = ()> + 'static,
{
    let guarded = async move {
        if let Err(payload) = AssertUnwindSafe(cleanup).catch_unwind().await {
            let ctx = ExceptionContext::new(format!("panic in {what}"))
                .with_error(panic_message(&*payload));
            drop_quietly(payload);
            scope::report(None, ctx);
        }
    };
    Cleanup::new(guarded, what)
}

pin_project! {
    /// Polls a future inside a given context: cleanups run in a copy of their creator's.
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
