//! The task being polled on this thread, and the async cleanups tied to it during the poll.

use std::cell::{Cell, RefCell};
use std::task::Waker;

use crate::header::{Header, TaskRef};
use crate::task::scope::Cleanup;

/// The task being polled on this thread, and how many cleanups polls have left behind.
///
/// The task is plain pointers to its header and to a waker of it, not a counted handle:
/// `PollGuard` sets them for the length of one poll, during which both are alive (the header is
/// in the allocation of the future being polled, the waker is the one it is polled with), and
/// puts the previous values back before the poll returns (on unwind too). Counting a reference on
/// every poll cost more than a tenth of a yield (measured); `current_task` is the one place that
/// makes a counted handle from the pointers. Nothing here needs dropping, so reaching it costs a
/// load (a thread-local with a destructor checks its registration on each access).
struct Current {
    task: Cell<*const Header>,
    /// A waker of `task` that keeps its header alive; null while a task's future is dropped
    /// outside a poll (there is no waker then, and `current_task` gives `None`).
    waker: Cell<*const Waker>,
    /// `CLEANUPS.len()`, so that a poll that left none never touches the list.
    cleanups: Cell<usize>,
}

thread_local! {
    static CURRENT: Current = const {
        Current {
            task: Cell::new(std::ptr::null()),
            waker: Cell::new(std::ptr::null()),
            cleanups: Cell::new(0),
        }
    };
    /// Cleanups tied to the tasks being polled; each poll owns the entries after its start.
    static CLEANUPS: RefCell<Vec<Cleanup>> = const { RefCell::new(Vec::new()) };
}

/// What [`enter`] replaced, for [`leave`].
pub(crate) struct Entered {
    task: *const Header,
    waker: *const Waker,
    /// Where the entered task's cleanups start in the thread's list.
    pub(crate) start: usize,
}

/// Make the task whose header is `header` the one being polled. `waker` must keep the header
/// alive (see `TaskRef::new`): the waker of a spawned task, or a main task's own.
#[inline]
pub(crate) fn enter(header: &Header, waker: Option<&Waker>) -> Entered {
    let waker = waker.map_or(std::ptr::null(), |w| w as *const Waker);
    CURRENT.with(|current| Entered {
        task: current.task.replace(header),
        waker: current.waker.replace(waker),
        start: current.cleanups.get(),
    })
}

/// Undo [`enter`]. The cleanups tied since then, if any are left.
#[inline]
pub(crate) fn leave(prev: &Entered) -> Option<Vec<Cleanup>> {
    let more = CURRENT.with(|current| {
        current.task.set(prev.task);
        current.waker.set(prev.waker);
        current.cleanups.get() > prev.start
    });
    more.then(|| split_cleanups(prev.start))
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

/// The task being polled on this thread, if any (inside `run`, the main task counts). `None`
/// also while a loop's teardown drops a task's future without polling it.
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
        let (task, waker) = (current.task.get(), current.waker.get());
        if task.is_null() || waker.is_null() {
            return None;
        }
        Some(task_being_polled(task, waker))
    })
}

/// A counted handle from the pointers `enter` keeps (see `Current`).
#[allow(unsafe_code)]
fn task_being_polled(task: *const Header, waker: *const Waker) -> TaskRef {
    // SAFETY: non-null `Current` pointers were set by `enter` from references that live for the
    // poll under way on this thread, and are reset before that poll returns; so both point to
    // live values. `enter`'s caller passes a waker that holds a reference to the header's
    // allocation, which `TaskRef::new` requires; cloning it keeps the header alive for the
    // handle.
    unsafe { TaskRef::new(&*task, (*waker).clone()) }
}
