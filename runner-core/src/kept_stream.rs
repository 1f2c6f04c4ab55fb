//! A stream kept on the thread that made it (a generator, a finalized stream) behind a handle that
//! may travel: polled directly on that thread, and from any other by asking that thread to poll
//! it.
//!
//! What the stream owns (a generator's body, a stream's cleanup) need not be `Send`, so it stays
//! in its thread's table (`task::bound`). The handle is `Send` when the items are. On another
//! thread, a poll posts a request home and waits. Home polls the stream with a waker that posts
//! the request again, in a loan of the consumer's context. The answer comes back through the
//! [`Exchange`], and the consumer adopts the context's changes with it. Dropped elsewhere, the
//! handle sends the stream's cleanup home, and the task that dropped it waits for it
//! (`Kept::finish`).

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe, Location};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as Cx, Poll, Waker};

use crate::context::Context;
use crate::error::AsyncGenError;
use crate::lock::lock;
use crate::post::Delivery;
use crate::report::{source_location, write_stderr};
use crate::task::bound::{self, Kept};
use crate::task::cleanup::register_closable;
use crate::task::scope::{Cleanup, Closable, Scope, What};

/// What a kept stream does, on its thread.
pub(crate) trait HomeStream: Closable + 'static {
    type Item;

    /// The next item, as `Stream::poll_next`. May unwind.
    fn poll_item(&self, cx: &mut Cx<'_>) -> Poll<Option<Self::Item>>;

    /// Close it (a generator's `aclose`); afterwards it yields `None`.
    fn poll_close(&self, _cx: &mut Cx<'_>) -> Poll<Result<(), AsyncGenError>> {
        Poll::Ready(Ok(()))
    }

    /// True once it has finished or was closed.
    fn is_finished(&self) -> bool;

    /// True once it has no cleanup left to run: finished, and no close left half done.
    fn is_clean(&self) -> bool {
        self.is_finished()
    }
}

/// What a consumer asks of the stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Next,
    Close,
}

/// The stream's answer to an [`Op`].
enum Answer<T> {
    Item(Option<T>),
    Closed(Result<(), AsyncGenError>),
}

impl<T> Answer<T> {
    /// The answer of a stream that is gone (its thread's loop or worker closed): it has ended.
    fn gone(op: Op) -> Answer<T> {
        match op {
            Op::Next => Answer::Item(None),
            Op::Close => Answer::Closed(Ok(())),
        }
    }
}

/// Shared by a handle and its stream's thread.
struct Exchange<T> {
    /// Set while a request from another thread is out: a poll at home settles it first.
    out: AtomicBool,
    /// Mirrors the stream's `is_finished`, for a handle elsewhere.
    finished: AtomicBool,
    /// Mirrors the stream's `is_clean`: a handle dropped elsewhere has nothing to ask for.
    clean: AtomicBool,
    request: Mutex<Request<T>>,
}

/// A request from another thread, and its answer.
struct Request<T> {
    op: Option<Op>,
    /// Counts requests, so that a poll made for one replaced meanwhile is not taken as the answer.
    serial: u64,
    /// The answer, or the panic the stream's poll raised (resumed in the consumer).
    answer: Option<std::thread::Result<Answer<T>>>,
    /// The consumer's waker.
    consumer: Option<Waker>,
    /// The consumer's context, lent for the stream's polls and given back with the answer.
    ctx: Option<Context>,
    /// Wakes home to poll again; made at the first request.
    home_waker: Option<Waker>,
}

/// What the stream's thread keeps: the stream and its registration with the loop.
struct Home<S: HomeStream> {
    stream: S,
    exchange: Arc<Exchange<S::Item>>,
    /// The loop that closes it at shutdown, once registered (at its first item).
    scope: RefCell<Option<Weak<Scope>>>,
    registered: Cell<bool>,
    kind: &'static str,
    made_at: &'static Location<'static>,
}

impl<S: HomeStream> Home<S> {
    fn poll(self: &Rc<Self>, op: Op, cx: &mut Cx<'_>) -> Poll<Answer<S::Item>> {
        match op {
            Op::Next => self.next(cx).map(Answer::Item),
            Op::Close => {
                let _mirror = MirrorFinished(self);
                self.stream.poll_close(cx).map(Answer::Closed)
            }
        }
    }

