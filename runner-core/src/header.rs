//! What a task's handles, its registry entry and its running future share: identity, state flags,
//! a panic waiting for its awaiter. A spawned task's [`Header`] is async-task's metadata, in the
//! task's own allocation: one allocation per task. And [`TaskRef`], the untyped handle.

use std::any::Any;
use std::fmt;
use std::panic::Location;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

use event_listener::Event;

use crate::error::drop_quietly;
use crate::lock::lock;
use crate::post::Post;
use crate::report::TaskInfo;

/// A runnable task of runner's: its header is async-task's metadata.
pub(crate) type Runnable = async_task::Runnable<Header>;

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
/// The future has returned a value (not cancelled, not panicked); the task may still be running
/// the async cleanups it left.
pub(crate) const RETURNED: u8 = 64;

static NEXT_TASK_ID: AtomicU64 = AtomicU64::new(1);

/// A task's shared state.
pub(crate) struct Header {
    pub(crate) id: u64,
    name: Option<Arc<str>>,
    spawned_at: &'static Location<'static>,
    /// The flags above.
    state: AtomicU8,
    /// A panic waiting to be retrieved by whoever awaits the task.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    finished: Event,
    /// A pool task's future is being polled (a plain store around each such poll): a task close
    /// waits for in vain is then named as stuck inside one poll.
    polling: AtomicBool,
    /// The loop the task belongs to: where reports made off its thread are posted.
    pub(crate) owner: Arc<dyn Post>,
}

impl Header {
    pub(crate) fn new(
        name: Option<&str>,
        spawned_at: &'static Location<'static>,
        owner: Arc<dyn Post>,
    ) -> Header {
        Header {
            id: NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed),
            name: name.map(Arc::from),
            spawned_at,
            state: AtomicU8::new(0),
            panic: Mutex::new(None),
            finished: Event::new(),
            polling: AtomicBool::new(false),
            owner,
        }
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

