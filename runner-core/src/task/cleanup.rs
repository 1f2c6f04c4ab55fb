//! The one home of async cleanup scheduling. Every async cleanup (a dropped `defer` guard, a
//! closing generator or finalized stream) is scheduled here so that none is ever silently
//! skipped: tied to the task being polled, which finishes only after it; else spawned on the
//! running loop (or the loop it belongs to) as a finalizer, which close waits for; else on the
//! worker thread it was made on, which finishes its cleanups before it exits; else, with no open
//! loop left, run to completion on the spot.

use std::cell::Cell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context as Cx, Poll};

use futures_lite::FutureExt;
use pin_project_lite::pin_project;

use crate::context::Context;
use crate::error::{drop_quietly, panic_message};
use crate::report::{write_stderr, ExceptionContext};
use crate::task::current::push_cleanup;
use crate::task::scope::{self, Cleanup, Closable, Scope};
use crate::task::worker_local;

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

/// Register `what` with the running loop, which closes it at shutdown; the loop's scope.
pub(crate) fn register_closable(
    what: Weak<dyn Closable>,
    describe: &dyn Fn() -> String,
) -> Option<Weak<Scope>> {
    let scope = scope::current()?;
    scope.register_asyncgen(what, describe);
    Some(Rc::downgrade(&scope))
}

thread_local! {
    /// Set after a second Ctrl-C: the user wants out now, so cleanups are not waited for.
    static ABANDONING: Cell<bool> = const { Cell::new(false) };
}

/// While the guard lives, cleanups that would run on the spot are dropped with a warning
/// instead: after the second Ctrl-C nothing is waited for.
pub(crate) struct AbandonGuard(bool);

impl AbandonGuard {
    pub(crate) fn new(on: bool) -> Self {
        AbandonGuard(ABANDONING.with(|a| a.replace(on)))
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        let _ = ABANDONING.try_with(|a| a.set(self.0));
    }
}

/// True after a second Ctrl-C on this thread: nothing is waited for.
pub(crate) fn is_abandoning() -> bool {
    ABANDONING.with(|a| a.get())
}

/// With no loop left to run them, drive cleanups to completion on this thread.
pub(crate) fn run_now(cleanups: Vec<Cleanup>) {
    if cleanups.is_empty() {
        return;
    }
    if ABANDONING.with(|a| a.get()) {
        write_stderr(format_args!(
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
            let ctx = ExceptionContext::new(format!("panic in {}", describe()))
                .with_error(panic_message(&*payload));
            drop_quietly(payload);
            scope::report(None, ctx);
        }
    })
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
