//! The default executor: a pool of threads for blocking work (`to_thread`, `run_in_executor`),
//! owned by one loop so that closing the loop can join it with a timeout.
//!
//! ```
//! runner_core::run(async {
//!     let sum = runner_core::to_thread(|| (1..=10).sum::<u32>()).await.unwrap();
//!     assert_eq!(sum, 55);
//! })
//! .unwrap();
//! ```
//!
//! A job is an async-task `Runnable` whose future runs the closure in one poll, so the pool only
//! moves runnables to threads. Threads start on demand up to the limit and live until shutdown;
//! they are never joined by a destructor, so threads still busy after the timeout cannot keep the
//! process alive once `main` returns.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::Location;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use event_listener::Event;
use futures_lite::FutureExt;

use crate::header::{Header, Runnable};
use crate::lock::lock;
use crate::post::{Post, ReportTo};
use crate::refused::drop_refused;
use crate::time::Sleep;

/// A `Send` handle to a loop's pool. Once the pool is shut down, jobs are cancelled at once.
#[derive(Clone)]
pub(crate) struct BlockingHandle(Arc<Pool>);

impl BlockingHandle {
    /// Queue the job `make` builds from its task's header, called from `at`, on the pool; its
    /// runnable (unscheduled) and task handle.
    pub(crate) fn spawn<F, Fut>(
        &self,
        header: Header,
        make: F,
        at: &'static Location<'static>,
    ) -> (Runnable, async_task::Task<Fut::Output, Header>)
    where
        F: FnOnce(&Header) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let pool = self.0.clone();
        let busy = pool.clone();
        let job = move |header: &Header| {
            let job = make(header);
            async move {
                let _busy = busy.busy(at);
                job.await
            }
        };
        async_task::Builder::new()
            .metadata(header)
            .spawn(job, move |r| pool.submit(r))
    }
}

/// The loop's side: the pool, created on first use.
pub(crate) struct DefaultExecutor {
    /// The loop, where the pool's threads send the reports made on them.
    owner: Arc<dyn Post>,
    /// `None`: the default, `min(cores + 4, 32)`, worked out when the pool starts (reading the
    /// cores costs a cold process about 30 µs of cgroup file reads, which a loop that never
    /// uses the pool should not pay).
    max_threads: Option<usize>,
    pool: RefCell<Option<Arc<Pool>>>,
    shutdown_called: Cell<bool>,
}

impl DefaultExecutor {
    pub(crate) fn new(max_threads: Option<usize>, owner: Arc<dyn Post>) -> Self {
        DefaultExecutor {
            owner,
            max_threads,
            pool: RefCell::new(None),
            shutdown_called: Cell::new(false),
        }
    }

    /// The way onto the pool (starting it) for a new job.
    ///
    /// # Panics
    /// Once `shutdown` was called ("executor shutdown has been called").
    pub(crate) fn open_handle(&self) -> BlockingHandle {
        if self.shutdown_called.get() {
            panic!(
                "executor shutdown has been called: to_thread/run_in_executor cannot be used \
                 once the loop's default executor is shut down (the runner is closing)"
            );
        }
        self.handle()
    }

    /// The `Send` way onto the pool (starting it), for worker threads' `to_thread`: after
    /// shutdown its jobs are cancelled at once.
    pub(crate) fn handle(&self) -> BlockingHandle {
        let pool = self
            .pool
            .borrow_mut()
            .get_or_insert_with(|| {
                let max_threads = self.max_threads.unwrap_or_else(|| (cores() + 4).min(32));
                Arc::new(Pool::new(max_threads, self.owner.clone()))
            })
            .clone();
        BlockingHandle(pool)
    }

    /// The jobs running now: where each was started from, and for how long it has run.
    pub(crate) fn running_jobs(&self) -> Vec<(&'static Location<'static>, Duration)> {
        let Some(pool) = self.pool.borrow().clone() else {
            return Vec::new();
        };
        let now = Instant::now();
        let running = pool.lock().running.clone();
        running
            .into_iter()
            .map(|(_, at, since)| (at, now.saturating_duration_since(since)))
            .collect()
    }

    /// True if the pool was never started: shutting it down has nothing to wait for.
    pub(crate) fn is_idle(&self) -> bool {
        self.pool.borrow().is_none()
    }

