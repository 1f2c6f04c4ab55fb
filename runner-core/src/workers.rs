//! Worker threads: a loop built with `workers(n)` runs `Send` tasks ([`spawn_send`]) on `n`
//! threads that share them (`pool`: a queue per worker, which idle workers steal from). Each
//! task has the wrapper every runner task has (`TaskFuture`): the spawner's context copied in,
//! cancellation at scheduling points, a panic boundary, slow-poll reports in debug mode, async
//! cleanup before the task ends. The main task and `spawn` stay on the loop's thread.
//!
//! ```
//! use runner_core::ContextVar;
//! static REQUEST: ContextVar<u32> = ContextVar::new("request");
//!
//! let out = runner_core::Runner::builder()
//!     .workers(2)
//!     .run(async {
//!         REQUEST.set(7);
//!         let on_pool = runner_core::spawn_send(async {
//!             (REQUEST.get(), std::thread::current().name().map(str::to_owned))
//!         });
//!         on_pool.await.unwrap()
//!     })
//!     .unwrap();
//! assert_eq!(out.0, Some(7));
//! assert!(out.1.unwrap().starts_with("runner-worker"));
//! ```
//!
//! Close cancels the pool's tasks with the loop's and waits for them and their cleanups (R5),
//! then stops the worker threads and joins them for at most [`JOIN_WAIT`]; a worker still busy
//! after that is reported and left to finish on its own. What is left on the pool is dropped
//! with it.

use std::cell::RefCell;
use std::future::Future;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use event_listener::{Event, Listener};
use futures_lite::FutureExt;

use crate::blocking::BlockingHandle;
use crate::context::Context;
use crate::header::Header;
use crate::lock::lock;
use crate::pool::Pool;
use crate::post::{Post, ReportTo};
use crate::queue::Inbox;
use crate::report::ExceptionContext;
use crate::task::bound;
use crate::task::future::{Home, TaskFuture};
use crate::task::handle::Task;
use crate::task::registry::Slot;
use crate::task::scope;
use crate::task::spawn::{never_run, spawn_on, task_ref};
use crate::task::worker_local::{close_asyncgens_on, Done, WorkerLocal};
use crate::time::Sleep;

/// How long close waits for the worker threads to exit once their tasks are done: a worker
/// still inside a poll after that is stuck in it.
pub(crate) const JOIN_WAIT: Duration = Duration::from_secs(1);

/// A loop's worker pool.
pub(crate) struct Workers {
    /// Torn down (with the tasks left on it) with the last handle to the pool: the loop's, once
    /// the worker threads have exited (each lets go of its handle before it says so).
    pool: Pool,
    /// The workers are told to exit.
    stop: Arc<AtomicBool>,
    stopped: Event,
    /// How the loop learns that worker threads have exited.
    exits: Arc<Exits>,
    /// A wait for the workers to exit ran out and was reported: none is waited for again.
    left_behind: AtomicBool,
    /// Each worker's mailbox: close has each close the generators made on it (R2.2).
    mailboxes: Mutex<Vec<Arc<dyn Post>>>,
    /// The loop: where reports about pool tasks are posted, and where close finds them.
    inbox: Inbox,
    /// The loop's default executor, for `to_thread` called from a pool task.
    pub(crate) blocking: BlockingHandle,
}

/// Worker threads that have not exited yet, and the event that says one has. Apart from
/// `Workers`, so that a worker lets go of the pool before it says it has exited.
#[derive(Default)]
struct Exits {
    running: AtomicUsize,
    exited: Event,
}

/// Says a worker thread has exited when dropped: at the end of the thread's life, after the
/// destructors of its thread-local values (see `Workers::work`).
struct ExitSignal(Arc<Exits>);

impl Drop for ExitSignal {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
        self.0.exited.notify(usize::MAX);
    }
}

thread_local! {
    /// The pool `spawn_send` uses on this thread: set on worker threads, and on a loop's thread
    /// while that loop runs.
    static CURRENT: RefCell<Option<Arc<Workers>>> = const { RefCell::new(None) };
    /// A worker thread's exit signal, the first of its thread-locals with a destructor, so
    /// that its destructor runs after the others (they run in reverse order of first use).
    static EXIT_SIGNAL: RefCell<Option<ExitSignal>> = const { RefCell::new(None) };
}

