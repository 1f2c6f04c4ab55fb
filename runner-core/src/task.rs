//! Tasks: futures spawned on an event loop, with cancellation at scheduling points, panics caught
//! per task, and the spawner's context copied in.
//!
//! ```
//! use std::time::Duration;
//!
//! runner_core::run(async {
//!     let slow = runner_core::spawn(runner_core::sleep(Duration::from_secs(60)));
//!     let quick = runner_core::spawn(async { 6 * 7 });
//!     assert_eq!(quick.await.unwrap(), 42);
//!     slow.cancel();
//!     assert!(slow.await.unwrap_err().is_cancelled());
//! })
//! .unwrap();
//! ```
//!
//! Every task runs inside one [`TaskFuture`]. Before each poll it checks the cancel flag: a
//! cancelled future is dropped there, between polls, never in the middle of one. Around each poll
//! it makes the task's context and identity current, catches a panic, and (only in debug mode)
//! times the poll.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as Cx, Poll, Waker};
use std::time::Instant;

use event_listener::Event;
use pin_project_lite::pin_project;

use crate::context::Context;
use crate::error::{catch_quietly, drop_quietly, panic_message, TaskError};
use crate::event_loop::{self, Shared};
use crate::exception::ExceptionContext;

const CANCEL_REQUESTED: u8 = 1;
const FINISHED: u8 = 2;
const PANICKED: u8 = 4;
const DETACHED: u8 = 8;
/// `cancel()` was called by code (not only by Ctrl-C): R6.2's Interrupted/Cancelled distinction.
const CANCELLED_BY_CODE: u8 = 16;
/// Someone waits on `finished`: only then does finishing notify (notifying allocates).
const LISTENED: u8 = 32;

static NEXT_TASK_ID: AtomicU64 = AtomicU64::new(1);

/// An async cleanup tied to a task: a dropped `defer` guard, a closing generator or stream.
pub(crate) type Cleanup = Pin<Box<dyn Future<Output = ()>>>;

/// The task being polled on this thread, and how many cleanups polls have left behind.
///
/// The task is a plain pointer to its header, not a counted reference: `Enter` sets it for the
/// length of one poll, during which the `TaskFuture` being polled owns an `Arc` to that header,
/// and puts the previous value back before the poll returns (on unwind too). Cloning and dropping
/// an `Arc` on every poll cost more than a tenth of a yield (measured); `current_task` is the one
/// place that makes a counted handle from the pointer. Nothing here needs dropping, so reaching
/// it costs a load (a thread-local with a destructor checks its registration on each access).
struct Current {
    task: Cell<*const Header>,
    /// `CLEANUPS.len()`, so that a poll that left none never touches the list.
    cleanups: Cell<usize>,
}

thread_local! {
    static CURRENT_TASK: Current = const {
        Current { task: Cell::new(std::ptr::null()), cleanups: Cell::new(0) }
    };
    /// Cleanups tied to the tasks being polled; each `Enter` owns the entries after its start.
    static CLEANUPS: RefCell<Vec<Cleanup>> = const { RefCell::new(Vec::new()) };
}

/// Tie `cleanup` to the task being polled on this thread (R3.2); gives it back if there is none.
pub(crate) fn push_cleanup(cleanup: Cleanup) -> Result<(), Cleanup> {
    if CURRENT_TASK.with(|current| current.task.get().is_null()) {
        return Err(cleanup);
    }
    CLEANUPS.with(|list| {
        let mut list = list.borrow_mut();
        list.push(cleanup);
        CURRENT_TASK.with(|current| current.cleanups.set(list.len()));
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
        CURRENT_TASK.with(|current| current.cleanups.set(list.len()));
        tail
    })
}

/// What a task's handles and its future share.
pub(crate) struct Header {
    id: u64,
    name: Option<Arc<str>>,
    spawned_at: Option<&'static Location<'static>>,
    state: AtomicU8,
    /// The waker of the task itself, kept from its first poll so that `cancel()` can schedule it
    /// from anywhere, and close can reach a task that waits. async-task polls a task with the
    /// same waker every time. (A mutex, not a `OnceLock`: setting that cost five times more.)
    waker: Mutex<Option<Waker>>,
    /// A panic waiting to be retrieved by whoever awaits the task.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    finished: Event,
    /// Where reports go when they are made off the loop thread.
    owner: Option<Arc<Shared>>,
}

