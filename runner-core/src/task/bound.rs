//! An async cleanup that stays on the thread that made it, behind a handle that may travel.
//!
//! A `defer` guard must be `Send` so that a pool task can hold one across an await, but its
//! cleanup need not be: the cleanup is kept in a table of the thread that made it and the guard
//! holds only its place there. Dropped on that thread, the guard schedules the cleanup as
//! always. Dropped on another one, it posts a job home (to the loop's queue, or the worker's
//! mailbox) that schedules the cleanup there, and the task that dropped it waits until the
//! cleanup has run. A cleanup never crosses threads, so none of this needs `unsafe`.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::panic::Location;
use std::rc::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::catch_quietly;
use crate::post::{Job, Post};
use crate::report::{source_location, write_stderr};
use crate::task::cleanup::schedule_cleanup;
use crate::task::current::push_cleanup;
use crate::task::scope::{self, Cleanup, Scope};
use crate::task::worker_local::{self, Done, DoneGuard};

/// A cleanup kept on its thread, with the loop it belongs to.
struct Entry {
    cleanup: Cleanup,
    scope: Option<Weak<Scope>>,
}

/// The thread's kept cleanups: a slab, so that a place is taken back once, by its one handle.
#[derive(Default)]
struct Table {
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
}

thread_local! {
    /// This thread's key (0 until first needed): thread ids without `thread::current()`'s
    /// reference count.
    static THREAD: Cell<u64> = const { Cell::new(0) };
    static TABLE: RefCell<Table> = RefCell::default();
}

static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

fn this_thread() -> u64 {
    THREAD.with(|key| {
        if key.get() == 0 {
            key.set(NEXT_THREAD.fetch_add(1, Ordering::Relaxed));
        }
        key.get()
    })
}

/// Take the entry at `index` out of this thread's table; `None` if the table is gone (the thread
/// is exiting) or was cleared.
fn take(index: usize) -> Option<Entry> {
    TABLE
        .try_with(|table| {
            let mut table = table.try_borrow_mut().ok()?;
            let entry = table.entries.get_mut(index)?.take()?;
            table.free.push(index);
            Some(entry)
        })
        .ok()
        .flatten()
}

/// The handle to a cleanup kept on the thread that made it. It is consumed by
/// [`schedule`](Self::schedule) or [`disarm`](Self::disarm).
pub(crate) struct BoundCleanup {
    thread: u64,
    index: usize,
    /// Where a job for the making thread is posted: its running loop or its worker's mailbox.
    home: Option<Arc<dyn Post>>,
    made_at: &'static Location<'static>,
}

impl BoundCleanup {
    /// Keep `cleanup` on this thread; it belongs to the running loop, if any.
    pub(crate) fn new(cleanup: Cleanup, made_at: &'static Location<'static>) -> BoundCleanup {
        let loop_scope = scope::current();
        let home = match &loop_scope {
            Some(scope) => Some(scope.inbox.owner()),
            None => worker_local::current().map(|w| w.mailbox()),
        };
        let entry = Entry {
            cleanup,
            scope: loop_scope.map(|s| std::rc::Rc::downgrade(&s)),
        };
        let index = TABLE.with(|table| {
            let mut table = table.borrow_mut();
            match table.free.pop() {
                Some(index) => {
                    table.entries[index] = Some(entry);
                    index
                }
                None => {
                    table.entries.push(Some(entry));
                    table.entries.len() - 1
                }
            }
        });
        BoundCleanup {
            thread: this_thread(),
            index,
            home,
            made_at,
        }
    }

    /// The guard was dropped: schedule the cleanup on its thread. From another thread, the task
    /// being polled here (if any) waits until it has run.
    pub(crate) fn schedule(self) {
        if self.thread == this_thread() {
            if let Some(entry) = take(self.index) {
                schedule_cleanup(entry.cleanup, entry.scope);
            }
            return;
        }
        let done = Arc::new(Done::default());
        let signal = DoneGuard(done.clone());
        let index = self.index;
        let job: Job = Box::new(move || {
            if let Some(entry) = take(index) {
                let cleanup = Box::pin(async move {
                    let _signal = signal;
                    entry.cleanup.await;
                });
                schedule_cleanup(cleanup, entry.scope);
            }
        });
        if self.post_home(job) {
            let wait = Box::pin(poll_fn(move |cx| done.poll_done(cx)));
            let _ = push_cleanup(wait);
        }
    }

    /// Drop the cleanup unrun, on its thread.
    pub(crate) fn disarm(self) {
        let index = self.index;
        let drop_it = move || {
            if let Some(entry) = take(index) {
                catch_quietly(move || drop(entry));
            }
        };
        if self.thread == this_thread() {
            drop_it();
        } else if let Some(home) = &self.home {
            let _ = home.post(Box::new(drop_it));
        }
    }

    /// Post `job` to the thread that made the cleanup; false, with a word on stderr, if that
    /// thread's loop or worker has closed (the cleanup cannot run: it is not `Send`).
    fn post_home(&self, job: Job) -> bool {
        let refused = match &self.home {
            Some(home) => home.post(job).err(),
            None => Some(job),
        };
        let Some(job) = refused else { return true };
        drop(job);
        write_stderr(format_args!(
            "runner: the defer guard made at {} was dropped on another thread after the loop \
             or worker that made it had closed (or outside any): its cleanup is not `Send` and \
             does not run; drop the guard before closing, or on the thread that made it",
            source_location(self.made_at)
        ));
        false
    }
}

/// Drop the cleanups still kept on this thread (a worker about to exit): guards dropped later
/// elsewhere say that theirs did not run.
pub(crate) fn drop_kept() {
    let kept = TABLE
        .try_with(|table| std::mem::take(&mut *table.borrow_mut()))
        .unwrap_or_default();
    catch_quietly(move || drop(kept));
}