    /// The next item; the first request registers the stream with the running loop.
    #[inline]
    fn next(self: &Rc<Self>, cx: &mut Cx<'_>) -> Poll<Option<S::Item>> {
        if !self.registered.replace(true) {
            let weak: Weak<dyn Closable> = Rc::downgrade(self) as Weak<dyn Closable>;
            *self.scope.borrow_mut() = register_closable(weak, &|| self.describe());
        }
        // The mirror of `is_finished` is updated even when the poll unwinds.
        let _mirror = MirrorFinished(self);
        self.stream.poll_item(cx)
    }
}

/// Copies the stream's `is_finished` to its exchange when dropped.
struct MirrorFinished<'a, S: HomeStream>(&'a Home<S>);

impl<S: HomeStream> Drop for MirrorFinished<'_, S> {
    fn drop(&mut self) {
        let finished = self.0.stream.is_finished();
        self.0.exchange.finished.store(finished, Ordering::Release);
        let clean = self.0.stream.is_clean();
        self.0.exchange.clean.store(clean, Ordering::Release);
    }
}

impl<S: HomeStream> Home<S> {
    /// The stream will answer no more (its loop refused the request, it was closed, or it is
    /// dropped): a request out from another thread is answered as if the stream had ended
    /// (R5.6), so that its consumer does not wait forever.
    fn answer_gone(&self) {
        let consumer = {
            let mut request = lock(&self.exchange.request);
            match (request.op, &request.answer) {
                (Some(op), None) => {
                    request.answer = Some(Ok(Answer::gone(op)));
                    request.consumer.take()
                }
                _ => None,
            }
        };
        if let Some(consumer) = consumer {
            consumer.wake();
        }
    }
}

impl<S: HomeStream> Drop for Home<S> {
    fn drop(&mut self) {
        self.answer_gone();
    }
}

impl<S: HomeStream> Closable for Home<S> {
    fn close_now(&self) -> Option<Cleanup> {
        let cleanup = self.stream.close_now();
        // The cleanup is handed over (or there was none): nothing is left for a handle to do.
        self.exchange.finished.store(true, Ordering::Release);
        self.exchange.clean.store(true, Ordering::Release);
        self.answer_gone();
        cleanup
    }

    fn describe(&self) -> String {
        describe(self.kind, self.made_at)
    }
}

/// How reports name a kept stream: its kind and where it was created.
pub(crate) fn describe(kind: &'static str, made_at: &'static Location<'static>) -> String {
    format!("<{kind} created at {}>", source_location(made_at))
}

/// Poll the stream `kept` holds, if this is its thread; `None` on any other.
fn poll_here<S: HomeStream>(kept: &Kept, op: Op, cx: &mut Cx<'_>) -> Option<Poll<Answer<S::Item>>> {
    Some(match kept.get_here::<Rc<Home<S>>>()? {
        Some(home) => home.poll(op, cx),
        None => Poll::Ready(Answer::gone(op)),
    })
}

/// The next item of the stream `kept` holds, if this is its thread (the common case, kept
/// short); `None` on any other.
fn next_here<S: HomeStream>(kept: &Kept, cx: &mut Cx<'_>) -> Option<Poll<Option<S::Item>>> {
    Some(match kept.get_here::<Rc<Home<S>>>()? {
        Some(home) => home.next(cx),
        None => Poll::Ready(None),
    })
}

/// Answer the request out for the stream kept at `index`: a job posted home by the consumer, and
/// again by the waker the stream's poll was given. Refused (its loop is closing), the request is
/// answered as if the stream had ended.
fn pump<S: HomeStream>(index: usize, delivery: Delivery) {
    let Some(home) = bound::get::<Rc<Home<S>>>(index) else {
        return;
    };
    if delivery == Delivery::Refused {
        home.answer_gone();
        return;
    }
    let exchange = &home.exchange;
    let (op, serial, mut ctx, waker) = {
        let mut request = lock(&exchange.request);
        let (Some(op), None, Some(waker)) = (request.op, &request.answer, &request.home_waker)
        else {
            return;
        };
        let waker = waker.clone();
        (op, request.serial, request.ctx.take(), waker)
    };
    let mut cx = Cx::from_waker(&waker);
    let mut lent = ctx.take().unwrap_or_default();
    let polled = catch_unwind(AssertUnwindSafe(|| lent.run(|| home.poll(op, &mut cx))));
    let mut request = lock(&exchange.request);
    if request.serial != serial {
        return; // replaced meanwhile: the new request has its own job posted
    }
    request.ctx = Some(lent);
    request.answer = match polled {
        Ok(Poll::Pending) => return,
        Ok(Poll::Ready(answer)) => Some(Ok(answer)),
        Err(payload) => Some(Err(payload)),
    };
    let consumer = request.consumer.take();
    drop(request);
    if let Some(consumer) = consumer {
        consumer.wake();
    }
}