    /// Flag the task to stop at its next scheduling point; true if it must be woken for that
    /// (it had not finished and nobody had asked before).
    #[must_use]
    fn cancel(&self, flags: u8) -> bool {
        self.set(flags) & (FINISHED | CANCEL_REQUESTED) == 0
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

    /// The task's future is polled from now (`true`), or no longer.
    #[inline]
    pub(crate) fn set_polling(&self, polling: bool) {
        self.polling.store(polling, Ordering::Release);
    }

    /// True while a pool task's future is being polled.
    pub(crate) fn is_polling(&self) -> bool {
        self.polling.load(Ordering::Acquire)
    }

    pub(crate) fn finish(&self) {
        if self.set(FINISHED) & LISTENED != 0 {
            self.finished.notify(usize::MAX);
        }
    }
}

impl Drop for Header {
    fn drop(&mut self) {
        // async-task drops its metadata under its abort guard; a panic payload's destructor is
        // user code that may panic.
        let panic = self.panic.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(payload) = panic.take() {
            drop_quietly(payload);
        }
    }
}

/// An untyped handle to a task: cancel it, see whether it finished, read its info.
///
/// It is the task's header and a waker of the task. The waker is what wakes the task when it is
/// cancelled, and it holds a reference to the allocation the header lives in, which keeps the
/// header alive for as long as the handle.
pub struct TaskRef {
    header: NonNull<Header>,
    keep: Waker,
}

// SAFETY: a `TaskRef` gives shared access to a `Header`, which is `Sync` (atomics, mutexes, an
// `Event`, a `Send + Sync` owner), and holds a `Waker`, which is `Send + Sync`.
#[allow(unsafe_code)]
unsafe impl Send for TaskRef {}
// SAFETY: as for `Send`.
#[allow(unsafe_code)]
unsafe impl Sync for TaskRef {}

impl TaskRef {
    /// A handle to the task whose header is `header` and which `waker` wakes.
    ///
    /// # Safety
    /// `waker` must keep `header` alive: it holds a reference to the allocation `header` lives
    /// in (a spawned task's waker and its metadata; an [`OwnedHeader`]'s waker and its header).
    #[allow(unsafe_code)]
    pub(crate) unsafe fn new(header: &Header, waker: Waker) -> TaskRef {
        TaskRef {
            header: NonNull::from(header),
            keep: waker,
        }
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: `keep` holds a reference to the allocation the header lives in (`new`'s
        // contract), and async-task (or the `OwnedHeader`'s `Arc`) drops the header only when the
        // last reference is gone.
        #[allow(unsafe_code)]
        unsafe {
            self.header.as_ref()
        }
    }

    /// The waker of the task, to reach it at close.
    pub(crate) fn waker(&self) -> &Waker {
        &self.keep
    }

    /// Ask the task to stop: see [`Task::cancel`](crate::Task::cancel).
    pub fn cancel(&self) {
        self.cancel_with(CANCEL_REQUESTED | CANCELLED_BY_CODE);
    }

    /// Ctrl-C's cancellation: like `cancel`, but not counted as cancelled by code.
    pub(crate) fn cancel_for_interrupt(&self) {
        self.cancel_with(CANCEL_REQUESTED);
    }

    fn cancel_with(&self, flags: u8) {
        if self.header().cancel(flags) {
            // Queued and not polled yet, the wake-up changes nothing: the first poll sees the flag.
            self.keep.wake_by_ref();
        }
    }

    /// True if code (not only Ctrl-C) cancelled the task.
    pub(crate) fn is_cancelled_by_code(&self) -> bool {
        self.header().has(CANCELLED_BY_CODE)
    }

    /// True once the task has finished.
    pub fn is_finished(&self) -> bool {
        self.header().has(FINISHED)
    }

    /// The task's id, name and spawn location.
    pub fn info(&self) -> TaskInfo {
        self.header().info()
    }

    /// True once `cancel()` was called on the task (by anyone).
    pub fn is_cancel_requested(&self) -> bool {
        self.header().has(CANCEL_REQUESTED)
    }

    /// Wait until the task has finished, however it finished.
    pub(crate) async fn finished(&self) {
        let header = self.header();
        loop {
            if header.has(FINISHED) {
                return;
            }
            let listener = header.finished.listen();
            // Listening before flagging means a finish that sees the flag also sees the listener.
            if header.set(LISTENED) & FINISHED != 0 {
                return;
            }
            listener.await;
        }
    }
}

impl Clone for TaskRef {
    fn clone(&self) -> Self {
        TaskRef {
            header: self.header,
            keep: self.keep.clone(),
        }
    }
}

impl fmt::Debug for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TaskRef").field(&self.info()).finish()
    }
}

/// The header of a task whose future runs outside runner's own async-task allocations (the main
/// task of a run, polled by the run itself; a task on the worker pool, which async-executor
/// allocates), in an allocation of its own. Its waker wakes the waker the task is polled with.
pub(crate) struct OwnedHeader {
    pub(crate) header: Header,
    waker: Mutex<Option<Waker>>,
}

impl OwnedHeader {
    pub(crate) fn new(header: Header) -> Arc<OwnedHeader> {
        Arc::new(OwnedHeader {
            header,
            waker: Mutex::new(None),
        })
    }

    /// The task is polled with `waker`: cancelling it wakes that. The waker is stored under the
    /// lock `wake_by_ref` takes, so a caller that checks `CANCEL_REQUESTED` after this call sees
    /// any cancel whose wake-up found no waker (the flag is set before that lock is taken).
    pub(crate) fn polled_with(&self, waker: &Waker) {
        let mut slot = lock(&self.waker);
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// A handle to the task.
    pub(crate) fn task_ref(self: &Arc<Self>) -> TaskRef {
        let waker = Waker::from(self.clone());
        // SAFETY: the waker holds the `Arc` the header lives in.
        #[allow(unsafe_code)]
        unsafe {
            TaskRef::new(&self.header, waker)
        }
    }
}

impl Wake for OwnedHeader {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waker = lock(&self.waker).clone();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}
