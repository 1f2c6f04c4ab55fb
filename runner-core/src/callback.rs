//! Callbacks: plain functions the loop runs on its next iteration (`call_soon`) or after a delay
//! (`call_later`), in FIFO order, each in a copy of the context it was scheduled from.
//!
//! ```
//! use std::{cell::RefCell, rc::Rc, time::Duration};
//!
//! runner_core::run(async {
//!     let lp = runner_core::get_running_loop().unwrap();
//!     let log = Rc::new(RefCell::new(Vec::new()));
//!     let (a, b, c) = (log.clone(), log.clone(), log.clone());
//!     lp.call_later(Duration::from_millis(5), move || a.borrow_mut().push("later"));
//!     lp.call_soon(move || b.borrow_mut().push("soon"));
//!     lp.call_soon(move || c.borrow_mut().push("cancelled")).cancel();
//!     runner_core::sleep(Duration::from_millis(20)).await;
//!     assert_eq!(*log.borrow(), ["soon", "later"]);
//! })
//! .unwrap();
//! ```
//!
//! One driver task per loop runs them: it is woken when a callback is queued, runs the ones that
//! were queued before it started (callbacks queued meanwhile wait for the next round, so tasks get
//! their turn), and keeps one timer (the loop's own, `time::Sleep`) set to the earliest
//! `call_later` deadline.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as Cx, Poll};
use std::time::{Duration, Instant};

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::context::Context;
use crate::error::{drop_quietly, panic_message};
use crate::queue::Inbox;
use crate::report::{source_location, ExceptionContext};
use crate::task::scope;
use crate::time::{far_future, Sleep};

/// The most callbacks (and, separately, jobs posted from other threads) one round of the loop's
/// driver runs before the loop's tasks, timers and I/O get their turn.
pub(crate) const CALLBACK_BATCH: usize = 128;

/// Lets a scheduled callback be cancelled before it runs.
#[derive(Clone)]
pub struct CallbackHandle {
    cancelled: Arc<AtomicBool>,
}

impl CallbackHandle {
    /// Keep the callback from running; does nothing if it already ran.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// True once `cancel` was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

impl fmt::Debug for CallbackHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackHandle")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

struct Callback {
    f: Box<dyn FnOnce()>,
    ctx: Context,
    cancelled: Arc<AtomicBool>,
    scheduled_at: &'static Location<'static>,
}

/// A `call_later` callback, ordered so the heap's top is the earliest (then the first scheduled).
struct Timed {
    when: Instant,
    seq: u64,
    callback: Callback,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        (self.when, self.seq) == (other.when, other.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timed {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.when, other.seq).cmp(&(self.when, self.seq))
    }
}

/// A loop's queued callbacks.
#[derive(Default)]
pub(crate) struct Callbacks {
    ready: RefCell<VecDeque<Callback>>,
    timers: RefCell<BinaryHeap<Timed>>,
    timer: RefCell<Option<Sleep>>,
    seq: Cell<u64>,
}

impl Callbacks {
    fn make(f: Box<dyn FnOnce()>, at: &'static Location<'static>) -> (Callback, CallbackHandle) {
        let cancelled = Arc::new(AtomicBool::new(false));
        let handle = CallbackHandle {
            cancelled: cancelled.clone(),
        };
        (
            Callback {
                f,
                ctx: Context::current(),
                cancelled,
                scheduled_at: at,
            },
            handle,
        )
    }

    pub(crate) fn call_soon(
        &self,
        inbox: &Inbox,
        f: Box<dyn FnOnce()>,
        at: &'static Location<'static>,
    ) -> CallbackHandle {
        let (callback, handle) = Self::make(f, at);
        self.ready.borrow_mut().push_back(callback);
        inbox.wake_driver();
        handle
    }

    pub(crate) fn call_later(
        &self,
        inbox: &Inbox,
        delay: Duration,
        f: Box<dyn FnOnce()>,
        at: &'static Location<'static>,
    ) -> CallbackHandle {
        let (callback, handle) = Self::make(f, at);
        let when = Instant::now().checked_add(delay).unwrap_or_else(far_future);
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        self.timers.borrow_mut().push(Timed {
            when,
            seq,
            callback,
        });
        inbox.wake_driver();
        handle
    }