impl Header {
    pub(crate) fn new(
        name: Option<&str>,
        spawned_at: &'static Location<'static>,
        owner: Option<Arc<Shared>>,
    ) -> Arc<Header> {
        Arc::new(Header {
            id: NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed),
            name: name.map(Arc::from),
            spawned_at: Some(spawned_at),
            state: AtomicU8::new(0),
            waker: Mutex::new(None),
            panic: Mutex::new(None),
            finished: Event::new(),
            owner,
        })
    }

    fn waker(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.waker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn has(&self, flag: u8) -> bool {
        self.state.load(Ordering::Acquire) & flag != 0
    }

    fn info(&self) -> TaskInfo {
        TaskInfo {
            id: self.id,
            name: self.name.clone(),
            spawned_at: self.spawned_at,
        }
    }

    fn cancel(&self, flags: u8) {
        let prev = self.state.fetch_or(flags, Ordering::AcqRel);
        if prev & (FINISHED | CANCEL_REQUESTED) == 0 {
            // Not polled yet means it is queued and will see the flag on its first poll.
            let waker = self.waker().clone();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    pub(crate) fn take_panic(&self) -> Option<Box<dyn Any + Send>> {
        self.panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Keep a panic for the task's awaiter; if the handle is already gone, report it now.
    fn store_panic(&self, payload: Box<dyn Any + Send>) {
        *self.panic.lock().unwrap_or_else(PoisonError::into_inner) = Some(payload);
        let prev = self.state.fetch_or(PANICKED, Ordering::AcqRel);
        if prev & DETACHED != 0 {
            self.report_unretrieved();
        }
    }

    fn report_unretrieved(&self) {
        if let Some(payload) = self.take_panic() {
            let ctx = ExceptionContext::new("task panic was never retrieved")
                .with_error(panic_message(&*payload))
                .with_task(self.info());
            drop_quietly(payload);
            event_loop::report(self.owner.as_ref(), ctx);
        }
    }

    fn finish(&self) {
        let prev = self.state.fetch_or(FINISHED, Ordering::AcqRel);
        if prev & LISTENED != 0 {
            self.finished.notify(usize::MAX);
        }
    }
}

/// Where a task is in its loop's registry of pending tasks (what close cancels).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Slot {
    /// Registered at spawn, at this index.
    At(usize),
    /// Spawned from another thread: registers on its first poll, on the loop thread.
    OnFirstPoll,
    /// Not the loop's to cancel: the main task and blocking jobs.
    Never,
}

/// The tasks on a loop: what close cancels (the `cancellable` ones) and then drops (all). A
/// slab whose free slots link to each other: spawn and finish are O(1) and allocate nothing
/// beyond the slots themselves.
#[derive(Default)]
pub(crate) struct TaskSet {
    slots: Vec<Entry>,
    /// The first free slot; `slots.len()` when there is none.
    free: usize,
}

enum Entry {
    Task(Arc<Header>, bool),
    /// Free; the index of the next free slot.
    Free(usize),
}

impl TaskSet {
    pub(crate) fn insert(&mut self, header: &Arc<Header>, cancellable: bool) -> usize {
        let entry = Entry::Task(header.clone(), cancellable);
        match self.slots.get(self.free) {
            Some(&Entry::Free(next)) => {
                let index = std::mem::replace(&mut self.free, next);
                self.slots[index] = entry;
                index
            }
            _ => {
                self.slots.push(entry);
                self.free = self.slots.len();
                self.slots.len() - 1
            }
        }
    }

    pub(crate) fn remove(&mut self, index: usize) {
        if let Some(slot) = self.slots.get_mut(index) {
            if let Entry::Task(..) = slot {
                *slot = Entry::Free(self.free);
                self.free = index;
            }
        }
    }

    fn headers(&self) -> impl Iterator<Item = (&Arc<Header>, bool)> {
        self.slots.iter().filter_map(|entry| match entry {
            Entry::Task(header, cancellable) => Some((header, *cancellable)),
            Entry::Free(_) => None,
        })
    }

    /// The wakers of every task, to reach the ones that wait on something.
    pub(crate) fn take_wakers(&self) -> Vec<Waker> {
        self.headers()
            .filter_map(|(h, _)| h.waker().take())
            .collect()
    }

    /// True once every task's future has been dropped (finished or torn down).
    pub(crate) fn all_finished(&self) -> bool {
        self.headers().all(|(h, _)| h.has(FINISHED))
    }

    fn unfinished(&self) -> impl Iterator<Item = &Arc<Header>> {
        self.headers()
            .filter(|(h, cancellable)| *cancellable && !h.has(FINISHED))
            .map(|(h, _)| h)
    }

    /// True if some registered task has not finished (without collecting them).
    pub(crate) fn has_pending(&self) -> bool {
        self.unfinished().next().is_some()
    }

    /// Every unfinished task, finalizers included.
    pub(crate) fn unfinished_refs(&self) -> Vec<TaskRef> {
        self.headers()
            .filter(|(h, _)| !h.has(FINISHED))
            .map(|(h, _)| TaskRef(h.clone()))
            .collect()
    }

    /// The unfinished tasks close must cancel.
    pub(crate) fn pending(&self) -> Vec<TaskRef> {
        self.unfinished().map(|h| TaskRef(h.clone())).collect()
    }
}

pin_project! {
    /// The future every task runs in: cancellation, panics, context and debug timing.
    /// Its output is `None` when the task was cancelled or panicked (the header says which).
    pub(crate) struct TaskFuture<F: Future> {
        #[pin]
        fut: Option<F>,
        header: Arc<Header>,
        ctx: Context,
        slot: Slot,
        // How the future ended, kept while the task's cleanups run.
        ended: Option<Outcome<F::Output>>,
        // The task has cleanups waiting in its loop (they are `!Send`, this future may not be).
        cleanups_pending: bool,
        // The header has the task's waker.
        polled: bool,
    }

    impl<F: Future> PinnedDrop for TaskFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped unfinished: the loop was torn down under it. Its destructors still run, in
            // its context, and must not unwind into the executor; the async cleanups they leave
            // have no loop left and run on the spot (R5.3).
            let mut this = this.project();
            if this.fut.is_some() || *this.cleanups_pending {
                let mut entered = Enter::new(this.header, this.ctx);
                catch_quietly(|| this.fut.set(None));
                let mut left = entered.take_cleanups().unwrap_or_default();
                if *this.cleanups_pending {
                    if let Some(lp) = event_loop::get_running_loop() {
                        left.extend(lp.take_task_cleanups(this.header.id));
                    }
                }
                crate::defer::run_on_the_spot(left);
                drop(entered);
                this.header.finish();
            }
            // async-task drops a task's future under its abort guard: the values of the task's
            // context variables are user values whose destructors may panic.
            if !this.ctx.is_empty() {
                let ctx = std::mem::take(this.ctx);
                catch_quietly(move || drop(ctx));
            }
        }
    }
}

