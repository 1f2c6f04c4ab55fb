//! Values kept on the thread that made them, behind handles that may travel.
//!
//! A `defer` guard, a generator or a finalized stream must be `Send` so that a pool task can hold
//! one across an await, but what it owns (a cleanup, a generator's body) need not be. So that
//! part is kept in a table of the thread that made it, and the handle holds only its place there
//! ([`Kept`]). On that thread the handle uses it directly. From another thread it posts a job
//! home (to the loop's queue, or the worker's mailbox). A handle dropped elsewhere sends the
//! cleanup home that way, and the task that dropped it waits until the cleanup has run
//! ([`Kept::finish`]). Nothing kept ever crosses threads, so none of this needs `unsafe`.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use crate::error::catch_quietly;
use crate::post::{Delivery, Job, Post};
use crate::report::write_stderr;
use crate::task::cleanup::{orphan, schedule_cleanup};
use crate::task::current::push_cleanup;
use crate::task::scope::{self, Cleanup, Scope, What};
use crate::task::worker_local::{self, Done, DoneGuard};

/// The thread's kept values: a slab, so that a place is taken back once, by its one handle.
#[derive(Default)]
struct Table {
    entries: Vec<Option<Box<dyn Any>>>,
    free: Vec<usize>,
}

/// The values still kept when the thread exits (or a worker drops them) are user code: each is
/// dropped on its own and a panic in its destructor is contained, since a panic in a
/// thread-local's destructor aborts the process.
impl Drop for Table {
    fn drop(&mut self) {
        for value in std::mem::take(&mut self.entries).into_iter().flatten() {
            catch_quietly(move || drop(value));
        }
    }
}

/// This thread's key and table, in one thread-local: a handle used on its own thread checks the
/// one and reaches the other in a single access.
struct Local {
    /// This thread's key (0 until first needed): thread ids without `thread::current()`'s
    /// reference count.
    key: Cell<u64>,
    table: RefCell<Table>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            key: Cell::new(0),
            table: RefCell::new(Table {
                entries: Vec::new(),
                free: Vec::new(),
            }),
        }
    };
}

static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

impl Local {
    /// A clone of the value at `index`, if it is an `X`; `None` while the table is borrowed.
    #[inline]
    fn clone_at<X: Clone + 'static>(&self, index: usize) -> Option<X> {
        let table = self.table.try_borrow().ok()?;
        let value = table.entries.get(index)?.as_ref()?;
        value.downcast_ref::<X>().cloned()
    }

    fn key(&self) -> u64 {
        if self.key.get() == 0 {
            self.key.set(NEXT_THREAD.fetch_add(1, Ordering::Relaxed));
        }
        self.key.get()
    }
}

fn this_thread() -> u64 {
    LOCAL.try_with(Local::key).unwrap_or(u64::MAX)
}

/// A clone of the value kept at `index` on this thread, if it is an `X`. The table is not
/// borrowed while the caller uses it (a generator's body may keep values of its own).
pub(crate) fn get<X: Clone + 'static>(index: usize) -> Option<X> {
    LOCAL.try_with(|local| local.clone_at(index)).ok().flatten()
}

/// Take the value kept at `index` out of this thread's table, if it is an `X`; `None` if the
/// table is gone (the thread is exiting) or was cleared.
pub(crate) fn take<X: 'static>(index: usize) -> Option<X> {
    let taken = LOCAL
        .try_with(|local| {
            let mut table = local.table.try_borrow_mut().ok()?;
            let slot = table.entries.get_mut(index)?;
            if !slot.as_ref()?.is::<X>() {
                return None;
            }
            let value = slot.take()?;
            table.free.push(index);
            Some(value)
        })
        .ok()
        .flatten()?;
    taken.downcast::<X>().ok().map(|value| *value)
}

/// Drop the values still kept on this thread (a worker about to exit): handles dropped later
/// elsewhere say that their cleanup did not run.
pub(crate) fn drop_kept() {
    let kept = LOCAL
        .try_with(|local| std::mem::take(&mut *local.table.borrow_mut()))
        .unwrap_or_default();
    drop(kept);
}

/// What a kept value's thread does when its handle is dropped: take the value out of the table
/// (given its place) and give the cleanup to run, with the loop it belongs to.
pub(crate) type Finish = fn(usize) -> Option<(Cleanup, Option<Weak<Scope>>)>;

/// Where a kept value lives: its thread, its place there, and how to reach that thread.
pub(crate) struct Kept {
    thread: u64,
    index: usize,
    /// Where a job for the value's thread is posted: its running loop or its worker's mailbox.
    home: Option<Arc<dyn Post>>,
}

impl Kept {
    /// Keep `value` on this thread, reachable through the running loop or this worker.
    pub(crate) fn new(value: Box<dyn Any>) -> Kept {
        let home = match scope::current() {
            Some(scope) => Some(scope.inbox.owner()),
            None => worker_local::current().map(|w| w.mailbox()),
        };
        let (thread, index) = LOCAL.with(|local| {
            let mut table = local.table.borrow_mut();
            match table.free.pop() {
                Some(index) => {
                    table.entries[index] = Some(value);
                    (local.key(), index)
                }
                None => {
                    table.entries.push(Some(value));
                    (local.key(), table.entries.len() - 1)
                }
            }
        });
        Kept {
            thread,
            index,
            home,
        }
    }

