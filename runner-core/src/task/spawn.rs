//! Putting futures in tasks: on the loop running on this thread (`spawn`), on a given loop, from
//! another thread, as a finalizer, and the main task of a run.

use std::any::Any;
use std::future::Future;
use std::panic::Location;
use std::rc::Rc;

use crate::context::Context;
use crate::header::{Header, Runnable, TaskRef};
use crate::queue::Inbox;
use crate::refused::drop_refused;
use crate::task::future::{Home, TaskFuture};
use crate::task::handle::{Output, Task};
use crate::task::registry::Slot;
use crate::task::scope::{self, Cleanup, Scope};
use crate::task::worker_local;

/// Spawn `fut` on the running event loop, in a copy of the current context.
///
/// Called from a task on the worker pool ([`spawn_send`](crate::spawn_send)), the task runs on
/// that task's worker thread instead, pinned there (its future need not be `Send`), with every
/// guarantee a loop task has: close cancels it and waits for it.
///
/// # Panics
/// Outside a running loop and its workers (there is nowhere to run the task): on a plain thread,
/// or in a `to_thread` job.
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
    if let Some(scope) = scope::current() {
        return spawn_on(&scope, fut, Location::caller(), true);
    }
    match worker_local::current() {
        Some(worker) => spawn_pinned(&worker, fut, Location::caller()),
        None => panic!(
            "runner::spawn() was called outside a running event loop and its workers: call it \
             from code running inside runner::run(), Runner::run() or #[runner::main] (or a \
             task they spawn); from another thread use LoopHandle::spawn, or EventLoop::spawn \
             with the loop at hand"
        ),
    }
}

/// Spawn `fut` on this worker thread, pinned to it (`runner::spawn` in a pool task): a task of
/// the worker's loop, which close cancels with the pool's. Refused (cancelled at once) once the
/// worker is stopping.
fn spawn_pinned<F>(
    worker: &Rc<worker_local::WorkerLocal>,
    fut: F,
    at: &'static Location<'static>,
) -> Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let home_loop = worker.home();
    let (home, me) = Home::owned(Header::new(None, at, home_loop.owner()));
    let fut = TaskFuture::new(fut, home, Context::current(), Slot::Never);
    match worker.spawn_pinned(fut) {
        Ok(task) => {
            home_loop.track_off_loop(&me);
            Task::on_pool(task, me)
        }
        Err(fut) => {
            me.cancel_for_interrupt();
            drop_refused(Box::new(fut));
            Task::cancelled(me)
        }
    }
}

/// Spawn `fut` on the loop whose scope is `scope`, in a copy of the current context; on a closed
/// loop the task is cancelled at once. `cancellable` tasks are the ones close cancels.
pub(crate) fn spawn_on<F>(
    scope: &Scope,
    fut: F,
    at: &'static Location<'static>,
    cancellable: bool,
) -> Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    spawn_task(scope, fut, None, at, cancellable)
}

/// [`spawn_on`], with a name for the task.
fn spawn_task<F>(
    scope: &Scope,
    fut: F,
    name: Option<&str>,
    at: &'static Location<'static>,
    cancellable: bool,
) -> Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let header = Header::new(name, at, scope.inbox.owner());
    let closed = scope.is_closed();
    // The future knows its registry slot; the entry needs the task's waker, which exists once
    // the task does. Nothing in between spawns, so the slot is still the next one.
    let (ctx, slot) = match closed {
        true => (Context::new(), Slot::Never),
        false => (
            Context::current(),
            Slot::At(scope.tasks.borrow().next_index()),
        ),
    };
    let (runnable, task) = scope.executor.spawn(header, |header| {
        TaskFuture::new(fut, Home::spawned(header), ctx, slot)
    });
    let me = task_ref(&runnable, &task);
    if closed {
        return never_run(runnable, task, me);
    }
    let inserted = scope.tasks.borrow_mut().insert(me.clone(), cancellable);
    debug_assert!(matches!(slot, Slot::At(index) if index == inserted));
    if cancellable {
        scope.inbox.note_spawn(&me);
    }
    runnable.schedule();
    Task::new(task, me)
}

/// A handle to the task that `runnable` runs and `task` awaits.
pub(crate) fn task_ref<T>(runnable: &Runnable, task: &async_task::Task<T, Header>) -> TaskRef {
    // SAFETY: the runnable's waker holds a reference to the task's allocation, whose metadata
    // is the header.
    #[allow(unsafe_code)]
    unsafe {
        TaskRef::new(task.metadata(), runnable.waker())
    }
}

