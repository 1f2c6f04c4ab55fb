//! The worker pool's scheduler: `Send` tasks (`spawn_send`) run by `n` worker threads, each
//! with a queue of its own that idle workers steal from, and a shared queue for tasks scheduled
//! from other threads (the loop's thread, mostly).
//!
//! A task is one async-task allocation, its header inside (as on the loop); the pool keeps no
//! record of it: the loop tracks its pool tasks to cancel them at close (`Inbox`), and hands
//! them to [`Pool::tear_down`] to drop what is left.
//!
//! Who wakes whom, the costs the design is about (docs/performance.md):
//! - A task woken on a worker goes to that worker's queue. While the worker is delivering I/O
//!   events or firing timers (`driver::park::delivering`), nobody else is woken: it runs what
//!   they woke once it is done, and only if it then has more than one task does it wake a
//!   sleeping worker to steal some. A task woken by a task the worker runs wakes a sleeping
//!   worker (unless one is searching); one that yields wakes nobody.
//! - Every 61 tasks a worker looks at the shared queue first, so that tasks that keep it busy
//!   cannot starve the ones scheduled from outside.
//! - A task scheduled from outside goes to the shared queue, and wakes a sleeping worker unless
//!   one is already searching (woken and not yet found work): that one will take it.
//! - An idle worker sleeps in `block_on`: the first to go idle waits on the loop's I/O driver,
//!   the others park (see `driver::park`).
//!
//! Why not async-executor's `Executor` (which this replaced): every schedule there wakes a
//! sleeping worker, so each I/O event delivered by one worker woke another (a futex call per
//! request in the HTTP benchmark), and each spawn records the task in a locked slab, beside the
//! record the loop keeps anyway.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as Cx, Poll, Waker};

use crate::driver::park;
use crate::header::{Header, Runnable, TaskRef};
use crate::lock::lock;
use crate::refused::drop_refused;

/// How many tasks a worker runs before it lets `block_on` look at I/O, timers and its local
/// (`!Send`) tasks: as the loop's executor.
const BUDGET: usize = 128;

/// How many tasks a worker takes from the shared queue at once, at most.
const BATCH: usize = 32;

/// A worker looks at the shared queue before its own every this many tasks, so that tasks
/// that keep their worker busy (yielding, waking each other) cannot starve tasks scheduled from
/// outside the pool (tokio's `global_queue_interval` is 61 too).
const SHARED_EVERY: u32 = 61;

/// See the module documentation.
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    /// Tasks scheduled from threads that are not this pool's workers.
    injected: Mutex<Injected>,
    /// How many tasks `injected` holds, read without its lock.
    injected_len: AtomicUsize,
    workers: Box<[Worker]>,
    /// Workers woken to look for work that have not found any yet: while one is, a task
    /// scheduled needs no other wake-up.
    searching: AtomicUsize,
    /// Workers asleep (`Worker::asleep`).
    sleeping: AtomicUsize,
    /// Where the next wake-up starts looking for a sleeper, so that wake-ups go round.
    next_to_wake: AtomicUsize,
}

#[derive(Default)]
struct Injected {
    queue: VecDeque<Runnable>,
    /// The pool is gone: a task scheduled from now on is dropped.
    torn_down: bool,
}

/// A worker's queue, and how to wake it.
struct Worker {
    queue: Mutex<VecDeque<Runnable>>,
    /// How many tasks `queue` holds, read without its lock (to skip empty queues).
    len: AtomicUsize,
    /// The worker is asleep: it found no work and waits to be woken (`sleeping` counts it).
    asleep: AtomicBool,
    /// Woken by `wake_one` to look for work: it counts in `searching` until it finds some.
    told_to_search: AtomicBool,
    /// How to wake the worker's thread.
    waker: WorkerWaker,
}

/// The waker a worker's run is polled with: `block_on`'s, the same for the thread's life, so
/// it is read without a lock. (Were a run ever polled with another, that one is kept under a
/// lock and used from then on.)
#[derive(Default)]
struct WorkerWaker {
    first: std::sync::OnceLock<Waker>,
    other: Mutex<Option<Waker>>,
    changed: AtomicBool,
}

