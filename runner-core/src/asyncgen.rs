//! Async generators and stream finalization: streams whose async cleanup runs when they are
//! exhausted, closed with `aclose()`, dropped, or left open when the loop shuts down (Python's
//! async generators and `loop.shutdown_asyncgens()`).
//!
//! ```
//! use std::{cell::RefCell, rc::Rc};
//! use runner_core::AsyncGen;
//!
//! let log = Rc::new(RefCell::new(Vec::new()));
//! let l = log.clone();
//! runner_core::run(async move {
//!     let mut pages = AsyncGen::new(|y| async move {
//!         let result = async {
//!             for page in 1.. {
//!                 y.yield_(page).await?;        // Err(GeneratorExit) when closed early
//!             }
//!             Ok(())
//!         }
//!         .await;
//!         runner_core::yield_now().await;      // async cleanup still runs
//!         l.borrow_mut().push("connection closed");
//!         result
//!     });
//!     assert_eq!(pages.next().await, Some(1));
//!     assert_eq!(pages.next().await, Some(2));
//!     pages.aclose().await.unwrap();
//!     assert_eq!(pages.next().await, None);
//! })
//! .unwrap();
//! assert_eq!(*log.borrow(), ["connection closed"]);
//! ```
//!
//! The body is an ordinary future; `Yielder::yield_` hands one item to the consumer and
//! suspends the body until the consumer asks for the next one. On first iteration a generator
//! registers (weakly) with the running loop, which closes it at shutdown if it is still open.
//! [`finalize`](crate::finalize) gives any stream the same treatment.

use std::cell::Cell;
use std::fmt;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe, Location};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as Cx, Poll};

use futures_core::Stream;

use crate::context::Context;
use crate::error::{catch_quietly, drop_quietly, AsyncGenError, GeneratorExit};
use crate::kept_stream::{self, HomeStream, KeptStream};
use crate::report::ExceptionContext;
use crate::task::cleanup::{guarded, in_context};
use crate::task::scope::{self, Cleanup, CleanupKind, Closable, What};

type Body = Pin<Box<dyn Future<Output = Result<(), GeneratorExit>>>>;

/// A close under way: the body told to exit, driven to its end.
type Closing = Pin<Box<dyn Future<Output = Result<(), AsyncGenError>>>>;

/// The hand-off between the body (`Yielder`) and the consumer.
struct Channel<T> {
    item: Cell<Option<T>>,
    closing: Cell<bool>,
    exit_delivered: Cell<bool>,
    /// The body is being polled by the generator: a `yield_` awaited anywhere else (a task the
    /// body spawned) could hand its item to no one.
    in_body: Cell<bool>,
    /// The body is suspended in `yield_`, where a close can resume it with `GeneratorExit`.
    at_yield: Cell<bool>,
}

impl<T> Channel<T> {
    /// Poll the body with `in_body` set (put back even if the poll unwinds).
    fn poll_body(&self, body: &mut Body, cx: &mut Cx<'_>) -> Poll<Result<(), GeneratorExit>> {
        struct Leave<'a>(&'a Cell<bool>);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        self.in_body.set(true);
        let _leave = Leave(&self.in_body);
        body.as_mut().poll(cx)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    NotStarted,
    Started,
    Finished,
}

/// The generator itself, kept on the thread that made it.
struct Core<T> {
    body: Cell<Option<Body>>,
    /// An `aclose` left unfinished (its future was dropped): the next close goes on with it.
    closing: Cell<Option<Closing>>,
    chan: Rc<Channel<T>>,
    state: Cell<State>,
    created_at: &'static Location<'static>,
    ctx: Context,
}

impl<T: 'static> Core<T> {
    /// Start closing: the body told to exit, or the close an `aclose` left unfinished; `None` if
    /// there is nothing to close (never started, or finished).
    ///
    /// A body caught between two items (its consumer's `next` was cancelled while the body
    /// awaited something else than `yield_`) cannot be resumed with `GeneratorExit`: it is
    /// cancelled instead, its future dropped here (its destructors, and the cleanups they defer,
    /// run), as Python throws `CancelledError` into a generator whose `__anext__` is cancelled.
    fn start_closing(&self) -> Option<Closing> {
        if let Some(closing) = self.closing.take() {
            return Some(closing);
        }
        let started = self.state.replace(State::Finished) == State::Started;
        let body = self.body.take()?;
        if !started {
            return None;
        }
        if !self.chan.at_yield.get() {
            catch_quietly(move || drop(body));
            return None;
        }
        Some(Box::pin(close_body(body, self.chan.clone())))
    }
}