/// How one poll of the user's future went.
enum Outcome<T> {
    Pending,
    Ready(T),
    Cancelled,
    Panicked(Box<dyn Any + Send>),
    /// A destructor panicked while a cancellation dropped the future.
    PanickedCancelling(Box<dyn Any + Send>),
}

impl<F: Future> TaskFuture<F> {
    pub(crate) fn new(fut: F, header: Arc<Header>, ctx: Context, slot: Slot) -> Self {
        TaskFuture {
            fut: Some(fut),
            header,
            ctx,
            slot,
            ended: None,
            cleanups_pending: false,
            polled: false,
        }
    }

    /// The task's context as it is now (the main task's final context, for the runner).
    pub(crate) fn take_context(self: Pin<&mut Self>) -> Context {
        std::mem::take(self.project().ctx)
    }
}

/// A task's output as async-task holds it until the handle takes it. async-task drops an output
/// nobody takes (the handle was dropped) under its abort guard, where a panicking destructor
/// aborts the process; this wrapper drops it first, containing and reporting such a panic.
pub(crate) struct Output<T>(Option<T>);

impl<T> Output<T> {
    pub(crate) fn into_inner(mut self) -> Option<T> {
        self.0.take()
    }
}

impl<T> Drop for Output<T> {
    fn drop(&mut self) {
        if !std::mem::needs_drop::<T>() {
            return;
        }
        if let Some(value) = self.0.take() {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
                let ctx = ExceptionContext::new(
                    "panic while dropping the output of a task: its handle was dropped, so the \
                     output was dropped with the task",
                )
                .with_error(panic_message(&*payload));
                drop_quietly(payload);
                event_loop::report(None, ctx);
            }
        }
    }
}

