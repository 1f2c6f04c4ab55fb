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
//! The cleanup is scheduled like every async cleanup (see `task::cleanup`): it is never silently
//! skipped.

use std::fmt;
use std::future::Future;
use std::panic::Location;

use crate::context::Context;
use crate::task::bound::BoundCleanup;
use crate::task::cleanup::{guarded, in_context};
use crate::task::scope::{CleanupKind, What};

/// Run `cleanup` when the returned guard is dropped, as part of the current task.
///
/// The cleanup runs in a copy of the context `defer` was called in. [`Defer::disarm`] cancels it.
///
/// The guard is `Send` (a task on the worker pool may hold one across an await) but the cleanup
/// need not be: it stays on the thread that called `defer` and runs there. A guard dropped on
/// another thread sends it home, and the task that dropped the guard ends only after it has run.
#[track_caller]
pub fn defer<F: Future<Output = ()> + 'static>(cleanup: F) -> Defer {
    let what = What {
        kind: CleanupKind::Defer,
        at: Location::caller(),
    };
    let cleanup = guarded(in_context(Context::current(), cleanup), what);
    Defer {
        cleanup: Some(BoundCleanup::new(cleanup)),
    }
}

/// The guard [`defer`] returns: dropping it schedules the cleanup.
#[must_use = "the cleanup runs when the guard is dropped: bind it with `let _guard = defer(..)`"]
pub struct Defer {
    /// The cleanup, kept on the thread that made it (with the loop it belongs to: where it runs
    /// if no task or loop is running when the guard is dropped).
    cleanup: Option<BoundCleanup>,
}

impl Defer {
    /// Cancel the cleanup: it never runs.
    pub fn disarm(mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup.disarm();
        }
    }
}

impl Drop for Defer {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup.schedule();
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