impl Workers {
    /// Start `n` worker threads (at least one) for the loop behind `inbox`. Slow polls are
    /// reported past `slow_poll` (the loop's debug setting now). `None` if no thread could be
    /// started: `spawn_send` then runs its tasks on the loop's thread.
    pub(crate) fn start(
        n: usize,
        inbox: Inbox,
        blocking: BlockingHandle,
        slow_poll: Option<Duration>,
    ) -> Option<Arc<Workers>> {
        let workers = Arc::new(Workers {
            pool: Pool::new(n),
            stop: Arc::new(AtomicBool::new(false)),
            stopped: Event::new(),
            exits: Arc::default(),
            left_behind: AtomicBool::new(false),
            mailboxes: Mutex::default(),
            inbox,
            blocking,
        });
        for i in 0..n.max(1) {
            let pool = workers.clone();
            workers.exits.running.fetch_add(1, Ordering::AcqRel);
            let started = thread::Builder::new()
                .name(format!("runner-worker-{i}"))
                .spawn(move || pool.work(i, slow_poll));
            if let Err(err) = started {
                workers.exits.running.fetch_sub(1, Ordering::AcqRel);
                crate::report::write_stderr(format_args!(
                    "runner: could not start worker thread {i} ({err}); running with {i}"
                ));
                break;
            }
        }
        if workers.running() == 0 {
            return None;
        }
        Some(workers)
    }

    /// A worker thread's life: run the pool's tasks, and the cleanups made here, until told to
    /// stop; then finish those cleanups (running the pool meanwhile). The thread lets go of the
    /// pool before it says it has exited, so that what is left on the pool is dropped by the
    /// loop's close (R2.6), not a moment after it by this thread.
    ///
    /// The thread says it has exited only after its thread-local values are dropped (a pool
    /// task may have left a cache in one), so that their destructors run before close returns,
    /// within close's wait, not while the program goes on (or ends) after it.
    fn work(self: Arc<Self>, index: usize, slow: Option<Duration>) {
        let mut exit_signal = Some(ExitSignal(self.exits.clone()));
        let _ = EXIT_SIGNAL.try_with(|s| *s.borrow_mut() = exit_signal.take());
        scope::set_slow_poll_threshold(slow);
        // A report made here with no loop at hand (a cleanup's panic) goes to the loop.
        let _report_to = ReportTo::enter(self.inbox.owner());
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        let local = WorkerLocal::enter(self.inbox.clone(), self.stop.clone());
        lock(&self.mailboxes).push(local.mailbox());
        let stop = async {
            loop {
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                let listener = self.stopped.listen();
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                listener.await;
            }
        };
        local.block_on(self.pool.run(index, stop));
        // Every cleanup made on this thread is finished before it exits.
        local.finish(&self.pool, index);
        bound::drop_kept();
        drop(local);
        let _ = CURRENT.try_with(|c| c.borrow_mut().take());
        drop(self);
        // Here only if the thread-local could not take it.
        drop(exit_signal);
    }

    /// Spawn `fut` on the pool, in a copy of the current context.
    fn spawn<F>(&self, fut: F, at: &'static Location<'static>) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let header = Header::new(None, at, self.inbox.owner());
        let stopped = self.stop.load(Ordering::Acquire);
        let ctx = match stopped {
            true => Context::new(),
            false => Context::current(),
        };
        let (runnable, task) = self.pool.spawn(header, |header| {
            TaskFuture::new(fut, Home::pool(header), ctx, Slot::Never)
        });
        let me = task_ref(&runnable, &task);
        if stopped {
            // The pool is stopped: the task is cancelled at once, its future dropped here (not
            // inside another such drop: see `refused`).
            return never_run(runnable, task, me);
        }
        self.inbox.track_off_loop(&me);
        runnable.schedule();
        Task::new(task, me)
    }

    /// The loop the pool belongs to.
    pub(crate) fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// Have each worker close the generators and finalized streams made on it (close's second
    /// step): a wait per worker that still takes jobs, ending when its closes have; none once
    /// the workers are left behind.
    pub(crate) fn close_asyncgens(&self) -> Vec<Arc<Done>> {
        if self.left_behind.load(Ordering::Acquire) {
            // A worker is stuck in a poll: none is waited for again.
            return Vec::new();
        }
        let mailboxes = lock(&self.mailboxes).clone();
        mailboxes
            .iter()
            .filter_map(|mailbox| close_asyncgens_on(&**mailbox))
            .collect()
    }

    /// Tell the workers to exit once they have finished the cleanups made on them, cancelling
    /// the pool's tasks still pending (spawned after close's first step), which those cleanups
    /// may wait for. Idempotent.
    fn tell_stop(&self) {
        if !self.stop.swap(true, Ordering::AcqRel) {
            for task in self.inbox.off_loop_pending() {
                task.cancel();
            }
            self.stopped.notify(usize::MAX);
        }
    }

    /// Worker threads that have not exited yet.
    fn running(&self) -> usize {
        self.exits.running.load(Ordering::Acquire)
    }

    /// Close gave up waiting for a pool task stuck in a poll: its worker is left behind, and
    /// the workers are not waited for again.
    pub(crate) fn leave_behind(&self) {
        self.left_behind.store(true, Ordering::Release);
    }

    /// Worker threads told to stop that are still finishing their cleanups.
    pub(crate) fn finishing(&self) -> usize {
        match self.stop.load(Ordering::Acquire) {
            true => self.running(),
            false => 0,
        }
    }

    /// Tell the workers to exit and wait, without blocking the loop, until they have (their
    /// cleanups finished), for at most `timeout`; reports the workers still running after that.
    pub(crate) async fn join(&self, timeout: Duration, report: impl Fn(ExceptionContext)) {
        self.tell_stop();
        if self.left_behind.load(Ordering::Acquire) {
            return;
        }
        let deadline = Instant::now() + timeout;
        while self.running() > 0 {
            let listener = self.exits.exited.listen();
            if self.running() == 0 {
                break;
            }
            let exited = async {
                listener.await;
                true
            };
            let timed_out = async {
                Sleep::until(deadline).await;
                false
            };
            if !exited.or(timed_out).await {
                self.give_up(timeout, report);
                return;
            }
        }
    }

    /// Tell the workers to exit, and wait at most `wait` (none: not at all) for them; reports a
    /// worker still running after that. Idempotent: once a wait has run out, no other is made.
    /// What is left on the pool is dropped with the pool's last handle: the loop's, once the
    /// workers have exited (on the loop's thread), else the last worker's.
    pub(crate) fn stop(&self, wait: Option<Duration>, report: impl Fn(ExceptionContext)) {
        self.tell_stop();
        let Some(wait) = wait.filter(|_| !self.left_behind.load(Ordering::Acquire)) else {
            return;
        };
        let deadline = Instant::now() + wait;
        while self.running() > 0 {
            let listener = self.exits.exited.listen();
            if self.running() == 0 {
                break;
            }
            if listener.wait_deadline(deadline).is_none() {
                self.give_up(wait, report);
                return;
            }
        }
    }

    /// A wait of `waited` for the workers to exit ran out: say so, once, and wait no more.
    fn give_up(&self, waited: Duration, report: impl Fn(ExceptionContext)) {
        if self.left_behind.swap(true, Ordering::AcqRel) {
            return;
        }
        report(ExceptionContext::new(format!(
            "{} worker thread(s) still running {:.1} s after close stopped them: a pool task \
             or an async cleanup is stuck; they are left to finish on their own, with the \
             tasks left on the pool",
            self.running(),
            waited.as_secs_f64()
        )));
    }
}

