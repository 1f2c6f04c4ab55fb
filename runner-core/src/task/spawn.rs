//! Putting futures in tasks: on the loop running on this thread (`spawn`), on a given loop, from
//! another thread, as a finalizer, and the main task of a run.

use std::any::Any;
use std::future::Future;
use std::panic::Location;
use std::rc::Rc;

use crate::context::Context;
use crate::queue::Inbox;
use crate::task::future::TaskFuture;
use crate::task::handle::{Output, Task};
use crate::task::header::{Header, TaskRef};
use crate::task::registry::Slot;
use crate::task::scope::{self, Cleanup, Scope};

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
    match scope::current() {
        Some(scope) => spawn_on(&scope, fut, Location::caller(), true),
        None => panic!(
            "runner::spawn() was called outside a running event loop: call it from code running \
             inside runner::run(), Runner::run() or #[runner::main], or use EventLoop::spawn"
        ),
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
    let header = Header::new(None, at, scope.inbox.clone());
    if scope.is_closed() {
        return Task::cancelled(header);
    }
    let index = scope.tasks.borrow_mut().insert(&header, cancellable);
    let fut = TaskFuture::new(fut, header.clone(), Context::current(), Slot::At(index));
    Task::new(scope.executor.spawn(fut), header)
}

/// Run a cleanup that belongs to no task as a task of its own: close waits for it instead of
/// cancelling it. The loop gives this function to its scope.
#[track_caller]
pub(crate) fn spawn_finalizer(scope: &Rc<Scope>, cleanup: Cleanup) {
    let task = spawn_on(scope, cleanup, Location::caller(), false);
    let mut finalizers = scope.finalizers.borrow_mut();
    finalizers.retain(|t| !t.is_finished());
    finalizers.push(task.to_ref());
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
    let header = Header::new(None, at, inbox.clone());
    if inbox.is_closed() {
        return Task::cancelled(header);
    }
    let fut = TaskFuture::new(fut, header.clone(), Context::current(), Slot::OnFirstPoll);
    Task::new(inbox.spawn(fut), header)
}

/// A blocking job run as a task on a pool thread: `submit` hands its future to the pool.
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
    S: FnOnce(TaskFuture<BlockingJob<F>>) -> async_task::Task<Option<Output<T>>>,
{
    let header = Header::new(None, at, inbox.clone());
    let job = TaskFuture::new(BlockingJob(Some(f)), header.clone(), ctx, Slot::Never);
    Task::new(submit(job), header)
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
    let header = Header::new(Some("main"), at, owner);
    let task = TaskRef(header.clone());
    (TaskFuture::new(fut, header, ctx, Slot::Never), task)
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
        None => match main.0.take_panic() {
            Some(payload) => MainEnd::Panicked(payload),
            None => MainEnd::Cancelled {
                by_code: main.is_cancelled_by_code(),
            },
        },
    }
}
