//! What a task's handles, its registry entry and its running future share: identity, state
//! flags, the task's waker, a panic waiting for its awaiter. And [`TaskRef`], the untyped handle.

use std::any::Any;
use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use event_listener::Event;

use crate::lock::lock;
use crate::queue::Inbox;
use crate::report::TaskInfo;

/// `cancel()` was called: the future is dropped at its next scheduling point.
pub(crate) const CANCEL_REQUESTED: u8 = 1;
/// The future is gone (finished, cancelled, panicked or torn down) and its cleanups have run.
pub(crate) const FINISHED: u8 = 2;
/// A panic is stored in `Header::panic` for the awaiter.
pub(crate) const PANICKED: u8 = 4;
/// The `Task` handle was dropped without retrieving the output: a panic is reported instead.
pub(crate) const DETACHED: u8 = 8;
/// `cancel()` was called by code (not only by Ctrl-C): the run then ends `Cancelled`, not
/// `Interrupted`.
pub(crate) const CANCELLED_BY_CODE: u8 = 16;
/// Someone waits on `finished`: only then does finishing notify (notifying allocates).
const LISTENED: u8 = 32;

static NEXT_TASK_ID: AtomicU64 = AtomicU64::new(1);

/// A task's shared state.
pub(crate) struct Header {
    pub(crate) id: u64,
    name: Option<Arc<str>>,
    spawned_at: &'static Location<'static>,
    /// The flags above.
    state: AtomicU8,
    /// The waker of the task itself, kept from its first poll so that `cancel()` can schedule it
    /// from anywhere, and close can reach a task that waits. async-task polls a task with the
    /// same waker every time. (A mutex, not a `OnceLock`: setting that cost five times more.)
    waker: Mutex<Option<Waker>>,
    /// A panic waiting to be retrieved by whoever awaits the task.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    finished: Event,
    /// The loop the task belongs to: where reports made off its thread are posted.
    pub(crate) owner: Inbox,
}

impl Header {
    pub(crate) fn new(
        name: Option<&str>,
        spawned_at: &'static Location<'static>,
        owner: Inbox,
    ) -> Arc<Header> {
        Arc::new(Header {
            id: NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed),
            name: name.map(Arc::from),
            spawned_at,
            state: AtomicU8::new(0),
            waker: Mutex::new(None),
            panic: Mutex::new(None),
            finished: Event::new(),
            owner,
        })
    }

    pub(crate) fn waker(&self) -> MutexGuard<'_, Option<Waker>> {
        lock(&self.waker)
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.state.load(Ordering::Acquire) & flag != 0
    }

    /// Set `flags`; the flags as they were before.
    pub(crate) fn set(&self, flags: u8) -> u8 {
        self.state.fetch_or(flags, Ordering::AcqRel)
    }

    pub(crate) fn info(&self) -> TaskInfo {
        TaskInfo::new(self.id, self.name.clone(), Some(self.spawned_at))
    }

    /// Ask the task to stop at its next scheduling point.
    pub(crate) fn cancel(&self, flags: u8) {
        let prev = self.set(flags);
        if prev & (FINISHED | CANCEL_REQUESTED) == 0 {
            // Not polled yet means it is queued and will see the flag on its first poll.
            let waker = self.waker().clone();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    pub(crate) fn take_panic(&self) -> Option<Box<dyn Any + Send>> {
        lock(&self.panic).take()
    }

    /// Keep a panic for the task's awaiter; true if the handle is already gone, so the panic
    /// must be reported instead.
    pub(crate) fn store_panic(&self, payload: Box<dyn Any + Send>) -> bool {
        *lock(&self.panic) = Some(payload);
        self.set(PANICKED) & DETACHED != 0
    }

    pub(crate) fn finish(&self) {
        if self.set(FINISHED) & LISTENED != 0 {
            self.finished.notify(usize::MAX);
        }
    }
}

/// An untyped handle to a task: cancel it, see whether it finished, read its info.
#[derive(Clone)]
pub struct TaskRef(pub(crate) Arc<Header>);

impl TaskRef {
    /// Ask the task to stop: see [`Task::cancel`](crate::Task::cancel).
    pub fn cancel(&self) {
        self.0.cancel(CANCEL_REQUESTED | CANCELLED_BY_CODE);
    }

    /// Ctrl-C's cancellation: like `cancel`, but not counted as cancelled by code.
    pub(crate) fn cancel_for_interrupt(&self) {
        self.0.cancel(CANCEL_REQUESTED);
    }

    /// True if code (not only Ctrl-C) cancelled the task.
    pub(crate) fn is_cancelled_by_code(&self) -> bool {
        self.0.has(CANCELLED_BY_CODE)
    }

    /// True once the task has finished.
    pub fn is_finished(&self) -> bool {
        self.0.has(FINISHED)
    }

    /// The task's id, name and spawn location.
    pub fn info(&self) -> TaskInfo {
        self.0.info()
    }

    /// True once `cancel()` was called on the task (by anyone).
    pub fn is_cancel_requested(&self) -> bool {
        self.0.has(CANCEL_REQUESTED)
    }

    /// Wait until the task has finished, however it finished.
    pub(crate) async fn finished(&self) {
        loop {
            if self.is_finished() {
                return;
            }
            let listener = self.0.finished.listen();
            // Listening before flagging means a finish that sees the flag also sees the listener.
            if self.0.set(LISTENED) & FINISHED != 0 {
                return;
            }
            listener.await;
        }
    }
}

impl fmt::Debug for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TaskRef").field(&self.0.info()).finish()
    }
}