impl WorkerWaker {
    fn polled_with(&self, waker: &Waker) {
        let first = self.first.get_or_init(|| waker.clone());
        if first.will_wake(waker) && !self.changed.load(Ordering::Acquire) {
            return;
        }
        let mut other = lock(&self.other);
        if !other.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *other = Some(waker.clone());
        }
        self.changed.store(true, Ordering::Release);
    }

    fn wake(&self) {
        if self.changed.load(Ordering::Acquire) {
            if let Some(waker) = &*lock(&self.other) {
                waker.wake_by_ref();
            }
        } else if let Some(waker) = self.first.get() {
            waker.wake_by_ref();
        }
    }
}

thread_local! {
    /// The pool this thread is a worker of, while its run lives (see [`running_local_work`]).
    static SHARED: std::cell::RefCell<Option<Arc<Shared>>> = const { std::cell::RefCell::new(None) };
    /// Tasks being stolen, between the victim's queue and the thief's (kept: no allocation
    /// under the victim's lock).
    static STOLEN: std::cell::RefCell<Vec<Runnable>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The pool this thread is a worker of (its address), which worker, and whether its run is
    /// asleep (not polled until woken).
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
}

#[derive(Clone, Copy)]
struct Current {
    pool: usize,
    index: usize,
    waiting: bool,
}

impl Pool {
    /// A pool for `n` workers (at least one).
    pub(crate) fn new(n: usize) -> Pool {
        let workers = (0..n.max(1))
            .map(|_| Worker {
                queue: Mutex::default(),
                len: AtomicUsize::new(0),
                asleep: AtomicBool::new(false),
                told_to_search: AtomicBool::new(false),
                waker: WorkerWaker::default(),
            })
            .collect();
        Pool {
            shared: Arc::new(Shared {
                injected: Mutex::default(),
                injected_len: AtomicUsize::new(0),
                workers,
                searching: AtomicUsize::new(0),
                sleeping: AtomicUsize::new(0),
                next_to_wake: AtomicUsize::new(0),
            }),
        }
    }

    /// Spawn the future `make` builds from the task's header (kept in the task's allocation);
    /// the runnable is returned unscheduled.
    pub(crate) fn spawn<F, Fut>(
        &self,
        header: Header,
        make: F,
    ) -> (Runnable, async_task::Task<Fut::Output, Header>)
    where
        F: FnOnce(&Header) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let shared = self.shared.clone();
        async_task::Builder::new().metadata(header).spawn(
            make,
            async_task::WithInfo(move |runnable, info: async_task::ScheduleInfo| {
                shared.schedule(runnable, info.woken_while_running)
            }),
        )
    }

    /// A future that runs the pool's tasks on this thread as worker `index` until `until`
    /// completes. Drive it with `driver::park::block_on`.
    pub(crate) fn run<F: Future>(&self, index: usize, until: F) -> Run<'_, F> {
        Run {
            shared: &self.shared,
            index: index.min(self.shared.workers.len() - 1),
            until,
            searching: false,
            ticks: 0,
            entered: None,
        }
    }

    /// The pool is gone: drop the tasks queued, and those of `live` (the pool's unfinished
    /// tasks) that wait elsewhere, by waking them into a pool that drops what it is given.
    pub(crate) fn tear_down(&self, live: Vec<TaskRef>) {
        let shared = &self.shared;
        let mut dropped: Vec<Runnable> = {
            let mut injected = shared.lock_injected();
            injected.torn_down = true;
            shared.injected_len.store(0, Ordering::Release);
            injected.queue.drain(..).collect()
        };
        for worker in shared.workers.iter() {
            dropped.extend(lock(&worker.queue).drain(..));
            worker.len.store(0, Ordering::Release);
        }
        for runnable in dropped {
            drop_refused(Box::new(runnable));
        }
        for task in live {
            task.waker().wake_by_ref();
        }
    }
}

