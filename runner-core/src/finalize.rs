//! Stream finalization: attach an async cleanup to any stream, run exactly once when the stream
//! is dropped (exhausted or not) or when the loop's `shutdown_asyncgens` closes it.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context as Cx, Poll};

use futures_core::Stream;

use crate::context::Context;
use crate::report::source_location;
use crate::task::cleanup::{guarded, in_context, register_closable, schedule_cleanup};
use crate::task::scope::{Cleanup, Closable, Scope};

/// Attach an async cleanup to any stream: `cleanup(stream)` runs exactly once, when the returned
/// stream is dropped (exhausted or not) or when `shutdown_asyncgens` closes it.
///
/// `S: Unpin` so the stream can be handed back to `cleanup` by value; pin a `!Unpin` stream with
/// `Box::pin` first.
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
    let core = Rc::new(FinCore {
        parts: RefCell::new(Some((stream, close))),
        created_at: Location::caller(),
        ctx: Context::current(),
        home: RefCell::new(None),
        registered: Cell::new(false),
    });
    Finalized {
        erased: core.clone(),
        core,
    }
}

/// The stream's cleanup, erased to a boxed future.
type CloseFn<S> = Box<dyn FnOnce(S) -> Cleanup>;

struct FinCore<S> {
    parts: RefCell<Option<(S, CloseFn<S>)>>,
    created_at: &'static Location<'static>,
    ctx: Context,
    home: RefCell<Option<Weak<Scope>>>,
    registered: Cell<bool>,
}

impl<S: 'static> Closable for FinCore<S> {
    fn close_now(&self) -> Option<Cleanup> {
        let (stream, close) = self.parts.borrow_mut().take()?;
        let name = self.describe();
        Some(guarded(
            in_context(self.ctx.clone(), close(stream)),
            move || format!("cleanup of {name}"),
        ))
    }

    fn describe(&self) -> String {
        format!(
            "<Finalized stream created at {}>",
            source_location(self.created_at)
        )
    }
}

/// A stream with an async cleanup attached by [`finalize`].
pub struct Finalized<S> {
    core: Rc<FinCore<S>>,
    /// The same core, type-erased where `S: 'static` was known, so `Drop` can close it.
    erased: Rc<dyn Closable>,
}

impl<S: Stream + Unpin + 'static> Stream for Finalized<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<Option<S::Item>> {
        let core = &self.core;
        if !core.registered.replace(true) {
            *core.home.borrow_mut() =
                register_closable(Rc::downgrade(&self.erased), &|| core.describe());
        }
        match core.parts.borrow_mut().as_mut() {
            Some((stream, _)) => Pin::new(stream).poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}

impl<S> Drop for Finalized<S> {
    fn drop(&mut self) {
        if let Some(cleanup) = self.erased.close_now() {
            schedule_cleanup(cleanup, self.core.home.borrow_mut().take());
        }
    }
}

impl<S> fmt::Debug for Finalized<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finalized")
            .field("closed", &self.core.parts.borrow().is_none())
            .finish()
    }
}
