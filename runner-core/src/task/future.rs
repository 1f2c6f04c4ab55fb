//! The future every task runs in. Before each poll it checks the cancel flag: a cancelled future
//! is dropped there, between polls, never in the middle of one. Around each poll it makes the
//! task's context and identity current, catches a panic, and (only in debug mode) times the
//! poll. A task ends only after the async cleanups its future left behind have run.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{Context as Cx, Poll, Waker};
use std::time::Instant;

use pin_project_lite::pin_project;

use crate::context::{Context, ContextGuard};
use crate::error::{catch_quietly, drop_quietly, panic_message};
use crate::header::{Header, OwnedHeader, TaskRef, CANCEL_REQUESTED, RETURNED};
use crate::report::ExceptionContext;
use crate::task::cleanup::{run_now, schedule_cleanup};
use crate::task::current::{self, Entered};
use crate::task::handle::{report_unretrieved, Output};
use crate::task::registry::Slot;
use crate::task::scope::{self, Cleanup};
use crate::task::worker_local::{self, Done};

pin_project! {
    /// See the module documentation. Its output is `None` when the task was cancelled or
    /// panicked (the header says which).
    pub(crate) struct TaskFuture<F: Future> {
        #[pin]
        fut: Option<F>,
        home: Home,
        ctx: Context,
        slot: Slot,
        // How the future ended, kept while the task's cleanups run.
        ended: Option<Outcome<F::Output>>,
        // Where the task's pending cleanups are (they are `!Send`, this future may not be).
        cleanups: Cleanups,
        // An owned header has been given the waker the task is polled with (`will_wait`).
        polled: bool,
        // The main task of a run: once its future has returned, the generator and stream
        // closes it left go on as finalizers (see `hand_over_closes`).
        main: bool,
    }

    impl<F: Future> PinnedDrop for TaskFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped unfinished: the loop was torn down under it. Its destructors still run, in
            // its context, and must not unwind into the executor; the async cleanups they leave
            // have no loop left and run on the spot.
            let mut this = this.project();
            if this.fut.is_some() || !matches!(this.cleanups, Cleanups::None) {
                let header = this.home.header();
                let mut guard = PollGuard::enter(header, this.home.own_waker(), this.ctx);
                catch_quietly(|| this.fut.set(None));
                let mut left = guard.take_cleanups().unwrap_or_default();
                if let Cleanups::InLoop = this.cleanups {
                    if let Some(scope) = scope::current() {
                        left.extend(scope.take_task_cleanups(header.id));
                    }
                }
                // A worker runs them as its own; elsewhere no loop is left: they run here.
                let left: Vec<Cleanup> = left
                    .into_iter()
                    .filter_map(|cleanup| worker_local::spawn_finalizer(cleanup).err())
                    .collect();
                run_now(left);
                drop(guard);
                header.finish();
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

/// Where a task's pending async cleanups are.
enum Cleanups {
    None,
    /// Kept by the running loop under the task's id, polled in the task's polls.
    InLoop,
    /// Run by a worker's driver task (`worker_local`); the task ends when it is done.
    OnWorker(Arc<Done>),
}

/// Where a task's header lives.
pub(crate) enum Home {
    /// In the async-task allocation this future lives in, as its metadata.
    Spawned(NonNull<Header>),
    /// As `Spawned`, in a task of the worker pool: polled on a worker thread, off the loop.
    Pool(NonNull<Header>),
    /// In an `OwnedHeader` of its own: the future is polled by a run (its main task) or by a
    /// worker's local executor (a task pinned to the worker), not in one of runner's async-task
    /// allocations. The handle (whose waker is the `OwnedHeader`'s) keeps it alive.
    Owned(Arc<OwnedHeader>, TaskRef),
}

// SAFETY: `Home` gives shared access to a `Header`, which is `Sync`, and is alive wherever the
// future holding the `Home` is (see `Home::header`).
#[allow(unsafe_code)]
unsafe impl Send for Home {}

impl Home {
    /// A spawned task's home: the header async-task passes to the function that builds the
    /// future, which is stored in the same allocation.
    pub(crate) fn spawned(header: &Header) -> Home {
        Home::Spawned(NonNull::from(header))
    }

    /// A pool task's home: as [`spawned`](Self::spawned), polled off the loop.
    pub(crate) fn pool(header: &Header) -> Home {
        Home::Pool(NonNull::from(header))
    }

    /// The home of a main task or a pool task, and a handle to the task.
    pub(crate) fn owned(header: Header) -> (Home, TaskRef) {
        let main = OwnedHeader::new(header);
        let task = main.task_ref();
        (Home::Owned(main, task.clone()), task)
    }

    #[inline]
    fn header(&self) -> &Header {
        match self {
            // SAFETY: the header is the metadata of the async-task allocation that holds the
            // future holding this `Home` (`Home::spawned`). async-task drops the metadata only
            // when it frees the allocation, after it has dropped the future (`RawTask::destroy`),
            // so the header outlives every use through the future.
            #[allow(unsafe_code)]
            Home::Spawned(header) | Home::Pool(header) => unsafe { header.as_ref() },
            Home::Owned(_, task) => task.header(),
        }
    }

    /// The waker that keeps the header alive when no poll's waker is at hand: a main task's own.
    fn own_waker(&self) -> Option<&Waker> {
        match self {
            Home::Spawned(_) | Home::Pool(_) => None,
            Home::Owned(_, task) => Some(task.waker()),
        }
    }
}

impl<F: Future> TaskFuture<F> {
    pub(crate) fn new(fut: F, home: Home, ctx: Context, slot: Slot) -> Self {
        TaskFuture {
            fut: Some(fut),
            home,
            ctx,
            slot,
            ended: None,
            cleanups: Cleanups::None,
            polled: false,
            main: false,
        }
    }

    /// A run's main task (see the `main` field).
    pub(crate) fn main(fut: F, home: Home, ctx: Context) -> Self {
        let mut task = TaskFuture::new(fut, home, ctx, Slot::Never);
        task.main = true;
        task
    }

    /// The task's context as it is now (the main task's final context, for the runner).
    pub(crate) fn take_context(self: Pin<&mut Self>) -> Context {
        std::mem::take(self.project().ctx)
    }
}

impl<F: Future> Future for TaskFuture<F> {
    type Output = Option<Output<F::Output>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let home: &Home = this.home;
        let header = home.header();
        // The waker that keeps the header alive for `current_task`: a spawned task is polled by
        // async-task with a waker of its own allocation; a main task has its own.
        let own_waker = match home {
            Home::Spawned(_) | Home::Pool(_) => cx.waker(),
            Home::Owned(_, task) => task.waker(),
        };
        if let Slot::OnFirstPoll = this.slot {
            // SAFETY: see `own_waker`.
            #[allow(unsafe_code)]
            let task = unsafe { TaskRef::new(header, own_waker.clone()) };
            *this.slot = scope::register_remote(task);
        }
        if this.fut.is_none() && this.ended.is_none() {
            return Poll::Ready(None);
        }
        let cancelled = header.has(CANCEL_REQUESTED) && this.ended.is_none();
        let slow_after = scope::slow_poll_threshold();
        let started = slow_after.map(|_| Instant::now());

        // The task stays current until the end of this poll: cleanups its destructors leave are
        // tied to it, and reports about it reach the handler in the task's own context.
        let mut guard = PollGuard::enter(header, Some(own_waker), this.ctx);
        if this.ended.is_none() {
            let mut fut = this.fut.as_mut();
            let outcome = if cancelled {
                match catch_unwind(AssertUnwindSafe(|| fut.set(None))) {
                    Ok(()) => Outcome::Cancelled,
                    Err(payload) => Outcome::PanickedCancelling(payload),
                }
            } else {
                let off_loop = matches!(home, Home::Owned(..) | Home::Pool(_));
                if off_loop {
                    header.set_polling(true);
                }
                let polled = catch_unwind(AssertUnwindSafe(|| match fut.as_mut().as_pin_mut() {
                    Some(f) => f.poll(cx),
                    None => Poll::Pending,
                }));
                if off_loop {
                    header.set_polling(false);
                }
                match polled {
                    Ok(Poll::Pending) => Outcome::Pending,
                    Ok(Poll::Ready(v)) => Outcome::Ready(v),
                    Err(payload) => Outcome::Panicked(payload),
                }
            };
            if !matches!(outcome, Outcome::Pending) {
                // Done: drop what is left of the future now, inside the task's context.
                catch_quietly(|| fut.set(None));
                if *this.main && matches!(outcome, Outcome::Ready(_)) {
                    header.set(RETURNED);
                }
                *this.ended = Some(outcome);
            }
        }
        // Async cleanups left behind run as part of the task, which ends after them.
        let new_cleanups = guard.take_cleanups();
        if !matches!(this.cleanups, Cleanups::None) || new_cleanups.is_some() {
            let new_cleanups = new_cleanups.unwrap_or_default();
            let waiting = std::mem::replace(this.cleanups, Cleanups::None);
            let hand_over = *this.main && matches!(this.ended, Some(Outcome::Ready(_)));
            *this.cleanups = drive_cleanups(
                waiting,
                header,
                own_waker,
                new_cleanups,
                hand_over,
                &mut guard,
                cx,
            );
        }

        if let (Some(threshold), Some(started)) = (slow_after, started) {
            let took = started.elapsed();
            if took >= threshold {
                let (what, info) = (format!("<{}>", header.info()), Some(header.info()));
                scope::report_slow(&what, took, info, Some(&*header.owner));
            }
        }

        if !matches!(this.cleanups, Cleanups::None) {
            return will_wait(home, this.polled, cx);
        }
        let output = match this.ended.take() {
            None | Some(Outcome::Pending) => return will_wait(home, this.polled, cx),
            Some(Outcome::Ready(v)) => Some(Output::new(v)),
            Some(Outcome::Cancelled) => None,
            Some(Outcome::Panicked(payload)) => {
                if header.store_panic(payload) {
                    report_unretrieved(header);
                }
                None
            }
            Some(Outcome::PanickedCancelling(payload)) => {
                // The task's loop, not this thread's: a pool task is cancelled on a worker.
                if header.owner.is_closing() {
                    // The only report of a panic raised while close cancels the task.
                    let ctx = ExceptionContext::new("unhandled panic during runner shutdown")
                        .with_error(panic_message(&*payload))
                        .with_task(header.info());
                    drop_quietly(payload);
                    scope::report(Some(&*header.owner), ctx);
                } else if header.store_panic(payload) {
                    report_unretrieved(header);
                }
                None
            }
        };
        if let Slot::At(index) = *this.slot {
            scope::deregister(index);
        }
        header.finish();
        Poll::Ready(output)
    }
}

/// The task is about to wait. An owned header learns, at the first wait, the waker its task is
/// polled with, so that `cancel` can wake the task (a task's waker does not change). Tasks that
/// end in their first poll (most pool tasks) never pay for it.
fn will_wait<T>(home: &Home, polled: &mut bool, cx: &Cx<'_>) -> Poll<T> {
    if let Home::Owned(owned, _) = home {
        if !*polled {
            *polled = true;
            owned.polled_with(cx.waker());
            // A cancel made before the waker was there woke nobody (see `polled_with`).
            if owned.header.has(CANCEL_REQUESTED) {
                cx.waker().wake_by_ref();
            }
        }
    }
    Poll::Pending
}

/// Poll a task's cleanups (kept by its loop between polls) until they are done; says where the
/// ones still pending are. Cleanups that these cleanups leave behind join the list. On a worker
/// thread, the worker runs them beside its other work (`worker_local`) and the task waits for
/// them; off any loop or worker (a blocking job on a pool thread) they run on the spot.
///
/// With `hand_over` (a main task whose future has returned), the generator and stream closes
/// still pending go on as finalizers of the loop, and the task waits only for its deferred
/// cleanups: Python runs a generator's `aclose()` as a task of its own, so `main` returns and
/// close cancels the tasks such a close may wait for (R3.2).
fn drive_cleanups(
    waiting: Cleanups,
    header: &Header,
    waker: &Waker,
    new: Vec<Cleanup>,
    hand_over: bool,
    guard: &mut PollGuard<'_>,
    cx: &mut Cx<'_>,
) -> Cleanups {
    if let Cleanups::OnWorker(done) = waiting {
        if !new.is_empty() {
            // Left by a report handler after the task's last look: they run on their own.
            for cleanup in new {
                schedule_cleanup(cleanup, None);
            }
        }
        return match done.poll_done(cx) {
            Poll::Ready(()) => Cleanups::None,
            Poll::Pending => Cleanups::OnWorker(done),
        };
    }
    let Some(scope) = scope::current() else {
        // SAFETY: `waker` keeps `header` alive (see `TaskFuture::poll`'s `own_waker`).
        #[allow(unsafe_code)]
        let task = unsafe { TaskRef::new(header, waker.clone()) };
        return match worker_local::drive_task_cleanups(task, new) {
            Ok(done) => match done.poll_done(cx) {
                Poll::Ready(()) => Cleanups::None,
                Poll::Pending => Cleanups::OnWorker(done),
            },
            Err(new) => {
                run_now(new);
                Cleanups::None
            }
        };
    };
    let id = header.id;
    let mut list = scope.take_task_cleanups(id);
    list.extend(new);
    loop {
        list.retain_mut(|cleanup| Pin::new(cleanup).poll(cx).is_pending());
        match guard.take_cleanups() {
            Some(more) => list.extend(more),
            None => break,
        }
    }
    if hand_over {
        let (closes, finally): (Vec<Cleanup>, Vec<Cleanup>) =
            list.into_iter().partition(|c| c.what().is_close());
        for close in closes {
            scope.spawn_finalizer(close);
        }
        list = finally;
    }
    if list.is_empty() {
        return Cleanups::None;
    }
    scope.put_task_cleanups(id, list);
    Cleanups::InLoop
}

/// Makes a task current (its context, its identity, its cleanup list) for the length of a poll.
struct PollGuard<'a> {
    _ctx: ContextGuard<'a>,
    prev: Entered,
}

impl<'a> PollGuard<'a> {
    /// `waker` keeps `header` alive (see `current::enter`).
    fn enter(header: &'a Header, waker: Option<&'a Waker>, ctx: &'a mut Context) -> Self {
        PollGuard {
            prev: current::enter(header, waker),
            _ctx: ctx.enter(),
        }
    }

    /// The cleanups tied to the task since the last call, if any.
    fn take_cleanups(&mut self) -> Option<Vec<Cleanup>> {
        current::take_cleanups(self.prev.start)
    }
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        // Cleanups tied after the task's last look (by a report handler, say) are not lost.
        if let Some(left) = current::leave(&self.prev) {
            for cleanup in left {
                schedule_cleanup(cleanup, None);
            }
        }
    }
}
