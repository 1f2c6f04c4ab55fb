//! A loop's I/O driver: its poller and the sources registered with it. Any thread of the loop
//! (the loop's own, a worker) may be the one waiting for events; the others park until woken.
//!
//! Workers come first: a worker that goes idle while the loop's thread waits for events has it
//! hand the wait over (a notification ends its wait), and the loop's thread parks instead while
//! a worker waits. The events of a server's connections, on the pool, then wake their tasks on
//! the worker that runs them, not on the loop's thread, which would have to wake a worker for
//! each (a futex call per request in the HTTP benchmark).

use std::io;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use crate::driver::poller::{EventBuffer, IoSource, Poller, Ready};
use crate::driver::source::Source;
use crate::lock::lock;

/// Registered sources, by slab slot; a key is the slot and the slot's generation, so that an
/// event for a source deregistered meanwhile cannot reach the one that took its slot.
#[derive(Default)]
struct Slab {
    slots: Vec<(u32, Option<Arc<Source>>)>,
    free: Vec<usize>,
}

const SLOT_BITS: u32 = 32;

fn key(slot: usize, generation: u32) -> usize {
    (generation as usize) << SLOT_BITS | slot
}

fn slot_of(key: usize) -> (usize, u32) {
    (key & ((1 << SLOT_BITS) - 1), (key >> SLOT_BITS) as u32)
}

/// What the thread waiting for events keeps between waits.
struct Waiting {
    buffer: EventBuffer,
    ready: Vec<Ready>,
    sources: Vec<(Arc<Source>, Ready)>,
}

/// See the module documentation.
pub(crate) struct Driver {
    poller: Poller,
    sources: Mutex<Slab>,
    /// Held by the thread waiting for events: the one lock decides who waits.
    waiting: Mutex<Waiting>,
    /// Workers waiting for events, or about to.
    workers_waiting: AtomicUsize,
    /// The loop's thread holds `waiting`, or is about to take it.
    loop_waits: AtomicBool,
    /// A worker queues for `waiting` to take the wait over from the loop's thread.
    taking_over: AtomicUsize,
}

/// What a thread waiting for events tells its parker.
pub(crate) trait WaitHooks {
    /// The thread was woken while it was about to wait.
    fn woken(&self) -> bool;
    /// The wait is over: a wake-up need not notify the thread from now on.
    fn awake(&self);
}

/// A look at the events that does not wait (nothing to tell).
pub(crate) struct JustLook;

impl WaitHooks for JustLook {
    fn woken(&self) -> bool {
        false
    }

    fn awake(&self) {}
}

/// Which thread of a loop waits: see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waiter {
    Loop,
    Worker,
}

impl Driver {
    pub(crate) fn new() -> io::Result<Driver> {
        Ok(Driver {
            poller: Poller::new()?,
            sources: Mutex::default(),
            waiting: Mutex::new(Waiting {
                buffer: EventBuffer::new(),
                ready: Vec::new(),
                sources: Vec::new(),
            }),
            workers_waiting: AtomicUsize::new(0),
            loop_waits: AtomicBool::new(false),
            taking_over: AtomicUsize::new(0),
        })
    }

    /// Watch `io` (non-blocking already) from now until it is deregistered.
    ///
    /// # Safety
    /// `io` must stay open until [`deregister`](Self::deregister) is called with it.
    #[allow(unsafe_code)]
    pub(crate) unsafe fn register<S: IoSource>(&self, io: &S) -> io::Result<Arc<Source>> {
        let source = {
            let mut slab = lock(&self.sources);
            let slot = match slab.free.pop() {
                Some(slot) => slot,
                None => {
                    slab.slots.push((0, None));
                    slab.slots.len() - 1
                }
            };
            let entry = &mut slab.slots[slot];
            entry.0 = entry.0.wrapping_add(1);
            let source = Arc::new(Source::new(key(slot, entry.0)));
            entry.1 = Some(source.clone());
            source
        };
        // SAFETY: the caller keeps `io` open until it is deregistered.
        if let Err(err) = unsafe { self.poller.add(io, source.key) } {
            self.forget(&source);
            return Err(err);
        }
        Ok(source)
    }

    /// Stop watching `io`, registered as `source` (before its descriptor is closed).
    pub(crate) fn deregister<S: IoSource>(&self, source: &Source, io: &S) {
        let _ = self.poller.delete(io);
        self.forget(source);
    }

    fn forget(&self, source: &Source) {
        let (slot, generation) = slot_of(source.key);
        let removed = {
            let mut slab = lock(&self.sources);
            match slab.slots.get_mut(slot) {
                Some(entry) if entry.0 == generation => {
                    let removed = entry.1.take();
                    slab.free.push(slot);
                    removed
                }
                _ => None,
            }
        };
        drop(removed);
    }

