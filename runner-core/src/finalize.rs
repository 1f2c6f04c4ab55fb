//! Stream finalization: attach an async cleanup to any stream, run exactly once when the stream
//! is dropped (exhausted or not) or when the loop's `shutdown_asyncgens` closes it.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context as Cx, Poll};

use futures_core::Stream;

use crate::context::Context;
use crate::kept_stream::{self, HomeStream, KeptStream};
use crate::task::cleanup::{guarded, in_context};
use crate::task::scope::{Cleanup, CleanupKind, Closable, What};

/// Attach an async cleanup to any stream: `cleanup(stream)` runs exactly once, when the returned
/// stream is dropped (exhausted or not) or when `shutdown_asyncgens` closes it.
///
/// `S: Unpin` so the stream can be handed back to `cleanup` by value; pin a `!Unpin` stream with
/// `Box::pin` first.
///
/// Neither the stream nor the cleanup need be `Send`: both stay on the thread that called
/// `finalize`. The returned stream is `Send` when its items are, so a task on the worker pool can
/// hold one across an await; polled from another thread, it asks that thread for each item, and
/// dropped there it has that thread run the cleanup, the dropping task waiting until it has.
///
/// ```
/// use std::{cell::Cell, rc::Rc};
/// use futures_lite::StreamExt;
///
/// let closed = Rc::new(Cell::new(0));
/// let c = closed.clone();
/// runner_core::run(async move {
///     let mut rows = runner_core::finalize(futures_lite::stream::iter([1, 2, 3]), move |_rows| async move {
///         runner_core::yield_now().await;
///         c.set(c.get() + 1);
///     });
///     assert_eq!(rows.next().await, Some(1));
///     drop(rows);                      // stopped early: the cleanup runs on the loop
///     runner_core::yield_now().await;
/// })
/// .unwrap();
/// assert_eq!(closed.get(), 1);
/// ```
#[track_caller]
pub fn finalize<S, F, Fut>(stream: S, cleanup: F) -> Finalized<S>
where
    S: Stream + Unpin + 'static,
    F: FnOnce(S) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let close: CloseFn<S> = Box::new(move |s| Box::pin(cleanup(s)));
    let created_at = Location::caller();
    let core = FinCore {
        parts: RefCell::new(Some((stream, close))),
        created_at,
        ctx: Context::current(),
    };
    let what = What {
        kind: CleanupKind::CloseStream,
        at: created_at,
    };
    Finalized {
        stream: KeptStream::new(core, "Finalized stream", what),
    }
}

/// The stream's cleanup, erased to a boxed future.
type CloseFn<S> = Box<dyn FnOnce(S) -> Pin<Box<dyn Future<Output = ()>>>>;

/// The stream and its cleanup, kept on the thread that made them.
struct FinCore<S> {
    parts: RefCell<Option<(S, CloseFn<S>)>>,
    created_at: &'static Location<'static>,
    ctx: Context,
}

impl<S: 'static> Closable for FinCore<S> {
    fn close_now(&self) -> Option<Cleanup> {
        let (stream, close) = self.parts.borrow_mut().take()?;
        let what = What {
            kind: CleanupKind::CloseStream,
            at: self.created_at,
        };
        Some(guarded(in_context(self.ctx.clone(), close(stream)), what))
    }

    fn describe(&self) -> String {
        kept_stream::describe("Finalized stream", self.created_at)
    }
}

impl<S: Stream + Unpin + 'static> HomeStream for FinCore<S> {
    type Item = S::Item;

    fn poll_item(&self, cx: &mut Cx<'_>) -> Poll<Option<S::Item>> {
        match self.parts.borrow_mut().as_mut() {
            Some((stream, _)) => Pin::new(stream).poll_next(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_finished(&self) -> bool {
        self.parts.borrow().is_none()
    }
}

/// A stream with an async cleanup attached by [`finalize`].
pub struct Finalized<S: Stream> {
    stream: KeptStream<S::Item>,
}

impl<S: Stream + Unpin + 'static> Stream for Finalized<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<Option<S::Item>> {
        self.stream.poll_next(cx)
    }
}

impl<S: Stream> fmt::Debug for Finalized<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finalized")
            .field("closed", &self.stream.is_finished())
            .finish()
    }
}