impl<F: Future> Future for TaskFuture<F> {
    type Output = Option<Output<F::Output>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let header: &Header = this.header;
        if !*this.polled {
            *this.polled = true;
            *header.waker() = Some(cx.waker().clone());
        }
        if let Slot::OnFirstPoll = this.slot {
            *this.slot = event_loop::register_remote(this.header);
        }
        if this.fut.is_none() && this.ended.is_none() {
            return Poll::Ready(None);
        }
        let cancelled = header.has(CANCEL_REQUESTED) && this.ended.is_none();
        let slow_after = event_loop::slow_poll_threshold();
        let started = slow_after.map(|_| Instant::now());

        // The task stays current until the end of this poll: cleanups its destructors leave are
        // tied to it, and reports about it reach the handler in the task's own context.
        let mut entered = Enter::new(this.header, this.ctx);
        if this.ended.is_none() {
            let mut fut = this.fut.as_mut();
            let outcome = if cancelled {
                match catch_unwind(AssertUnwindSafe(|| fut.set(None))) {
                    Ok(()) => Outcome::Cancelled,
                    Err(payload) => Outcome::PanickedCancelling(payload),
                }
            } else {
                let polled = catch_unwind(AssertUnwindSafe(|| match fut.as_mut().as_pin_mut() {
                    Some(f) => f.poll(cx),
                    None => Poll::Pending,
                }));
                match polled {
                    Ok(Poll::Pending) => Outcome::Pending,
                    Ok(Poll::Ready(v)) => Outcome::Ready(v),
                    Err(payload) => Outcome::Panicked(payload),
                }
            };
            if !matches!(outcome, Outcome::Pending) {
                // Done: drop what is left of the future now, inside the task's context.
                catch_quietly(|| fut.set(None));
                *this.ended = Some(outcome);
            }
        }
        // R3.2: async cleanups left behind run as part of the task, which ends after them.
        let new_cleanups = entered.take_cleanups();
        if *this.cleanups_pending || new_cleanups.is_some() {
            let new_cleanups = new_cleanups.unwrap_or_default();
            *this.cleanups_pending = drive_cleanups(header.id, new_cleanups, &mut entered, cx);
        }

        if let (Some(threshold), Some(started)) = (slow_after, started) {
            let took = started.elapsed();
            if took >= threshold {
                event_loop::report_slow(&format!("<{}>", header.info()), took, Some(header.info()));
            }
        }

        if *this.cleanups_pending {
            return Poll::Pending;
        }
        let output = match this.ended.take() {
            None | Some(Outcome::Pending) => return Poll::Pending,
            Some(Outcome::Ready(v)) => Some(Output(Some(v))),
            Some(Outcome::Cancelled) => None,
            Some(Outcome::Panicked(payload)) => {
                header.store_panic(payload);
                None
            }
            Some(Outcome::PanickedCancelling(payload)) => {
                if event_loop::running_is_closing() {
                    // R2.1: the only report of a panic raised while close cancels the task.
                    let ctx = ExceptionContext::new("unhandled panic during runner shutdown")
                        .with_error(panic_message(&*payload))
                        .with_task(header.info());
                    drop_quietly(payload);
                    event_loop::report(header.owner.as_ref(), ctx);
                } else {
                    header.store_panic(payload);
                }
                None
            }
        };
        if let Slot::At(index) = *this.slot {
            event_loop::deregister(index);
        }
        header.finish();
        Poll::Ready(output)
    }
}

