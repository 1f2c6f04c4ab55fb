//! [`Task`], the typed handle to a spawned task, and the wrapper its output travels in.

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context as Cx, Poll};

use crate::error::{drop_quietly, panic_message, TaskError};
use crate::header::{Header, TaskRef, DETACHED, FINISHED, PANICKED};
use crate::report::{ExceptionContext, TaskInfo};
use crate::task::scope;

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
    inner: Option<Inner<T>>,
    task: TaskRef,
    retrieved: bool,
}

/// The async-task handle underneath: runner's own allocation (header inside), or the worker
/// pool's (async-executor allocates its tasks; the header is in an `OwnedHeader`).
enum Inner<T> {
    Own(async_task::FallibleTask<Option<Output<T>>, Header>),
    Pool(async_task::FallibleTask<Option<Output<T>>>),
}

impl<T> Task<T> {
    pub(crate) fn new(inner: async_task::Task<Option<Output<T>>, Header>, task: TaskRef) -> Self {
        Task {
            inner: Some(Inner::Own(inner.fallible())),
            task,
            retrieved: false,
        }
    }

    /// A handle to a task that never ran (its pool was stopped): it awaits as cancelled.
    pub(crate) fn cancelled(task: TaskRef) -> Self {
        Task {
            inner: None,
            task,
            retrieved: false,
        }
    }

    /// A handle to a task on the worker pool.
    pub(crate) fn on_pool(inner: async_task::Task<Option<Output<T>>>, task: TaskRef) -> Self {
        Task {
            inner: Some(Inner::Pool(inner.fallible())),
            task,
            retrieved: false,
        }
    }

    fn header(&self) -> &Header {
        self.task.header()
    }

    /// Ask the task to stop: its future is dropped at its next scheduling point (never in the
    /// middle of a poll) and awaiting it gives `Err(TaskError::Cancelled)`. Does nothing if the
    /// task has finished.
    pub fn cancel(&self) {
        self.task.cancel();
    }

    /// True once the task has finished: returned, panicked or been cancelled.
    pub fn is_finished(&self) -> bool {
        self.header().has(FINISHED)
    }

    /// An untyped, cloneable handle to the same task.
    pub fn to_ref(&self) -> TaskRef {
        self.task.clone()
    }

    /// The task's id, name and spawn location.
    pub fn info(&self) -> TaskInfo {
        self.header().info()
    }
}

impl<T> Future for Task<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<Self::Output> {
        let polled = match self.inner.as_mut() {
            Some(Inner::Own(inner)) => Pin::new(inner).poll(cx),
            Some(Inner::Pool(inner)) => Pin::new(inner).poll(cx),
            None => Poll::Ready(None),
        };
        let output = match polled {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(output) => output.flatten().and_then(Output::into_inner),
        };
        self.retrieved = true;
        Poll::Ready(match output {
            Some(v) => Ok(v),
            None => match self.header().take_panic() {
                Some(payload) => Err(TaskError::Panicked(payload)),
                None => Err(TaskError::Cancelled),
            },
        })
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        if !self.retrieved && self.header().set(DETACHED) & PANICKED != 0 {
            report_unretrieved(self.header());
        }
        match self.inner.take() {
            Some(Inner::Own(inner)) => inner.detach(),
            Some(Inner::Pool(inner)) => inner.detach(),
            None => {}
        }
    }
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("info", &self.info())
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// A panic nobody will retrieve (the handle is gone): report it, once.
pub(crate) fn report_unretrieved(header: &Header) {
    if let Some(payload) = header.take_panic() {
        let ctx = ExceptionContext::new("task panic was never retrieved")
            .with_error(panic_message(&*payload))
            .with_task(header.info());
        drop_quietly(payload);
        scope::report(Some(&*header.owner), ctx);
    }
}

/// A task's output as async-task holds it until the handle takes it. async-task drops an output
/// nobody takes (the handle was dropped) under its abort guard, where a panicking destructor
/// aborts the process; this wrapper drops it first, containing and reporting such a panic.
pub(crate) struct Output<T>(Option<T>);

impl<T> Output<T> {
    pub(crate) fn new(value: T) -> Self {
        Output(Some(value))
    }

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
                scope::report(None, ctx);
            }
        }
    }
}