/// Take the stream kept at `index` out of its thread's table; its cleanup, for a dropped handle.
fn finish<S: HomeStream>(index: usize) -> Option<(Cleanup, Option<Weak<Scope>>)> {
    let home = bound::take::<Rc<Home<S>>>(index)?;
    let cleanup = home.close_now()?;
    let scope = home.scope.borrow_mut().take();
    Some((cleanup, scope))
}

/// [`poll_here`] for one stream type: `None` off the stream's thread.
type PollHere<T> = fn(&Kept, Op, &mut Cx<'_>) -> Option<Poll<Answer<T>>>;

/// [`next_here`] for one stream type: `None` off the stream's thread.
type NextHere<T> = fn(&Kept, &mut Cx<'_>) -> Option<Poll<Option<T>>>;

/// The handle to a kept stream. `Send` when the items are.
pub(crate) struct KeptStream<T> {
    kept: Kept,
    exchange: Arc<Exchange<T>>,
    poll_here: PollHere<T>,
    next_here: NextHere<T>,
    pump: fn(usize, Delivery),
    finish: bound::Finish,
    discard: fn(&Kept),
    kind: &'static str,
    /// The cleanup a dropped handle schedules.
    what: What,
    made_at: &'static Location<'static>,
}

impl<T> KeptStream<T> {
    /// Keep `stream` on this thread; reports name it "<`kind` created at `made_at`>".
    pub(crate) fn new<S: HomeStream<Item = T>>(
        stream: S,
        kind: &'static str,
        what: What,
    ) -> KeptStream<T> {
        let made_at = what.at;
        let exchange = Arc::new(Exchange {
            out: AtomicBool::new(false),
            finished: AtomicBool::new(stream.is_finished()),
            clean: AtomicBool::new(stream.is_clean()),
            request: Mutex::new(Request {
                op: None,
                serial: 0,
                answer: None,
                consumer: None,
                ctx: None,
                home_waker: None,
            }),
        });
        let home = Rc::new(Home {
            stream,
            exchange: exchange.clone(),
            scope: Default::default(),
            registered: Default::default(),
            kind,
            made_at,
        });
        KeptStream {
            kept: Kept::new(Box::new(home)),
            exchange,
            poll_here: poll_here::<S>,
            next_here: next_here::<S>,
            pump: pump::<S>,
            finish: finish::<S>,
            discard: Kept::discard::<Rc<Home<S>>>,
            kind,
            what,
            made_at,
        }
    }

    /// Ask the stream for `op`: polled here on its thread, else by its thread on request.
    /// A panic in the stream's poll resumes here.
    fn poll(&self, op: Op, cx: &mut Cx<'_>) -> Poll<Answer<T>> {
        if self.exchange.out.load(Ordering::Acquire) {
            return self.poll_with_request_out(op, cx);
        }
        match (self.poll_here)(&self.kept, op, cx) {
            Some(polled) => polled,
            None => self.poll_elsewhere(op, cx),
        }
    }

    /// A request from another thread is out: answered elsewhere; back home, an answer already
    /// made is this poll's (with the consumer context's changes, which are adopted as on the
    /// other thread: a pool task may have moved back to the worker that made the stream), else
    /// the request is withdrawn (its poll was dropped elsewhere).
    #[cold]
    fn poll_with_request_out(&self, op: Op, cx: &mut Cx<'_>) -> Poll<Answer<T>> {
        if !self.kept.is_here() {
            return self.poll_elsewhere(op, cx);
        }
        let mut request = lock(&self.exchange.request);
        let answered = request.op == Some(op) && request.answer.is_some();
        if answered {
            // Before anything is taken: a refusal loses nothing.
            Context::refuse_change_while_cloning();
        }
        self.exchange.out.store(false, Ordering::Release);
        request.op = None;
        request.serial += 1;
        let (answer, lent) = (request.answer.take(), request.ctx.take());
        drop(request);
        if let (true, Some(answer)) = (answered, answer) {
            return self.adopt(answer, lent);
        }
        // An answer to another request, and the loan it was made in, are dropped here, outside
        // the lock: their destructors are user code.
        (self.poll_here)(&self.kept, op, cx).unwrap_or(Poll::Ready(Answer::gone(op)))
    }

    /// The next item (see [`poll`](Self::poll)).
    #[inline]
    pub(crate) fn poll_next(&self, cx: &mut Cx<'_>) -> Poll<Option<T>> {
        if !self.exchange.out.load(Ordering::Acquire) {
            if let Some(polled) = (self.next_here)(&self.kept, cx) {
                return polled;
            }
        }
        self.poll(Op::Next, cx).map(|answer| match answer {
            Answer::Item(item) => item,
            Answer::Closed(_) => None,
        })
    }

    /// Close the stream (see [`poll`](Self::poll)).
    pub(crate) fn poll_close(&self, cx: &mut Cx<'_>) -> Poll<Result<(), AsyncGenError>> {
        self.poll(Op::Close, cx).map(|answer| match answer {
            Answer::Closed(result) => result,
            Answer::Item(_) => Ok(()),
        })
    }

    fn poll_elsewhere(&self, op: Op, cx: &mut Cx<'_>) -> Poll<Answer<T>> {
        if self.is_finished() && !self.exchange.out.load(Ordering::Acquire) {
            return Poll::Ready(Answer::gone(op)); // nothing to ask: it has ended
        }
        let mut request = lock(&self.exchange.request);
        if request.op == Some(op) && request.answer.is_some() {
            // Before anything is taken: a refusal loses nothing.
            Context::refuse_change_while_cloning();
            request.op = None;
            self.exchange.out.store(false, Ordering::Release);
            let (answer, lent) = (request.answer.take(), request.ctx.take());
            drop(request);
            if let Some(answer) = answer {
                return self.adopt(answer, lent);
            }
            return Poll::Ready(Answer::gone(op));
        }
        if !request
            .consumer
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            request.consumer = Some(cx.waker().clone());
        }
        if request.op == Some(op) {
            return Poll::Pending; // asked already
        }
        // A new request (a close replaces a next left unanswered).
        request.op = Some(op);
        request.serial += 1;
        request.answer = None;
        request.ctx = Some(Context::lend());
        if request.home_waker.is_none() {
            request.home_waker = self.kept.waker_for(self.pump);
        }
        self.exchange.out.store(true, Ordering::Release);
        drop(request);
        let (pump, index) = (self.pump, self.kept.index());
        if self
            .kept
            .post(Box::new(move |delivery| pump(index, delivery)))
            .is_err()
        {
            // Its thread's loop or worker has closed: the stream is gone, so it has ended.
            lock(&self.exchange.request).op = None;
            self.exchange.out.store(false, Ordering::Release);
            if !self.exchange.finished.swap(true, Ordering::AcqRel) {
                write_stderr(format_args!(
                    "runner: {} was polled on another thread after the loop or worker that made \
                     it had closed (or outside any): it is not `Send` and cannot run there, so it \
                     ends; use it before closing, or on the thread that made it",
                    describe(self.kind, self.made_at)
                ));
            }
            return Poll::Ready(Answer::gone(op));
        }
        Poll::Pending
    }

    /// Deliver an answer made in a loan of the consumer's context: the context's changes are
    /// adopted first (the current context must be the one lent, else they are dropped), then the
    /// answer is given, or the panic the stream raised is resumed.
    fn adopt(
        &self,
        answer: std::thread::Result<Answer<T>>,
        lent: Option<Context>,
    ) -> Poll<Answer<T>> {
        if let Some(lent) = lent {
            Context::take_back(lent);
        }
        match answer {
            Ok(answer) => Poll::Ready(answer),
            Err(payload) => resume_unwind(payload),
        }
    }

    /// True once the stream has finished or was closed.
    pub(crate) fn is_finished(&self) -> bool {
        self.exchange.finished.load(Ordering::Acquire)
    }
}

impl<T> Drop for KeptStream<T> {
    fn drop(&mut self) {
        let idle = !self.exchange.out.load(Ordering::Acquire);
        if idle && self.exchange.clean.load(Ordering::Acquire) {
            // Finished or closed already (by close's second step, say): there is no cleanup to
            // run, and nothing to say if its thread's loop or worker has closed since.
            (self.discard)(&self.kept);
            return;
        }
        self.kept.finish(self.finish, self.what);
    }
}