    /// True on the thread that keeps the value.
    pub(crate) fn is_here(&self) -> bool {
        self.thread == this_thread()
    }

    /// On the value's thread, a clone of it (`None` inside if it is no longer kept: the thread is
    /// exiting); `None` on any other thread. One thread-local access.
    #[inline]
    pub(crate) fn get_here<X: Clone + 'static>(&self) -> Option<Option<X>> {
        LOCAL
            .try_with(|local| {
                if local.key.get() != self.thread {
                    return None;
                }
                Some(local.clone_at(self.index))
            })
            .unwrap_or(Some(None))
    }

    /// The value's place in its thread's table.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Queue `job` on the value's thread; gives it back if that thread's loop or worker has
    /// closed (or it had none).
    pub(crate) fn post(&self, job: Job) -> Result<(), Job> {
        match &self.home {
            Some(home) => home.post(job),
            None => Err(job),
        }
    }

    /// A waker that runs `job(index, _)` on the value's thread each time it is woken; `None` if
    /// that thread cannot be reached.
    pub(crate) fn waker_for(&self, job: fn(usize, Delivery)) -> Option<Waker> {
        let home = self.home.clone()?;
        Some(Waker::from(Arc::new(PostOnWake {
            home,
            index: self.index,
            job,
        })))
    }

    /// The handle is dropped: schedule the cleanup `finish` gives (`what`), on the value's
    /// thread. From another thread, the task being polled here (if any) waits until it has run.
    /// If that thread cannot be reached the cleanup cannot run (it is not `Send`), and stderr
    /// says so.
    pub(crate) fn finish(&self, finish: Finish, what: What) {
        if self.is_here() {
            if let Some((cleanup, scope)) = finish(self.index) {
                schedule_cleanup(cleanup, scope);
            }
            return;
        }
        let done = Arc::new(Done::default());
        let signal = DoneGuard(done.clone());
        let index = self.index;
        let job: Job = Box::new(move |delivery| {
            if let Some((cleanup, scope)) = finish(index) {
                let what = cleanup.what();
                let cleanup = Cleanup::new(
                    async move {
                        let _signal = signal;
                        cleanup.await;
                    },
                    what,
                );
                match delivery {
                    Delivery::Run => schedule_cleanup(cleanup, scope),
                    // The loop closes with this job queued: its close runs the cleanup on the
                    // spot, with the ones its torn-down tasks left.
                    Delivery::Refused => orphan(cleanup),
                }
            }
        });
        match self.post(job) {
            Ok(()) => {
                let wait = Cleanup::new(poll_fn(move |cx| done.poll_done(cx)), what);
                let _ = push_cleanup(wait);
            }
            Err(job) => {
                drop(job);
                write_stderr(format_args!(
                    "runner: the owner of the {what} was dropped on another thread after the loop \
                     or worker that made it had closed (or outside any): its cleanup is not `Send` \
                     and does not run; drop it before closing, or on the thread that made it"
                ));
            }
        }
    }

    /// Drop the value unused, on its thread.
    pub(crate) fn discard<X: 'static>(&self) {
        let index = self.index;
        let drop_it = move || {
            if let Some(value) = take::<X>(index) {
                catch_quietly(move || drop(value));
            }
        };
        if self.is_here() {
            drop_it();
        } else {
            let _ = self.post(Box::new(move |_| drop_it()));
        }
    }
}

/// Posts `job(index)` to a kept value's thread when woken.
struct PostOnWake {
    home: Arc<dyn Post>,
    index: usize,
    job: fn(usize, Delivery),
}

impl Wake for PostOnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let (job, index) = (self.job, self.index);
        let _ = self
            .home
            .post(Box::new(move |delivery| job(index, delivery)));
    }
}

/// A `defer` guard's cleanup, with the loop it belongs to.
struct Entry {
    cleanup: Cleanup,
    scope: Option<Weak<Scope>>,
}

/// The handle to a cleanup kept on the thread that made it (a `defer` guard's). It is consumed
/// by [`schedule`](Self::schedule) or [`disarm`](Self::disarm).
pub(crate) struct BoundCleanup {
    kept: Kept,
    what: What,
}

impl BoundCleanup {
    /// Keep `cleanup` on this thread; it belongs to the running loop, if any.
    pub(crate) fn new(cleanup: Cleanup) -> BoundCleanup {
        let scope = scope::current().map(|s| Rc::downgrade(&s));
        let what = cleanup.what();
        BoundCleanup {
            kept: Kept::new(Box::new(Entry { cleanup, scope })),
            what,
        }
    }

    /// The guard was dropped: schedule the cleanup on its thread (see [`Kept::finish`]).
    pub(crate) fn schedule(self) {
        self.kept.finish(
            |index| take::<Entry>(index).map(|e| (e.cleanup, e.scope)),
            self.what,
        );
    }

    /// Drop the cleanup unrun, on its thread.
    pub(crate) fn disarm(self) {
        self.kept.discard::<Entry>();
    }
}
