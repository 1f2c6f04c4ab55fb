//! A loop's timers: `sleep`, `timeout` and `call_later` deadlines, folded into the timeout of
//! the loop's wait for I/O, so that no timer thread and no timerfd is involved.
//!
//! A binary heap of deadlines over a slab of entries. An entry removed before it fires (a
//! `timeout` whose future finished first: the common case) leaves its heap item behind,
//! recognised by its generation; the heap is rebuilt without them when they outnumber the live
//! ones, so it stays at most twice the live entries. Insert and fire are O(log n), remove O(1).
//! The earliest deadline is kept apart, readable without the lock, so that a loop with no timer
//! due pays one load per iteration.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::lock::lock;

/// Where a timer is: its slab slot and the generation of the slot when it was inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey {
    slot: usize,
    generation: u64,
}

struct Entry {
    generation: u64,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Heap {
    /// Deadline, slot, generation: the earliest on top.
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    slots: Vec<Entry>,
    free: Vec<usize>,
    live: usize,
    next_generation: u64,
}

/// See the module documentation.
pub(crate) struct Timers {
    heap: Mutex<Heap>,
    /// The earliest deadline, in nanoseconds after `epoch()`; `u64::MAX` when there is none.
    next: AtomicU64,
}

/// The instant deadlines are counted from, as nanoseconds.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos(at: Instant) -> u64 {
    at.saturating_duration_since(epoch())
        .as_nanos()
        .min(u64::MAX as u128 - 1) as u64
}

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers {
            heap: Mutex::default(),
            next: AtomicU64::new(u64::MAX),
        }
    }

    /// Wake `waker` at `deadline`.
    pub(crate) fn insert(&self, deadline: Instant, waker: &Waker) -> TimerKey {
        let mut heap = lock(&self.heap);
        heap.next_generation += 1;
        let generation = heap.next_generation;
        let entry = Entry {
            generation,
            waker: Some(waker.clone()),
        };
        let slot = match heap.free.pop() {
            Some(slot) => {
                heap.slots[slot] = entry;
                slot
            }
            None => {
                heap.slots.push(entry);
                heap.slots.len() - 1
            }
        };
        heap.live += 1;
        heap.heap.push(Reverse((deadline, slot, generation)));
        let at = nanos(deadline);
        if at < self.next.load(Ordering::Relaxed) {
            self.next.store(at, Ordering::Release);
        }
        TimerKey { slot, generation }
    }

    /// The timer at `key` wakes `waker` now, if it has not fired.
    pub(crate) fn update(&self, key: TimerKey, waker: &Waker) {
        let mut heap = lock(&self.heap);
        if let Some(entry) = heap.slots.get_mut(key.slot) {
            if entry.generation == key.generation {
                match &mut entry.waker {
                    Some(w) if w.will_wake(waker) => {}
                    slot => *slot = Some(waker.clone()),
                }
            }
        }
    }

    /// Forget the timer at `key` (fired or not).
    pub(crate) fn remove(&self, key: TimerKey) {
        let waker = {
            let mut heap = lock(&self.heap);
            let Some(entry) = heap.slots.get_mut(key.slot) else {
                return;
            };
            if entry.generation != key.generation {
                return;
            }
            // A new generation: the heap item left behind no longer matches.
            entry.generation = 0;
            let waker = entry.waker.take();
            heap.free.push(key.slot);
            heap.live -= 1;
            if heap.heap.len() > 2 * heap.live + 64 {
                let Heap {
                    heap: items, slots, ..
                } = &mut *heap;
                items.retain(|Reverse((_, slot, generation))| {
                    slots[*slot].generation == *generation
                });
            }
            waker
        };
        drop(waker);
    }

    /// The earliest deadline, if any, without taking the lock.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match self.next.load(Ordering::Acquire) {
            u64::MAX => None,
            at => Some(epoch() + Duration::from_nanos(at)),
        }
    }

    /// Wake the timers due at `now`; the earliest deadline left.
    pub(crate) fn fire(&self, now: Instant) -> Option<Instant> {
        let due = self.next.load(Ordering::Acquire);
        if due == u64::MAX {
            return None;
        }
        if due > nanos(now) {
            return self.next_deadline();
        }
        let mut wakers = Vec::new();
        let next = {
            let mut heap = lock(&self.heap);
            let next = loop {
                let Some(&Reverse((deadline, slot, generation))) = heap.heap.peek() else {
                    break None;
                };
                if heap.slots[slot].generation != generation {
                    heap.heap.pop(); // removed before it fired
                    continue;
                }
                if deadline > now {
                    break Some(deadline);
                }
                heap.heap.pop();
                if let Some(waker) = heap.slots[slot].waker.take() {
                    wakers.push(waker);
                }
            };
            self.next
                .store(next.map_or(u64::MAX, nanos), Ordering::Release);
            next
        };
        // Outside the lock: a waker is someone else's code (and may set a timer).
        for waker in wakers {
            waker.wake();
        }
        next
    }

    /// True once the timer at `key` has fired (its waker taken) or was removed.
    #[cfg(test)]
    pub(crate) fn has_fired(&self, key: TimerKey) -> bool {
        let heap = lock(&self.heap);
        match heap.slots.get(key.slot) {
            Some(entry) => entry.generation != key.generation || entry.waker.is_none(),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn timers_fire_in_deadline_order_and_removed_ones_never() {
        let timers = Timers::new();
        let fired = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(fired.clone());
        let now = Instant::now();
        let keys: Vec<TimerKey> = (1..=10)
            .map(|i| timers.insert(now + Duration::from_millis(i), &waker))
            .collect();
        timers.remove(keys[0]);
        timers.remove(keys[9]);
        assert_eq!(timers.next_deadline(), Some(now + Duration::from_millis(1)));
        let next = timers.fire(now + Duration::from_millis(5));
        assert_eq!(fired.0.load(Ordering::SeqCst), 4, "2, 3, 4 and 5 ms fired");
        assert_eq!(next, Some(now + Duration::from_millis(6)));
        assert!(timers.has_fired(keys[2]) && !timers.has_fired(keys[6]));
        let next = timers.fire(now + Duration::from_secs(1));
        assert_eq!(fired.0.load(Ordering::SeqCst), 8);
        assert_eq!(next, None);
        assert_eq!(timers.next_deadline(), None);
    }

    /// Timers removed before they fire (timeouts whose futures finished first) do not pile up:
    /// the heap stays within twice the live entries.
    #[test]
    fn removed_timers_do_not_pile_up() {
        let timers = Timers::new();
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let far = Instant::now() + Duration::from_secs(3600);
        let keep = timers.insert(far, &waker);
        for _ in 0..100_000 {
            let key = timers.insert(far, &waker);
            timers.remove(key);
        }
        let heap = lock(&timers.heap);
        assert!(
            heap.heap.len() <= 2 * heap.live + 65,
            "{} items",
            heap.heap.len()
        );
        assert!(heap.slots.len() <= 2, "slots are reused");
        drop(heap);
        assert!(!timers.has_fired(keep));
    }
}