/// Poll a task's cleanups (kept by its loop between polls) until they are done; true while some
/// are still pending. Cleanups that these cleanups leave behind join the list. Off the loop (a
/// blocking job on a pool thread) there is no loop to keep them, so they run on the spot.
fn drive_cleanups(id: u64, new: Vec<Cleanup>, entered: &mut Enter<'_>, cx: &mut Cx<'_>) -> bool {
    let Some(lp) = event_loop::get_running_loop() else {
        crate::defer::run_on_the_spot(new);
        return false;
    };
    let mut list = lp.take_task_cleanups(id);
    list.extend(new);
    loop {
        list.retain_mut(|cleanup| cleanup.as_mut().poll(cx).is_pending());
        match entered.take_cleanups() {
            Some(more) => list.extend(more),
            None => break,
        }
    }
    let pending = !list.is_empty();
    if pending {
        lp.put_task_cleanups(id, list);
    }
    pending
}

/// Makes a task current (its context, its identity, its cleanup list) for the length of a poll.
struct Enter<'a> {
    _ctx: crate::context::Entered<'a>,
    prev: *const Header,
    /// Where this task's entries start in the thread's cleanup list.
    start: usize,
}

impl<'a> Enter<'a> {
    fn new(header: &'a Arc<Header>, ctx: &'a mut Context) -> Self {
        let (prev, start) = CURRENT_TASK.with(|current| {
            (
                current.task.replace(Arc::as_ptr(header)),
                current.cleanups.get(),
            )
        });
        Enter {
            _ctx: ctx.enter(),
            prev,
            start,
        }
    }

    /// The cleanups tied to the task since the last call, if any.
    fn take_cleanups(&mut self) -> Option<Vec<Cleanup>> {
        let len = CURRENT_TASK.with(|current| current.cleanups.get());
        (len > self.start).then(|| split_cleanups(self.start))
    }
}

impl Drop for Enter<'_> {
    fn drop(&mut self) {
        let more = CURRENT_TASK.with(|current| {
            current.task.set(self.prev);
            current.cleanups.get() > self.start
        });
        // Cleanups tied after the task's last look (by a report handler, say) are not lost.
        if more {
            for cleanup in split_cleanups(self.start) {
                crate::defer::schedule_cleanup(cleanup, None);
            }
        }
    }
}

/// A handle to a spawned task: await it for the task's output.
///
/// Dropping the handle detaches the task: it keeps running, and the loop cancels it at close if it
/// is still pending. Awaiting a task is a cancellation boundary: dropping the awaiter does not
/// cancel the task (Python's `asyncio.shield`).
///
/// ```
/// runner_core::run(async {
///     let task = runner_core::spawn(async { panic!("boom") });
///     let err = task.await.unwrap_err();
///     assert!(err.is_panic());
///     assert_eq!(err.to_string(), "task panicked: boom");
/// })
/// .unwrap();
/// ```
#[must_use = "a dropped Task keeps running detached; await it to get its output"]
pub struct Task<T> {
    inner: Option<async_task::FallibleTask<Option<Output<T>>>>,
    header: Arc<Header>,
    retrieved: bool,
}

impl<T> Task<T> {
    pub(crate) fn new(inner: async_task::Task<Option<Output<T>>>, header: Arc<Header>) -> Self {
        Task {
            inner: Some(inner.fallible()),
            header,
            retrieved: false,
        }
    }

    /// A task that never ran: spawned on a closed loop.
    pub(crate) fn cancelled(header: Arc<Header>) -> Self {
        header.state.fetch_or(CANCEL_REQUESTED, Ordering::AcqRel);
        header.finish();
        Task {
            inner: None,
            header,
            retrieved: false,
        }
    }

    /// Ask the task to stop: its future is dropped at its next scheduling point (never in the
    /// middle of a poll) and awaiting it gives `Err(TaskError::Cancelled)`. Does nothing if the
    /// task has finished.
    pub fn cancel(&self) {
        self.header.cancel(CANCEL_REQUESTED | CANCELLED_BY_CODE);
    }

    /// True once the task has finished: returned, panicked or been cancelled.
    pub fn is_finished(&self) -> bool {
        self.header.has(FINISHED)
    }

    /// An untyped, cloneable handle to the same task.
    pub fn to_ref(&self) -> TaskRef {
        TaskRef(self.header.clone())
    }