    /// One-shot platforms: ask again for the directions `source` (registered for `io`) wants,
    /// when a task is about to wait for one (edge-triggered platforms: nothing to do).
    pub(crate) fn rearm<S: IoSource>(&self, source: &Source, io: &S) {
        let (read, write) = source.wanted();
        self.poller.rearm(io, source.key, read, write);
    }

    /// Wake the thread waiting for events (or the next one to wait).
    pub(crate) fn notify(&self) {
        self.poller.notify();
    }

    /// If no other thread waits for events now (and `who` is the loop's thread: no worker
    /// wants to), wait for them, at most `timeout` (zero: just look), tell `hooks` the thread
    /// is awake (a wake-up need not notify it), and deliver the events to their sources'
    /// tasks; true then. False at once otherwise: the caller parks instead.
    pub(crate) fn turn(
        &self,
        timeout: Option<Duration>,
        who: Waiter,
        hooks: impl WaitHooks,
    ) -> bool {
        match who {
            Waiter::Loop => {
                self.loop_waits.store(true, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                let waiting = match self.workers_waiting.load(Ordering::SeqCst) {
                    0 => self.try_wait(),
                    _ => None,
                };
                let turned = waiting.map(|w| self.wait(w, timeout, &hooks)).is_some();
                self.loop_waits.store(false, Ordering::SeqCst);
                turned
            }
            Waiter::Worker => {
                self.workers_waiting.fetch_add(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                let waiting = match self.try_wait() {
                    Some(waiting) => Some(waiting),
                    None if timeout != Some(Duration::ZERO)
                        && self.loop_waits.load(Ordering::SeqCst)
                        && self.taking_over.load(Ordering::SeqCst) == 0 =>
                    {
                        // Take the wait over from the loop's thread: end its wait and queue for
                        // the lock.
                        self.taking_over.fetch_add(1, Ordering::SeqCst);
                        self.notify();
                        let waiting = lock(&self.waiting);
                        self.taking_over.fetch_sub(1, Ordering::SeqCst);
                        Some(waiting)
                    }
                    None => None,
                };
                let turned = waiting.map(|w| self.wait(w, timeout, &hooks)).is_some();
                self.workers_waiting.fetch_sub(1, Ordering::SeqCst);
                turned
            }
        }
    }

    /// The lock, unless it is taken, or promised to a worker taking the wait over (which
    /// would otherwise lose it again and again to a thread whose wait has just ended).
    fn try_wait(&self) -> Option<MutexGuard<'_, Waiting>> {
        if self.taking_over.load(Ordering::SeqCst) > 0 {
            return None;
        }
        match self.waiting.try_lock() {
            Ok(waiting) => Some(waiting),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Wait and deliver (see [`turn`](Self::turn)), holding `waiting` throughout.
    fn wait(
        &self,
        mut waiting: MutexGuard<'_, Waiting>,
        timeout: Option<Duration>,
        hooks: &impl WaitHooks,
    ) {
        let Waiting {
            buffer,
            ready,
            sources,
        } = &mut *waiting;
        ready.clear();
        // A wake-up that came while this thread queued for the wait (taking it over from the
        // loop's thread) notified the thread waiting then, not this one: look without waiting.
        let timeout = match hooks.woken() {
            true => Some(Duration::ZERO),
            false => timeout,
        };
        let waited = self.poller.wait(buffer, timeout, ready);
        hooks.awake();
        if waited.is_err() {
            // Not a condition a retry mends (the poller's descriptor is broken): the waits
            // become short sleeps, and timers still fire.
            let nap = Duration::from_millis(10);
            std::thread::sleep(timeout.map_or(nap, |t| t.min(nap)));
            return;
        }
        if ready.is_empty() {
            return;
        }
        {
            let slab = lock(&self.sources);
            for event in ready.iter() {
                let (slot, generation) = slot_of(event.key);
                if let Some((g, Some(source))) = slab.slots.get(slot) {
                    if *g == generation {
                        sources.push((source.clone(), *event));
                    }
                }
            }
        }
        // Delivered outside the sources' lock: waking a task is someone else's code.
        for (source, event) in sources.drain(..) {
            source.set_ready(event);
        }
    }

    /// The loop is closing: every source's operations fail from now on.
    pub(crate) fn shutdown(&self) {
        let sources: Vec<Arc<Source>> = {
            let slab = lock(&self.sources);
            slab.slots.iter().filter_map(|(_, s)| s.clone()).collect()
        };
        for source in sources {
            source.shutdown();
        }
    }
}