    pub(crate) fn clear(&self) {
        let ready = std::mem::take(&mut *self.ready.borrow_mut());
        let timers = std::mem::take(&mut *self.timers.borrow_mut());
        self.timer.borrow_mut().take();
        drop((ready, timers));
    }

    /// One round: move due timers to the ready queue, run what is ready, re-arm the timer.
    pub(crate) fn drive(&self, cx: &mut Cx<'_>) -> Poll<()> {
        self.move_due_timers();
        // Only what was ready when the round began (Python's rule), and at most a batch.
        let round = self.ready.borrow().len().min(CALLBACK_BATCH);
        for _ in 0..round {
            let Some(callback) = self.ready.borrow_mut().pop_front() else {
                break;
            };
            if callback.cancelled.load(Ordering::Acquire) {
                continue;
            }
            let Callback {
                f,
                mut ctx,
                scheduled_at,
                ..
            } = callback;
            run_callback(|| ctx.run(f), Some(scheduled_at));
        }
        if !self.ready.borrow().is_empty() {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let next = self.timers.borrow().peek().map(|t| t.when);
        let mut timer = self.timer.borrow_mut();
        match next {
            None => *timer = None,
            Some(when) => {
                let timer = timer.get_or_insert_with(|| Sleep::until(when));
                timer.reset(when);
                if Pin::new(timer).poll(cx).is_ready() {
                    cx.waker().wake_by_ref();
                }
            }
        }
        Poll::Pending
    }

    fn move_due_timers(&self) {
        let mut timers = self.timers.borrow_mut();
        if timers.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut ready = self.ready.borrow_mut();
        while timers.peek().is_some_and(|t| t.when <= now) {
            if let Some(timed) = timers.pop() {
                ready.push_back(timed.callback);
            }
        }
    }
}

/// Run one callback: catch its panic, time it in debug mode. `scheduled_at` is where a
/// `call_soon`/`call_later` was made; `None` for jobs posted from other threads.
pub(crate) fn run_callback(f: impl FnOnce(), scheduled_at: Option<&Location<'_>>) {
    let describe = || match scheduled_at {
        Some(at) => format!("<callback scheduled at {}>", source_location(at)),
        None => "<threadsafe callback>".to_owned(),
    };
    let threshold = scope::slow_poll_threshold();
    let started = threshold.map(|_| Instant::now());
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        let ctx = ExceptionContext::new(format!("panic in callback {}", describe()))
            .with_error(panic_message(&*payload));
        drop_quietly(payload);
        scope::report(None, ctx);
    }
    if let (Some(threshold), Some(started)) = (threshold, started) {
        let took = started.elapsed();
        if took >= threshold {
            scope::report_slow(&describe(), took, None, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed(when: Instant, seq: u64) -> Timed {
        Timed {
            when,
            seq,
            callback: Callbacks::make(Box::new(|| ()), Location::caller()).0,
        }
    }

    /// The heap's top is the earliest deadline; equal deadlines keep their scheduling order.
    #[test]
    fn timers_pop_earliest_first_then_in_scheduling_order() {
        let now = Instant::now();
        let later = now + Duration::from_millis(10);
        let mut heap = BinaryHeap::new();
        for (when, seq) in [(later, 0), (now, 1), (later, 2), (now, 3)] {
            heap.push(timed(when, seq));
        }
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|t| t.seq)).collect();
        assert_eq!(order, [1, 3, 0, 2]);
    }

    /// Only due timers move to the ready queue, in deadline order.
    #[test]
    fn only_due_timers_become_ready() {
        let callbacks = Callbacks::default();
        let now = Instant::now();
        {
            let mut timers = callbacks.timers.borrow_mut();
            timers.push(timed(now + Duration::from_secs(60), 0));
            timers.push(timed(now, 1));
            timers.push(timed(now - Duration::from_millis(5), 2));
        }
        callbacks.move_due_timers();
        let ready: Vec<&str> = callbacks
            .ready
            .borrow()
            .iter()
            .map(|c| c.scheduled_at.file())
            .collect();
        assert_eq!(ready.len(), 2);
        assert_eq!(callbacks.timers.borrow().len(), 1);
    }
}