    /// Stop taking jobs and wait until every thread has exited; false if `timeout` ran out.
    pub(crate) async fn shutdown(&self, timeout: Option<Duration>) -> bool {
        self.shutdown_called.set(true);
        // Kept in place while joining, so that close can say which jobs it waits for.
        let Some(pool) = self.pool.borrow().clone() else {
            return true;
        };
        let _joining = JoinGuard(&self.pool);
        pool.shutdown();
        let joined = async {
            pool.all_exited().await;
            true
        };
        match timeout {
            None => joined.await,
            Some(t) => {
                joined
                    .or(async {
                        Sleep::new(t).await;
                        false
                    })
                    .await
            }
        }
    }

    pub(crate) fn shutdown_nowait(&self) {
        self.shutdown_called.set(true);
        if let Some(pool) = self.pool.borrow_mut().take() {
            pool.shutdown();
        }
    }
}

/// Lets go of the pool when the join ends, however it ends.
struct JoinGuard<'a>(&'a RefCell<Option<Arc<Pool>>>);

impl Drop for JoinGuard<'_> {
    fn drop(&mut self) {
        self.0.borrow_mut().take();
    }
}

/// The machine's cores, read once: `available_parallelism` reads cgroup files on every call,
/// which made building a loop cost tens of microseconds.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

struct Pool {
    state: Mutex<PoolState>,
    work: Condvar,
    exited: Event,
    max_threads: usize,
    /// The loop: reports made on the pool's threads go there.
    owner: Arc<dyn Post>,
}

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Runnable>,
    threads: usize,
    idle: usize,
    shutdown: bool,
    /// The jobs running now, for close to say what it waits for: id, call site, start.
    running: Vec<(u64, &'static Location<'static>, Instant)>,
    next_job: u64,
}

/// Keeps a job in the pool's list of running jobs while it runs.
struct BusyGuard<'a> {
    pool: &'a Pool,
    id: u64,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        if let Some(i) = state.running.iter().position(|(id, ..)| *id == self.id) {
            state.running.swap_remove(i);
        }
    }
}

impl Pool {
    fn new(max_threads: usize, owner: Arc<dyn Post>) -> Self {
        Pool {
            state: Mutex::default(),
            work: Condvar::new(),
            exited: Event::new(),
            max_threads,
            owner,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        lock(&self.state)
    }

    /// Record a job started from `at` as running until the guard drops.
    fn busy(&self, at: &'static Location<'static>) -> BusyGuard<'_> {
        let mut state = self.lock();
        state.next_job += 1;
        let id = state.next_job;
        state.running.push((id, at, Instant::now()));
        BusyGuard { pool: self, id }
    }

    fn submit(self: &Arc<Self>, job: Runnable) {
        let mut state = self.lock();
        if state.shutdown {
            // Dropping the runnable cancels its task: the awaiter sees `Cancelled`. Outside the
            // lock, and not inside another such drop (see `refused`).
            drop(state);
            drop_refused(Box::new(job));
            return;
        }
        state.queue.push_back(job);
        if state.idle > 0 {
            self.work.notify_one();
        } else if state.threads < self.max_threads {
            state.threads += 1;
            let pool = self.clone();
            let spawned = std::thread::Builder::new()
                .name("runner-blocking".into())
                .spawn(move || pool.work_loop());
            if let Err(err) = spawned {
                state.threads -= 1;
                if state.threads == 0 {
                    drop(state);
                    panic!("runner could not start a thread for blocking work: {err}");
                }
            }
        }
    }

    fn work_loop(&self) {
        let _report_to = ReportTo::enter(self.owner.clone());
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                drop(state);
                job.run();
                state = self.lock();
            } else if state.shutdown {
                state.threads -= 1;
                drop(state);
                self.exited.notify(usize::MAX);
                return;
            } else {
                state.idle += 1;
                state = self
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                state.idle -= 1;
            }
        }
    }

    /// Let the threads finish the queue, then exit.
    fn shutdown(&self) {
        self.lock().shutdown = true;
        self.work.notify_all();
    }

    async fn all_exited(&self) {
        loop {
            if self.lock().threads == 0 {
                return;
            }
            let listener = self.exited.listen();
            if self.lock().threads == 0 {
                return;
            }
            listener.await;
        }
    }
}