impl<T: 'static> Closable for Core<T> {
    fn close_now(&self) -> Option<Cleanup> {
        let closing = self.start_closing()?;
        let name = self.describe();
        let closing = async move {
            if let Err(err) = closing.await {
                scope::report(
                    None,
                    ExceptionContext::new(format!(
                        "an error occurred during closing of asynchronous generator {name}"
                    ))
                    .with_error(&err),
                );
                if let AsyncGenError::Panicked(payload) = err {
                    drop_quietly(payload);
                }
            }
        };
        let what = What {
            kind: CleanupKind::CloseGenerator,
            at: self.created_at,
        };
        Some(guarded(in_context(self.ctx.clone(), closing), what))
    }

    fn describe(&self) -> String {
        kept_stream::describe("AsyncGen", self.created_at)
    }
}

impl<T: 'static> HomeStream for Core<T> {
    type Item = T;

    fn poll_item(&self, cx: &mut Cx<'_>) -> Poll<Option<T>> {
        match self.state.get() {
            State::Finished => return Poll::Ready(None),
            State::NotStarted => self.state.set(State::Started),
            State::Started => {}
        }
        let Some(mut body) = self.body.take() else {
            return Poll::Ready(None);
        };
        match catch_unwind(AssertUnwindSafe(|| self.chan.poll_body(&mut body, cx))) {
            Ok(Poll::Pending) => {
                self.body.set(Some(body));
                match self.chan.item.take() {
                    Some(item) => Poll::Ready(Some(item)),
                    None => Poll::Pending,
                }
            }
            Ok(Poll::Ready(_)) => {
                self.state.set(State::Finished);
                Poll::Ready(None)
            }
            Err(payload) => {
                self.state.set(State::Finished);
                drop(body);
                resume_unwind(payload)
            }
        }
    }

    fn poll_close(&self, cx: &mut Cx<'_>) -> Poll<Result<(), AsyncGenError>> {
        let Some(mut closing) = self.start_closing() else {
            return Poll::Ready(Ok(()));
        };
        let polled = closing.as_mut().poll(cx);
        if polled.is_pending() {
            self.closing.set(Some(closing));
        }
        polled
    }

    fn is_finished(&self) -> bool {
        self.state.get() == State::Finished
    }

    /// Never started (closing it does nothing, R5.2), or finished with no close left half
    /// done.
    fn is_clean(&self) -> bool {
        match self.state.get() {
            State::NotStarted => true,
            State::Started => false,
            State::Finished => {
                let closing = self.closing.take();
                let clean = closing.is_none();
                self.closing.set(closing);
                clean
            }
        }
    }
}

/// Resume a suspended body with `Err(GeneratorExit)` and drive it to its end.
async fn close_body<T>(mut body: Body, chan: Rc<Channel<T>>) -> Result<(), AsyncGenError> {
    chan.closing.set(true);
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| chan.poll_body(&mut body, cx))) {
            Ok(Poll::Ready(_)) => Poll::Ready(Ok(())),
            Ok(Poll::Pending) if chan.item.take().is_some() => {
                Poll::Ready(Err(AsyncGenError::IgnoredExit))
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(AsyncGenError::Panicked(payload))),
        },
    )
    .await
}

/// An async generator: a `Stream` whose body yields items with [`Yielder::yield_`] and whose
/// async cleanup runs when it is exhausted, closed, dropped or shut down with its loop.
///
/// The body need not be `Send`: it runs on the thread that made the generator. The generator is
/// `Send` when its items are, so a task on the worker pool can hold one across an await; used
/// from another thread, it asks the thread that made it for each item (the body runs there, in
/// the consumer's context), and dropped there it has that thread close it, the dropping task
/// waiting until the body has finished.
pub struct AsyncGen<T> {
    stream: KeptStream<T>,
}

