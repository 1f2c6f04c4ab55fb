//! One registered I/O source (a socket): what readiness the driver has seen for it, and the
//! tasks waiting for more. Modelled on tokio's `ScheduledIo`: readiness is kept per direction
//! with a tick, the count of events the driver has delivered, so that an operation that found a
//! direction not ready after all (`WouldBlock`) clears it only if no event came in meanwhile: a
//! stale event cannot clear a fresh one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context as Cx, Poll, Waker};

use crate::driver::poller::Ready;
use crate::lock::lock;

/// A direction of I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

/// Readiness bits, in the low half of the state word.
const READABLE: usize = 1;
const WRITABLE: usize = 2;
/// The source hung up or failed: reads and writes no longer block (they say what happened).
const CLOSED: usize = 4;
/// The driver is gone (its runner closed): every operation fails at once.
const SHUTDOWN: usize = 8;
/// The peer shut down its side: reads no longer block (they give the end of the stream). Never
/// cleared, so that a read shorter than its buffer, which clears `READABLE`, cannot hide an end
/// of stream that arrived with the data.
const READ_CLOSED: usize = 16;
/// Urgent data came once: from then on a short read does not mean the socket is drained (a
/// read stops at the urgent mark with data queued behind it). Never cleared.
const URGENT: usize = 32;
/// The tick: the high bits.
const TICK_SHIFT: u32 = 16;

impl Direction {
    fn bit(self) -> usize {
        match self {
            Direction::Read => READABLE,
            Direction::Write => WRITABLE,
        }
    }
}

/// What [`Source::poll_ready`] found: the tick it was seen at, for [`Source::clear`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadyEvent {
    tick: usize,
    direction: Direction,
    /// The driver is gone: the operation must fail, not wait.
    pub(crate) is_shutdown: bool,
}

/// See the module documentation.
pub(crate) struct Source {
    pub(crate) key: usize,
    /// | tick | SHUTDOWN | CLOSED | WRITABLE | READABLE |
    state: AtomicUsize,
    /// The tasks waiting for each direction, and the next key for a waiting future.
    waiters: Mutex<WaitLists>,
}

#[derive(Default)]
struct WaitLists {
    lists: [Waiters; 2],
    next_key: u64,
}

/// How a task waits for a direction (see [`Waiters`]).
pub(crate) enum Wait<'a> {
    /// Through a `poll_*` method (`AsyncRead`, `poll_accept`): the direction's one slot, which
    /// the latest poll takes, as `futures-io` asks.
    Slot,
    /// Through a future (`accept`, `recv_from`, `readable`), any number at once: its entry,
    /// under the key kept here, which the future removes when it is dropped
    /// ([`Source::forget`]).
    Keyed(&'a mut Option<u64>),
}

/// The tasks waiting for one direction: the slot of the `poll_*` methods, kept inline so that
/// waiting and being woken allocate nothing, and the futures waiting, each under its key. A
/// future dropped before its event (a `timeout` around `recv_from`) removes its entry: a socket
/// that outlives many such futures keeps none of their wakers, nor the tasks they hold.
#[derive(Default)]
struct Waiters {
    slot: Option<Waker>,
    keyed: Vec<(u64, Waker)>,
}

impl Waiters {
    fn add(&mut self, wait: Wait<'_>, waker: &Waker, next_key: &mut u64) {
        let key = match wait {
            Wait::Slot => {
                if !self.slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    self.slot = Some(waker.clone());
                }
                return;
            }
            Wait::Keyed(key) => key,
        };
        if let Some(k) = *key {
            if let Some((_, w)) = self.keyed.iter_mut().find(|(kk, _)| *kk == k) {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                return;
            }
        }
        *next_key += 1;
        self.keyed.push((*next_key, waker.clone()));
        *key = Some(*next_key);
    }

    fn remove(&mut self, key: u64) -> Option<Waker> {
        let i = self.keyed.iter().position(|(k, _)| *k == key)?;
        Some(self.keyed.swap_remove(i).1)
    }

    /// Take every waiter, to be woken outside the lock.
    fn take(&mut self) -> Waiters {
        Waiters {
            slot: self.slot.take(),
            keyed: match self.keyed.is_empty() {
                true => Vec::new(),
                false => std::mem::take(&mut self.keyed),
            },
        }
    }

    fn wake(self) {
        let keyed = self.keyed.into_iter().map(|(_, w)| w);
        self.slot.into_iter().chain(keyed).for_each(Waker::wake);
    }
}

