//! The task being polled on this thread, and the async cleanups tied to it during the poll.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::task::header::{Header, TaskRef};
use crate::task::scope::Cleanup;

/// The task being polled on this thread, and how many cleanups polls have left behind.
///
/// The task is a plain pointer to its header, not a counted reference: `PollGuard` sets it for
/// the length of one poll, during which the `TaskFuture` being polled owns an `Arc` to that
/// header, and puts the previous value back before the poll returns (on unwind too). Cloning and
/// dropping an `Arc` on every poll cost more than a tenth of a yield (measured); `current_task`
/// is the one place that makes a counted handle from the pointer. Nothing here needs dropping,
/// so reaching it costs a load (a thread-local with a destructor checks its registration on each
/// access).
struct Current {
    task: Cell<*const Header>,
    /// `CLEANUPS.len()`, so that a poll that left none never touches the list.
    cleanups: Cell<usize>,
}

thread_local! {
    static CURRENT: Current = const {
        Current { task: Cell::new(std::ptr::null()), cleanups: Cell::new(0) }
    };
    /// Cleanups tied to the tasks being polled; each poll owns the entries after its start.
    static CLEANUPS: RefCell<Vec<Cleanup>> = const { RefCell::new(Vec::new()) };
}

/// Make `header`'s task the one being polled; the previous one and where this task's cleanups
/// start in the thread's list, for [`leave`].
#[inline]
pub(crate) fn enter(header: &Arc<Header>) -> (*const Header, usize) {
    CURRENT.with(|current| {
        (
            current.task.replace(Arc::as_ptr(header)),
            current.cleanups.get(),
        )
    })
}

/// Undo [`enter`]: `prev` is current again. The cleanups tied since `start`, if any are left.
#[inline]
pub(crate) fn leave(prev: *const Header, start: usize) -> Option<Vec<Cleanup>> {
    let more = CURRENT.with(|current| {
        current.task.set(prev);
        current.cleanups.get() > start
    });
    more.then(|| split_cleanups(start))
}

/// The cleanups tied since `start`, if any.
#[inline]
pub(crate) fn take_cleanups(start: usize) -> Option<Vec<Cleanup>> {
    let len = CURRENT.with(|current| current.cleanups.get());
    (len > start).then(|| split_cleanups(start))
}

/// Tie `cleanup` to the task being polled on this thread; gives it back if there is none.
pub(crate) fn push_cleanup(cleanup: Cleanup) -> Result<(), Cleanup> {
    if CURRENT.with(|current| current.task.get().is_null()) {
        return Err(cleanup);
    }
    CLEANUPS.with(|list| {
        let mut list = list.borrow_mut();
        list.push(cleanup);
        CURRENT.with(|current| current.cleanups.set(list.len()));
    });
    Ok(())
}

/// The cleanups after position `start` of the thread's list.
fn split_cleanups(start: usize) -> Vec<Cleanup> {
    CLEANUPS.with(|list| {
        let mut list = list.borrow_mut();
        let tail = match list.len() > start {
            true => list.split_off(start),
            false => Vec::new(),
        };
        CURRENT.with(|current| current.cleanups.set(list.len()));
        tail
    })
}

/// The task being polled on this thread, if any (inside `run`, the main task counts).
///
/// ```
/// runner_core::run(async {
///     let me = runner_core::current_task().unwrap();
///     assert_eq!(me.info().name(), Some("main"));
/// })
/// .unwrap();
/// assert!(runner_core::current_task().is_none());
/// ```
pub fn current_task() -> Option<TaskRef> {
    CURRENT.with(|current| {
        let task = current.task.get();
        if task.is_null() {
            return None;
        }
        Some(TaskRef(header_being_polled(task)))
    })
}

/// A counted handle from the pointer `enter` keeps (see `Current`).
#[allow(unsafe_code)]
fn header_being_polled(task: *const Header) -> Arc<Header> {
    // SAFETY: a non-null `Current::task` was made by `Arc::as_ptr` from the `Arc<Header>` owned
    // by the `TaskFuture` being polled on this thread, and is reset before that poll returns; the
    // `Arc` is alive, so adding a count and taking ownership of that count is sound.
    unsafe {
        Arc::increment_strong_count(task);
        Arc::from_raw(task)
    }
}