impl<T: 'static> AsyncGen<T> {
    /// A generator running `body`. Nothing runs until the first `next`.
    #[track_caller]
    pub fn new<F, Fut>(body: F) -> Self
    where
        F: FnOnce(Yielder<T>) -> Fut,
        Fut: Future<Output = Result<(), GeneratorExit>> + 'static,
    {
        let chan = Rc::new(Channel {
            item: Cell::new(None),
            closing: Cell::new(false),
            exit_delivered: Cell::new(false),
            in_body: Cell::new(false),
            at_yield: Cell::new(false),
        });
        let body: Body = Box::pin(body(Yielder { chan: chan.clone() }));
        let created_at = Location::caller();
        let core = Core {
            body: Cell::new(Some(body)),
            closing: Cell::new(None),
            chan,
            state: Cell::new(State::NotStarted),
            created_at,
            ctx: Context::current(),
        };
        let what = What {
            kind: CleanupKind::CloseGenerator,
            at: created_at,
        };
        AsyncGen {
            stream: KeptStream::new(core, "AsyncGen", what),
        }
    }

    /// The next item, or `None` once the body has finished or the generator was closed.
    /// A panic in the body propagates here, and the generator is finished afterwards.
    pub async fn next(&mut self) -> Option<T> {
        poll_fn(|cx| self.stream.poll_next(cx)).await
    }

    /// Close the generator: its suspended `yield_` returns `Err(GeneratorExit)` and the body runs
    /// to its end, async cleanup included. Closing a finished or never-started generator does
    /// nothing. Afterwards the stream yields `None`.
    pub async fn aclose(&mut self) -> Result<(), AsyncGenError> {
        poll_fn(|cx| self.stream.poll_close(cx)).await
    }

    /// True once the generator has finished or was closed.
    pub fn is_closed(&self) -> bool {
        self.stream.is_finished()
    }
}

impl<T: 'static> Stream for AsyncGen<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<Option<T>> {
        self.stream.poll_next(cx)
    }
}

impl<T> fmt::Debug for AsyncGen<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncGen")
            .field("closed", &self.stream.is_finished())
            .finish_non_exhaustive()
    }
}

/// The body's side of a generator: hands items to the consumer.
pub struct Yielder<T> {
    chan: Rc<Channel<T>>,
}

impl<T> Yielder<T> {
    /// Hand `value` to the consumer and wait until it asks for the next one. Returns
    /// `Err(GeneratorExit)` instead when the generator is being closed: return it.
    ///
    /// # Panics
    /// When awaited outside the generator's own body (in a task the body spawned, say), or
    /// while another `yield_` of the same generator is pending (two awaited at once): either
    /// would hand an item to no one. Python's generators cannot get into either state.
    pub async fn yield_(&self, value: T) -> Result<(), GeneratorExit> {
        let chan = &self.chan;
        chan.check_in_body();
        if chan.closing.get() && !chan.exit_delivered.replace(true) {
            return Err(GeneratorExit);
        }
        let pending = chan.item.take();
        if pending.is_some() {
            chan.item.set(pending);
            panic!(
                "yield_ was called while another yield_ of the same generator was pending (two \
                 awaited at once, with join or zip): await each yield_ before the next, since \
                 the consumer takes one item at a time"
            );
        }
        chan.item.set(Some(value));
        let mut suspended = false;
        poll_fn(|_| {
            chan.check_in_body();
            if !suspended {
                suspended = true;
                chan.at_yield.set(true);
                return Poll::Pending; // the consumer takes the item and polls again for the next
            }
            chan.at_yield.set(false);
            if chan.closing.get() {
                chan.exit_delivered.set(true);
                Poll::Ready(Err(GeneratorExit))
            } else {
                Poll::Ready(Ok(()))
            }
        })
        .await
    }
}

impl<T> Channel<T> {
    /// Refuse a `yield_` polled outside the body's own polls.
    fn check_in_body(&self) {
        if !self.in_body.get() {
            panic!(
                "Yielder::yield_ must be awaited by the generator's own body, not by a task it \
                 spawned or a future polled elsewhere: its item would reach no consumer; yield \
                 from the body, and send values from other tasks to it with a channel"
            );
        }
    }
}

impl<T> fmt::Debug for Yielder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Yielder").finish_non_exhaustive()
    }
}