/// A task spawned on a closed loop: cancelled at once, its future dropped without being polled
/// (not inside another such drop: see `refused`).
pub(crate) fn never_run<T>(
    runnable: Runnable,
    task: async_task::Task<Option<Output<T>>, Header>,
    me: TaskRef,
) -> Task<T> {
    me.cancel_for_interrupt();
    drop_refused(Box::new(runnable));
    Task::new(task, me)
}

/// Run a cleanup that belongs to no task as a task of its own, named after it: close waits for
/// it instead of cancelling it. The loop gives this function to its scope.
pub(crate) fn spawn_finalizer(scope: &Rc<Scope>, cleanup: Cleanup) {
    let what = cleanup.what();
    let name = match what.is_close() {
        true => "finalizer",
        false => "deferred cleanup",
    };
    let task = spawn_task(scope, cleanup, Some(name), what.at, false);
    scope
        .finalizers
        .borrow_mut()
        .push((task.to_ref(), what), |(t, _)| !t.is_finished());
}

/// Spawn a `Send` future on the loop behind `inbox` from any thread; on a closed loop the task
/// is cancelled at once. It joins the loop's registry at its first poll.
pub(crate) fn spawn_remote<F>(
    inbox: &Inbox,
    fut: F,
    at: &'static Location<'static>,
) -> Task<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let header = Header::new(None, at, inbox.owner());
    let closed = inbox.is_closed();
    let (ctx, slot) = match closed {
        true => (Context::new(), Slot::Never),
        false => (Context::current(), Slot::OnFirstPoll),
    };
    let (runnable, task) = inbox.spawn(header, |header| {
        TaskFuture::new(fut, Home::spawned(header), ctx, slot)
    });
    let me = task_ref(&runnable, &task);
    if closed {
        return never_run(runnable, task, me);
    }
    runnable.schedule();
    Task::new(task, me)
}

/// A task's future, as a pool builds it from the header it keeps in the task's allocation.
pub(crate) type MakeJob<F> = Box<dyn FnOnce(&Header) -> TaskFuture<BlockingJob<F>>>;

/// A blocking job run as a task on a pool thread: `submit` gives the pool the header and the
/// function that builds the job's future from it.
pub(crate) fn spawn_blocking<F, T, S>(
    inbox: &Inbox,
    f: F,
    ctx: Context,
    at: &'static Location<'static>,
    submit: S,
) -> Task<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
    S: FnOnce(Header, MakeJob<F>) -> (Runnable, async_task::Task<Option<Output<T>>, Header>),
{
    let header = Header::new(None, at, inbox.owner());
    let make: MakeJob<F> = Box::new(move |header| {
        TaskFuture::new(
            BlockingJob(Some(f)),
            Home::spawned(header),
            ctx,
            Slot::Never,
        )
    });
    let (runnable, task) = submit(header, make);
    let me = task_ref(&runnable, &task);
    runnable.schedule();
    Task::new(task, me)
}

/// A blocking closure as a future that completes in its first poll.
pub(crate) struct BlockingJob<F>(Option<F>);

impl<F> Unpin for BlockingJob<F> {}

impl<F: FnOnce() -> T, T> Future for BlockingJob<F> {
    type Output = T;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        match self.0.take() {
            Some(f) => std::task::Poll::Ready(f()),
            None => std::task::Poll::Pending,
        }
    }
}

/// The main task of a run: not registered (close does not cancel it), named "main".
pub(crate) fn main_task<F: Future>(
    fut: F,
    ctx: Context,
    at: &'static Location<'static>,
    owner: Inbox,
) -> (TaskFuture<F>, TaskRef) {
    let (home, task) = Home::owned(Header::new(Some("main"), at, owner.owner()));
    (TaskFuture::main(fut, home, ctx), task)
}

/// How a main task ended.
pub(crate) enum MainEnd<T> {
    Returned(T),
    Panicked(Box<dyn Any + Send>),
    /// Cancelled: by code (`cancel()`), or only by Ctrl-C.
    Cancelled {
        by_code: bool,
    },
}

/// What the main task's output (`None`: cancelled or panicked) means.
pub(crate) fn main_end<T>(output: Option<Output<T>>, main: &TaskRef) -> MainEnd<T> {
    match output.and_then(Output::into_inner) {
        Some(value) => MainEnd::Returned(value),
        None => match main.header().take_panic() {
            Some(payload) => MainEnd::Panicked(payload),
            None => MainEnd::Cancelled {
                by_code: main.is_cancelled_by_code(),
            },
        },
    }
}
