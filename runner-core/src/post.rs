//! Work handed to a loop from any thread, and the trait of whoever takes it. A task's header
//! keeps its loop as a [`Post`] so that a report made about the task on another thread reaches
//! the loop's exception handler, and so that the task can tell whether its loop is closing.

use std::cell::RefCell;
use std::sync::Arc;

use crate::report::ExceptionContext;

/// A job posted to a loop (or a worker) from any thread: a `call_soon_threadsafe` callback, or
/// runner's own (a request to a generator's thread, a cleanup sent home). A loop that closes
/// with jobs queued hands each one [`Delivery::Refused`] instead of dropping it, so that runner's
/// own can answer or say what they could not do; a user's callback is dropped unrun then, as
/// Python drops a closed loop's pending callbacks.
pub(crate) type Job = Box<dyn FnOnce(Delivery) + Send>;

/// Whether a posted job runs on an open loop, or is refused by a closing one (on the loop's
/// thread, during its close).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    Run,
    Refused,
}

/// A job that runs `f`, and does nothing more if refused (`f` is dropped unrun).
pub(crate) fn job(f: impl FnOnce() + Send + 'static) -> Job {
    Box::new(move |delivery| {
        if delivery == Delivery::Run {
            f();
        }
    })
}

/// A loop's (or a worker's) cross-thread way in, as its tasks and kept values see it.
pub(crate) trait Post: Send + Sync {
    /// Queue `job` to run on the loop's thread; gives it back if the loop is closed.
    fn post(&self, job: Job) -> Result<(), Job>;

    /// Queue a report for the loop's exception handler; gives it back if the loop is closed (or
    /// this is not a loop). A report queued before close is delivered, even by close itself.
    fn report(&self, ctx: ExceptionContext) -> Result<(), ExceptionContext> {
        Err(ctx)
    }

    /// True while the loop's close cancels its tasks (R2.1, R2.2).
    fn is_closing(&self) -> bool {
        false
    }
}

thread_local! {
    /// Where reports made on this thread go when no loop runs here: a worker thread's or a
    /// blocking-pool thread's loop.
    static REPORT_TO: RefCell<Option<Arc<dyn Post>>> = const { RefCell::new(None) };
}

/// Sends this thread's reports to a loop while it lives (a worker or blocking-pool thread of
/// that loop); undone on drop.
pub(crate) struct ReportTo(Option<Arc<dyn Post>>);

impl ReportTo {
    pub(crate) fn enter(owner: Arc<dyn Post>) -> ReportTo {
        ReportTo(REPORT_TO.with(|r| r.borrow_mut().replace(owner)))
    }
}

impl Drop for ReportTo {
    fn drop(&mut self) {
        let prev = self.0.take();
        let _ = REPORT_TO.try_with(|r| *r.borrow_mut() = prev);
    }
}

/// Queue `ctx` for the loop this thread reports to; gives it back if there is none, or it has
/// closed.
pub(crate) fn report_to_this_threads_loop(ctx: ExceptionContext) -> Result<(), ExceptionContext> {
    match REPORT_TO.try_with(|r| r.borrow().clone()).ok().flatten() {
        Some(to) => to.report(ctx),
        None => Err(ctx),
    }
}