    /// The task's id, name and spawn location.
    pub fn info(&self) -> TaskInfo {
        self.header.info()
    }
}

impl<T> Future for Task<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<Self::Output> {
        let output = match self.inner.as_mut() {
            Some(inner) => match Pin::new(inner).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(output) => output.flatten().and_then(Output::into_inner),
            },
            None => None,
        };
        self.retrieved = true;
        Poll::Ready(match output {
            Some(v) => Ok(v),
            None => match self.header.take_panic() {
                Some(payload) => Err(TaskError::Panicked(payload)),
                None => Err(TaskError::Cancelled),
            },
        })
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.detach();
        }
        if !self.retrieved {
            let prev = self.header.state.fetch_or(DETACHED, Ordering::AcqRel);
            if prev & PANICKED != 0 {
                self.header.report_unretrieved();
            }
        }
    }
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("info", &self.header.info())
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// An untyped handle to a task: cancel it, see whether it finished, read its info.
#[derive(Clone)]
pub struct TaskRef(Arc<Header>);

impl TaskRef {
    pub(crate) fn from_header(header: Arc<Header>) -> Self {
        TaskRef(header)
    }

    /// See [`Task::cancel`].
    pub fn cancel(&self) {
        self.0.cancel(CANCEL_REQUESTED | CANCELLED_BY_CODE);
    }

    /// Ctrl-C's cancellation: like `cancel`, but not counted as cancelled by code.
    pub(crate) fn cancel_for_interrupt(&self) {
        self.0.cancel(CANCEL_REQUESTED);
    }

    pub(crate) fn take_panic(&self) -> Option<Box<dyn Any + Send>> {
        self.0.take_panic()
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
            if self.0.state.fetch_or(LISTENED, Ordering::AcqRel) & FINISHED != 0 {
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

/// What identifies a task in reports: its id, its name and where it was spawned.
#[derive(Clone, Debug)]
pub struct TaskInfo {
    id: u64,
    name: Option<Arc<str>>,
    spawned_at: Option<&'static Location<'static>>,
}

impl TaskInfo {
    /// A number unique in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The task's name; the main task is called "main".
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Where `spawn` (or `run`, for the main task) was called.
    pub fn spawned_at(&self) -> Option<&'static Location<'static>> {
        self.spawned_at
    }
}

/// `Task 'main' #1 spawned at src/main.rs:4:5`
impl fmt::Display for TaskInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "Task '{name}' #{}", self.id)?,
            None => write!(f, "Task #{}", self.id)?,
        }
        if let Some(at) = self.spawned_at {
            write!(f, " spawned at {}", crate::exception::place(at))?;
        }
        Ok(())
    }
}

/// Spawn `fut` on the running event loop, in a copy of the current context.
///
/// # Panics
/// Outside a running loop (there is nowhere to run the task).
///
/// ```
/// runner_core::run(async {
///     let task = runner_core::spawn(async { "done" });
///     assert_eq!(task.await.unwrap(), "done");
/// })
/// .unwrap();
/// ```
#[track_caller]
pub fn spawn<F>(fut: F) -> Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    match event_loop::get_running_loop() {
        Some(lp) => lp.spawn(fut),
        None => panic!(
            "runner::spawn() was called outside a running event loop: call it from code running \
             inside runner::run(), Runner::run() or #[runner::main], or use EventLoop::spawn"
        ),
    }
}

/// The task being polled on this thread, if any (inside `run`, the main task counts).
pub fn current_task() -> Option<TaskRef> {
    CURRENT_TASK.with(|current| {
        let task = current.task.get();
        if task.is_null() {
            return None;
        }
        Some(TaskRef(counted(task)))
    })
}

/// A counted handle from the pointer `Enter` keeps (see `Current`).
#[allow(unsafe_code)]
fn counted(task: *const Header) -> Arc<Header> {
    // SAFETY: a non-null `Current::task` was made by `Arc::as_ptr` from the `Arc<Header>` owned
    // by the `TaskFuture` being polled on this thread, and is reset before that poll returns; the
    // `Arc` is alive, so adding a count and taking ownership of that count is sound.
    unsafe {
        Arc::increment_strong_count(task);
        Arc::from_raw(task)
    }
}