impl Source {
    pub(crate) fn new(key: usize) -> Source {
        Source {
            key,
            state: AtomicUsize::new(0),
            waiters: Mutex::default(),
        }
    }

    /// The driver saw `ready` for this source: note it (a new tick) and wake who waits.
    pub(crate) fn set_ready(&self, ready: Ready) {
        let mut bits = 0;
        if ready.readable {
            bits |= READABLE;
        }
        if ready.writable {
            bits |= WRITABLE;
        }
        if ready.closed {
            bits |= CLOSED | READABLE | WRITABLE;
        }
        if ready.read_closed {
            bits |= READ_CLOSED | READABLE;
        }
        if ready.urgent {
            bits |= URGENT | READABLE;
        }
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                let tick = (state >> TICK_SHIFT).wrapping_add(1);
                Some((tick << TICK_SHIFT) | (state & 0xffff) | bits)
            });
        let readable = ready.readable || ready.read_closed || ready.closed;
        self.wake(readable, ready.writable || ready.closed);
    }

    /// The driver is gone: every operation, waiting or to come, fails.
    pub(crate) fn shutdown(&self) {
        self.state.fetch_or(SHUTDOWN, Ordering::AcqRel);
        self.wake(true, true);
    }

    fn wake(&self, read: bool, write: bool) {
        let (readers, writers) = {
            let mut waiters = lock(&self.waiters);
            let readers = match read {
                true => waiters.lists[0].take(),
                false => Waiters::default(),
            };
            let writers = match write {
                true => waiters.lists[1].take(),
                false => Waiters::default(),
            };
            (readers, writers)
        };
        // Outside the lock: a waker is someone else's code.
        readers.wake();
        writers.wake();
    }

    fn event(&self, state: usize, direction: Direction) -> Option<ReadyEvent> {
        let is_shutdown = state & SHUTDOWN != 0;
        let lasting = match direction {
            Direction::Read => CLOSED | READ_CLOSED,
            Direction::Write => CLOSED,
        };
        let ready = state & (direction.bit() | lasting) != 0;
        (ready || is_shutdown).then_some(ReadyEvent {
            tick: state >> TICK_SHIFT,
            direction,
            is_shutdown,
        })
    }

    /// Ready if the driver has seen `direction` ready (and nobody has found otherwise since);
    /// else `cx` is woken by the next such event.
    pub(crate) fn poll_ready(
        &self,
        direction: Direction,
        wait: Wait<'_>,
        cx: &mut Cx<'_>,
    ) -> Poll<ReadyEvent> {
        let state = self.state.load(Ordering::Acquire);
        if let Some(event) = self.event(state, direction) {
            return Poll::Ready(event);
        }
        {
            let mut waiters = lock(&self.waiters);
            let WaitLists { lists, next_key } = &mut *waiters;
            lists[direction as usize].add(wait, cx.waker(), next_key);
        }
        // An event that came while the waker was stored: it may have found no waker.
        match self.event(self.state.load(Ordering::Acquire), direction) {
            Some(event) => Poll::Ready(event),
            None => Poll::Pending,
        }
    }

    /// The future waiting for `direction` under `key` is gone.
    pub(crate) fn forget(&self, direction: Direction, key: u64) {
        let removed = lock(&self.waiters).lists[direction as usize].remove(key);
        // Dropped outside the lock: the last waker of a task drops the task.
        drop(removed);
    }

    /// A read came back shorter than asked (on a stream, where that means the socket is
    /// drained): clear as [`clear`](Self::clear) does, unless urgent data ever came.
    pub(crate) fn clear_drained(&self, event: ReadyEvent) {
        if self.state.load(Ordering::Acquire) & URGENT == 0 {
            self.clear(event);
        }
    }

    /// An operation found `event`'s direction not ready after all (`WouldBlock`, or a read
    /// shorter than asked on a stream): forget it, unless a new event came since.
    pub(crate) fn clear(&self, event: ReadyEvent) {
        let bit = event.direction.bit();
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state >> TICK_SHIFT == event.tick && state & CLOSED == 0).then_some(state & !bit)
            });
    }

    /// The directions someone waits for and the driver has not seen ready: what a one-shot
    /// registration is re-armed with.
    pub(crate) fn wanted(&self) -> (bool, bool) {
        let state = self.state.load(Ordering::Acquire);
        (state & READABLE == 0, state & WRITABLE == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn ready(readable: bool, writable: bool) -> Ready {
        Ready {
            key: 0,
            readable,
            writable,
            ..Ready::default()
        }
    }

    /// A clear made with a stale tick (an event came after the operation looked) changes
    /// nothing; with the current tick it forgets the direction.
    #[test]
    fn a_stale_clear_does_not_hide_a_fresh_event() {
        let source = Source::new(0);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Cx::from_waker(&waker);
        assert!(source
            .poll_ready(Direction::Read, Wait::Slot, &mut cx)
            .is_pending());
        source.set_ready(ready(true, false));
        assert!(
            flag.0.load(Ordering::SeqCst),
            "the waiting reader was woken"
        );
        let Poll::Ready(seen) = source.poll_ready(Direction::Read, Wait::Slot, &mut cx) else {
            panic!("readable")
        };
        source.set_ready(ready(true, false)); // a fresh event while the read ran
        source.clear(seen);
        assert!(
            source
                .poll_ready(Direction::Read, Wait::Slot, &mut cx)
                .is_ready(),
            "not cleared"
        );
        let Poll::Ready(now) = source.poll_ready(Direction::Read, Wait::Slot, &mut cx) else {
            panic!("readable")
        };
        source.clear(now);
        assert!(
            source
                .poll_ready(Direction::Read, Wait::Slot, &mut cx)
                .is_pending(),
            "cleared"
        );
        assert!(source
            .poll_ready(Direction::Write, Wait::Slot, &mut cx)
            .is_pending());
    }

    /// A hang-up makes both directions ready for good; shutdown fails every operation.
    #[test]
    fn closed_and_shutdown_stay_ready() {
        let source = Source::new(0);
        let waker = Waker::from(Arc::new(Flag(AtomicBool::new(false))));
        let mut cx = Cx::from_waker(&waker);
        source.set_ready(Ready {
            closed: true,
            ..Ready::default()
        });
        let Poll::Ready(seen) = source.poll_ready(Direction::Read, Wait::Slot, &mut cx) else {
            panic!("closed is ready")
        };
        source.clear(seen);
        assert!(source
            .poll_ready(Direction::Read, Wait::Slot, &mut cx)
            .is_ready());
        let other = Source::new(1);
        assert!(other
            .poll_ready(Direction::Write, Wait::Slot, &mut cx)
            .is_pending());
        other.shutdown();
        let Poll::Ready(event) = other.poll_ready(Direction::Write, Wait::Slot, &mut cx) else {
            panic!("shutdown is ready")
        };
        assert!(event.is_shutdown);
    }

    /// A future that waited and is dropped before its event takes its waker with it (the
    /// waker, and the task it keeps, were left in the list: 30,000 `timeout`s around a
    /// `recv_from` on a quiet socket held 20 MB); the `poll_*` slot keeps one waker, the last.
    #[test]
    fn a_waiter_given_up_leaves_no_waker_behind() {
        let source = Source::new(0);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Cx::from_waker(&waker);
        let held = Arc::strong_count(&flag);
        for _ in 0..1000 {
            let mut key = None;
            assert!(source
                .poll_ready(Direction::Read, Wait::Keyed(&mut key), &mut cx)
                .is_pending());
            assert!(source
                .poll_ready(Direction::Read, Wait::Keyed(&mut key), &mut cx)
                .is_pending());
            source.forget(Direction::Read, key.expect("a key was given"));
        }
        assert_eq!(Arc::strong_count(&flag), held);
        for _ in 0..1000 {
            assert!(source
                .poll_ready(Direction::Read, Wait::Slot, &mut cx)
                .is_pending());
        }
        assert_eq!(Arc::strong_count(&flag), held + 1);
    }
}