impl Drop for Workers {
    /// The last handle to the pool is gone (its threads have exited, or the last one is
    /// exiting): drop the tasks left on it, queued or waiting.
    fn drop(&mut self) {
        self.pool.tear_down(self.inbox.off_loop_pending());
    }
}

/// Makes a loop's pool the one `spawn_send` uses on its thread while it runs; undone on drop.
pub(crate) struct WorkersGuard(Option<Arc<Workers>>);

impl WorkersGuard {
    pub(crate) fn enter(workers: Option<Arc<Workers>>) -> WorkersGuard {
        WorkersGuard(CURRENT.with(|c| c.replace(workers)))
    }
}

impl Drop for WorkersGuard {
    fn drop(&mut self) {
        let prev = self.0.take();
        let _ = CURRENT.try_with(|c| *c.borrow_mut() = prev);
    }
}

/// One worker per core this process may use (`std::thread::available_parallelism`; 1 when
/// unknown): what `workers = "auto"` asks for.
pub fn available_workers() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// The pool of the loop running on this thread, or of the worker this is.
pub(crate) fn current() -> Option<Arc<Workers>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Spawn a `Send` future on the running loop's worker pool (a loop built with `workers(n)`), in
/// a copy of the current context; without a pool, on the loop's thread, as
/// [`spawn`](crate::spawn) does. Callable from the loop's thread and from pool tasks.
///
/// The task has every guarantee a [`spawn`](crate::spawn)ed one has: it is cancelled only at a
/// scheduling point, its panic is caught (and reported if nobody retrieves it), debug mode
/// reports its slow polls, the async cleanups it leaves (`defer`, generators, finalized
/// streams) run on its worker before its awaiter sees it end, and close cancels it and waits.
///
/// # Panics
/// Outside a running loop and its workers.
///
/// ```
/// let sum = runner_core::Runner::builder()
///     .workers(2)
///     .run(async {
///         let parts: Vec<_> = (0..4u64)
///             .map(|i| runner_core::spawn_send(async move { (i * 100..(i + 1) * 100).sum::<u64>() }))
///             .collect();
///         let mut sum = 0;
///         for part in parts {
///             sum += part.await.unwrap();
///         }
///         sum
///     })
///     .unwrap();
/// assert_eq!(sum, (0..400).sum::<u64>());
/// ```
#[track_caller]
pub fn spawn_send<F>(fut: F) -> Task<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let at = Location::caller();
    if let Some(workers) = current() {
        return workers.spawn(fut, at);
    }
    match scope::current() {
        Some(scope) => spawn_on(&scope, fut, at, true),
        None => panic!(
            "runner::spawn_send() was called outside a running event loop and its workers: call \
             it from code running inside runner::run(), Runner::run() or #[runner::main]"
        ),
    }
}