impl Shared {
    fn lock_injected(&self) -> MutexGuard<'_, Injected> {
        lock(&self.injected)
    }

    fn id(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    /// Every task's schedule function (`yielded`: the task woke itself while it ran). See the
    /// module documentation.
    fn schedule(self: &Arc<Self>, runnable: Runnable, yielded: bool) {
        let me = CURRENT
            .try_with(Cell::get)
            .ok()
            .flatten()
            .filter(|c| c.pool == self.id());
        let Some(me) = me else {
            self.inject(runnable);
            return;
        };
        let worker = &self.workers[me.index];
        {
            let mut queue = lock(&worker.queue);
            queue.push_back(runnable);
            worker.len.store(queue.len(), Ordering::SeqCst);
        }
        let delivering = park::delivering();
        if me.waiting || delivering {
            // Its run is not being polled: have it polled again.
            worker.waker.wake();
        }
        if !delivering && !yielded {
            // Delivering events or timers, the worker runs what they wake once it is done; a
            // task that yields is the worker's to run again: nobody else need wake for those.
            self.wake_one();
        }
    }

    /// Queue a task scheduled from outside the pool, and wake a worker for it.
    fn inject(&self, runnable: Runnable) {
        {
            let mut injected = self.lock_injected();
            if injected.torn_down {
                drop(injected);
                drop_refused(Box::new(runnable));
                return;
            }
            injected.queue.push_back(runnable);
            self.injected_len
                .store(injected.queue.len(), Ordering::SeqCst);
        }
        self.wake_one();
    }

    /// Wake a sleeping worker to look for work, unless one is looking already.
    fn wake_one(&self) {
        fence(Ordering::SeqCst);
        if self.searching.load(Ordering::SeqCst) > 0 || self.sleeping.load(Ordering::SeqCst) == 0 {
            return;
        }
        let n = self.workers.len();
        let start = self.next_to_wake.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let worker = &self.workers[(start + k) % n];
            if worker.asleep.swap(false, Ordering::SeqCst) {
                self.sleeping.fetch_sub(1, Ordering::SeqCst);
                self.searching.fetch_add(1, Ordering::SeqCst);
                worker.told_to_search.store(true, Ordering::SeqCst);
                worker.waker.wake();
                return;
            }
        }
    }

    /// Some queue holds a task (a hint: read without locks).
    fn has_work(&self) -> bool {
        self.injected_len.load(Ordering::SeqCst) > 0
            || self
                .workers
                .iter()
                .any(|w| w.len.load(Ordering::SeqCst) > 0)
    }

    /// The next task for worker `index`: its own queue first, then the shared queue (a batch),
    /// then half of another worker's queue.
    fn next_task(&self, index: usize, shared_first: bool) -> Option<Runnable> {
        let me = &self.workers[index];
        if shared_first && self.injected_len.load(Ordering::Acquire) > 0 {
            let mut injected = self.lock_injected();
            if let Some(runnable) = injected.queue.pop_front() {
                self.injected_len
                    .store(injected.queue.len(), Ordering::Release);
                return Some(runnable);
            }
        }
        if me.len.load(Ordering::Acquire) > 0 {
            let mut queue = lock(&me.queue);
            if let Some(runnable) = queue.pop_front() {
                me.len.store(queue.len(), Ordering::Release);
                return Some(runnable);
            }
        }
        if self.injected_len.load(Ordering::Acquire) > 0 {
            let mut injected = self.lock_injected();
            let len = injected.queue.len();
            let take = (len / self.workers.len()).clamp(1, BATCH).min(len);
            let mut batch = injected.queue.drain(..take);
            let first = batch.next();
            let mut queue = lock(&me.queue);
            queue.extend(batch);
            me.len.store(queue.len(), Ordering::Release);
            drop(queue);
            self.injected_len
                .store(injected.queue.len(), Ordering::Release);
            if first.is_some() {
                return first;
            }
        }
        let n = self.workers.len();
        for k in 1..n {
            let victim = &self.workers[(index + k) % n];
            if victim.len.load(Ordering::Acquire) == 0 {
                continue;
            }
            let first = STOLEN.with(|stolen| {
                let mut stolen = stolen.borrow_mut();
                {
                    // Only moves under the victim's lock: it runs its queue meanwhile.
                    let mut queue = lock(&victim.queue);
                    let take = queue.len().div_ceil(2);
                    stolen.extend(queue.drain(..take));
                    victim.len.store(queue.len(), Ordering::Release);
                }
                let mut stolen = stolen.drain(..);
                let first = stolen.next();
                if stolen.len() > 0 {
                    let mut queue = lock(&me.queue);
                    queue.extend(stolen);
                    me.len.store(queue.len(), Ordering::Release);
                }
                first
            });
            if first.is_some() {
                return first;
            }
        }
        None
    }
}

pin_project_lite::pin_project! {
    /// See [`Pool::run`].
    pub(crate) struct Run<'a, F> {
        shared: &'a Arc<Shared>,
        index: usize,
        #[pin]
        until: F,
        // This worker counts in `Shared::searching`.
        searching: bool,
        // Tasks run (for `SHARED_EVERY`).
        ticks: u32,
        // This thread is the worker: what was there before (put back on drop).
        entered: Option<Option<Current>>,
    }

    impl<F> PinnedDrop for Run<'_, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let shared = *this.shared;
            let me = &shared.workers[*this.index];
            let told = me.told_to_search.swap(false, Ordering::SeqCst);
            if std::mem::take(this.searching) || told {
                shared.searching.fetch_sub(1, Ordering::SeqCst);
            }
            if me.asleep.swap(false, Ordering::SeqCst) {
                shared.sleeping.fetch_sub(1, Ordering::SeqCst);
            }
            if let Some(prev) = this.entered.take() {
                let _ = CURRENT.try_with(|c| c.set(prev));
                let _ = SHARED.try_with(|s| s.borrow_mut().take());
            }
        }
    }
}

impl<F: Future> Future for Run<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<F::Output> {
        let this = self.project();
        let shared = *this.shared;
        let index = *this.index;
        let me = &shared.workers[index];
        let current = Current {
            pool: shared.id(),
            index,
            waiting: false,
        };
        if this.entered.is_none() {
            *this.entered = Some(CURRENT.with(|c| c.replace(Some(current))));
            SHARED.with(|s| *s.borrow_mut() = Some(shared.clone()));
        }
        me.waker.polled_with(cx.waker());
        CURRENT.with(|c| c.set(Some(current)));
        // Awake: no longer a sleeper, whoever woke it.
        if me.asleep.swap(false, Ordering::SeqCst) {
            shared.sleeping.fetch_sub(1, Ordering::SeqCst);
        }
        if me.told_to_search.swap(false, Ordering::SeqCst) {
            *this.searching = true;
        } else if me.len.load(Ordering::Acquire) > 1 {
            // Back from a wait with tasks of its own to run: others may take some.
            shared.wake_one();
        }
        if let Poll::Ready(output) = this.until.poll(cx) {
            stop_searching(shared, this.searching);
            return Poll::Ready(output);
        }
        for _ in 0..BUDGET {
            *this.ticks = this.ticks.wrapping_add(1);
            match shared.next_task(index, *this.ticks % SHARED_EVERY == 0) {
                Some(runnable) => {
                    if *this.searching {
                        // Found work: if it was the last searcher, another worker may look
                        // for the rest.
                        *this.searching = false;
                        if shared.searching.fetch_sub(1, Ordering::SeqCst) == 1 {
                            shared.wake_one();
                        }
                    }
                    runnable.run();
                }
                None => {
                    stop_searching(shared, this.searching);
                    me.asleep.store(true, Ordering::SeqCst);
                    shared.sleeping.fetch_add(1, Ordering::SeqCst);
                    fence(Ordering::SeqCst);
                    if shared.has_work() {
                        // Scheduled meanwhile: look again before sleeping.
                        if me.asleep.swap(false, Ordering::SeqCst) {
                            shared.sleeping.fetch_sub(1, Ordering::SeqCst);
                        }
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    CURRENT.with(|c| {
                        c.set(Some(Current {
                            waiting: true,
                            ..current
                        }))
                    });
                    return Poll::Pending;
                }
            }
        }
        // Out of budget: let block_on look at I/O and timers, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// This thread's worker is about to poll work of its own (a task pinned to it, a cleanup, a
/// mailbox job: `worker_local`) while its run sleeps: it is not idle meanwhile. Counted asleep,
/// or woken to look for work, it is not any more (another worker is woken in its place), and its
/// run is polled again once that work has yielded.
pub(crate) fn running_local_work() {
    let Some(current) = CURRENT.try_with(Cell::get).ok().flatten() else {
        return;
    };
    if !current.waiting {
        return;
    }
    CURRENT.with(|c| {
        c.set(Some(Current {
            waiting: false,
            ..current
        }))
    });
    let _ = SHARED.try_with(|s| {
        let Some(shared) = &*s.borrow() else {
            return;
        };
        let me = &shared.workers[current.index];
        if me.asleep.swap(false, Ordering::SeqCst) {
            shared.sleeping.fetch_sub(1, Ordering::SeqCst);
        }
        if me.told_to_search.swap(false, Ordering::SeqCst) {
            shared.searching.fetch_sub(1, Ordering::SeqCst);
            shared.wake_one();
        }
        me.waker.wake();
    });
}

fn stop_searching(shared: &Shared, searching: &mut bool) {
    if std::mem::take(searching) {
        shared.searching.fetch_sub(1, Ordering::SeqCst);
    }
}
