//! The event loop: a single-thread executor of `async_task` tasks driven by `async_io::block_on`
//! on one thread, plus the callbacks, the default executor and the exception handler around it
//! (Python's `asyncio.AbstractEventLoop`).
//!
//! ```
//! use runner_core::EventLoop;
//!
//! let lp = EventLoop::new();
//! let task = lp.spawn(async { 1 + 1 });
//! assert_eq!(lp.run_until_complete(task).unwrap().unwrap(), 2);
//! lp.close();
//! assert!(lp.is_closed());
//! ```
//!
//! The loop itself is `!Send`: tasks run on the thread that runs the loop, so their futures need
//! not be `Send`. [`LoopHandle`] is the `Send + Sync` way in from other threads.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe, Location};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;
use std::time::Duration;

use std::collections::HashMap;
use std::rc::Weak;

use futures_lite::FutureExt;

use crate::asyncgen::Closable;
use crate::defer::Abandoning;
use crate::signal::Interrupt;
use crate::task::Cleanup;

use crate::blocking::DefaultExecutor;
use crate::callback::{CallbackHandle, Callbacks};
use crate::context::Context;
use crate::debug;
use crate::error::{drop_quietly, panic_message, RunError};
use crate::exception::{self, ExceptionContext};
use crate::executor::{Executor, Spawner};
use crate::task::{Header, Output, Slot, Task, TaskFuture, TaskRef, TaskSet};

thread_local! {
    /// The loop running on this thread, if any: what makes a nested `run` refusable before
    /// anything is built, and how tasks find their loop.
    static RUNNING: RefCell<Option<EventLoop>> = const { RefCell::new(None) };
    /// The running loop's slow-poll threshold when it is in debug mode, else `None`: the one
    /// thing every poll reads, kept where reading it costs a load (R7.4).
    static SLOW_POLL: Cell<Option<Duration>> = const { Cell::new(None) };
}

type Handler = Rc<dyn Fn(&EventLoop, &ExceptionContext)>;

/// The most callbacks (and, separately, jobs posted from other threads) one round of the
/// callback driver runs before the loop's tasks, timers and I/O get their turn.
pub(crate) const CALLBACK_BATCH: usize = 128;

/// How long a run after Ctrl-C, or a close, waits before it says what it is waiting for.
pub(crate) const NOTICE_AFTER: Duration = Duration::from_secs(1);

/// How many times close cancels the tasks pending on the loop before it gives up on the ones
/// still being spawned.
const CANCEL_ROUNDS: usize = 8;

/// A job sent to the loop thread from anywhere.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The part of a loop other threads may touch: a queue of jobs and the waker of the loop's
/// callback driver.
pub(crate) struct Shared {
    queue: Mutex<SharedQueue>,
    closed: AtomicBool,
    /// Spawns tasks from other threads onto the loop's executor.
    spawner: Spawner,
}

#[derive(Default)]
struct SharedQueue {
    jobs: std::collections::VecDeque<Job>,
    waker: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SharedQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `job` for the loop thread; gives it back if the loop is closed.
    pub(crate) fn post(&self, job: Job) -> Result<(), Job> {
        let waker = {
            let mut queue = self.lock();
            if self.closed.load(Ordering::Acquire) {
                return Err(job);
            }
            queue.jobs.push_back(job);
            queue.waker.clone()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Wake the driver so it looks at its queues again.
    pub(crate) fn wake(&self) {
        let waker = self.lock().waker.clone();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Take at most `max` queued jobs, oldest first, and remember who to wake for the next
    /// ones; also whether more are left. The bound is what keeps a thread that posts faster
    /// than the loop runs from starving the loop's tasks and timers.
    pub(crate) fn take_jobs(&self, waker: &Waker, max: usize) -> (Vec<Job>, bool) {
        let mut queue = self.lock();
        if !queue.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            queue.waker = Some(waker.clone());
        }
        let n = queue.jobs.len().min(max);
        let jobs = queue.jobs.drain(..n).collect();
        (jobs, !queue.jobs.is_empty())
    }

    fn close(&self) {
        let jobs = {
            let mut queue = self.lock();
            self.closed.store(true, Ordering::Release);
            queue.waker = None;
            std::mem::take(&mut queue.jobs)
        };
        // Dropped outside the lock: a job may own a task whose destructors post more jobs.
        drop(jobs);
    }
}

pub(crate) struct LoopInner {
    executor: Executor,
    /// The waker of the callback driver task, for close to reach it.
    driver: RefCell<Option<Waker>>,
    pub(crate) shared: Arc<Shared>,
    tasks: RefCell<TaskSet>,
    pub(crate) callbacks: Callbacks,
    pub(crate) default_executor: DefaultExecutor,
    debug: Cell<bool>,
    slow_callback_duration: Cell<Duration>,
    handler: RefCell<Option<Handler>>,
    /// Async cleanups of tasks still running them, by task id (R3.2).
    task_cleanups: RefCell<HashMap<u64, Vec<Cleanup>>>,
    /// Cleanups that belong to no task, spawned on the loop: close waits for them, never
    /// cancels them.
    finalizers: RefCell<Vec<TaskRef>>,
    /// Generators and finalized streams iterated on this loop, held weakly (R5.3).
    asyncgens: RefCell<Vec<Weak<dyn Closable>>>,
    asyncgens_shutdown_called: Cell<bool>,
    running: Cell<bool>,
    closing: Cell<bool>,
    closed: Cell<bool>,
}

impl LoopInner {
    /// Drop every task still on the loop (their destructors run), waking the waiting ones so
    /// that the executor gets hold of them.
    fn drop_tasks(&self) {
        let tasks = std::mem::take(&mut *self.tasks.borrow_mut());
        let driver = self.driver.borrow_mut().take();
        let wakers = tasks.take_wakers().into_iter().chain(driver);
        let outcome = self.executor.close(wakers, || tasks.all_finished());
        if outcome.unreached {
            let left = tasks.pending().len();
            report(
                Some(&self.shared),
                ExceptionContext::new(format!(
                    "{left} task(s) of the closed loop could not be torn down: another thread \
                     began waking them and did not finish within a second; they are leaked"
                )),
            );
        }
    }
}

impl Drop for LoopInner {
    fn drop(&mut self) {
        // A loop dropped without close: let its threads finish their queue and exit; drop
        // its tasks.
        self.default_executor.shutdown_nowait();
        self.shared.close();
        self.drop_tasks();
    }
}

/// A cheap, cloneable handle to an event loop. `!Send`: it is bound to the thread that runs it.
#[derive(Clone)]
pub struct EventLoop {
    pub(crate) inner: Rc<LoopInner>,
}

impl EventLoop {
    /// A new loop with default settings; debug mode follows the `RUNNER_DEBUG` environment
    /// variable (on when it is set to anything but empty or `0`).
    pub fn new() -> EventLoop {
        LoopBuilder::default().build()
    }

    /// Configure a loop before building it.
    pub fn builder() -> LoopBuilder {
        LoopBuilder::default()
    }

    /// Spawn `fut` on this loop in a copy of the current context. The future runs on the loop's
    /// thread, so it need not be `Send`. On a closed loop the task is cancelled at once.
    #[track_caller]
    pub fn spawn<F>(&self, fut: F) -> Task<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.spawn_at(fut, Location::caller(), true)
    }

    /// Spawn; `cancellable` tasks join the registry that close cancels.
    fn spawn_at<F>(
        &self,
        fut: F,
        at: &'static Location<'static>,
        cancellable: bool,
    ) -> Task<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let header = Header::new(None, at, Some(self.inner.shared.clone()));
        if self.is_closed() {
            return Task::cancelled(header);
        }
        let index = self.inner.tasks.borrow_mut().insert(&header, cancellable);
        let fut = TaskFuture::new(fut, header.clone(), Context::current(), Slot::At(index));
        Task::new(self.inner.executor.spawn(fut), header)
    }

    /// Run a cleanup that belongs to no task; close waits for it instead of cancelling it.
    pub(crate) fn spawn_finalizer(&self, cleanup: Cleanup) {
        let task = self.spawn_at(cleanup, Location::caller(), false);
        let mut finalizers = self.inner.finalizers.borrow_mut();
        finalizers.retain(|t| !t.is_finished());
        finalizers.push(task.to_ref());
        drop(task);
    }

    pub(crate) fn take_task_cleanups(&self, task_id: u64) -> Vec<Cleanup> {
        self.inner
            .task_cleanups
            .borrow_mut()
            .remove(&task_id)
            .unwrap_or_default()
    }

    pub(crate) fn put_task_cleanups(&self, task_id: u64, cleanups: Vec<Cleanup>) {
        self.inner
            .task_cleanups
            .borrow_mut()
            .insert(task_id, cleanups);
    }

    /// A generator or finalized stream was first iterated on this loop (R5.3, R5.4).
    pub(crate) fn register_asyncgen(
        &self,
        what: Weak<dyn Closable>,
        describe: &dyn Fn() -> String,
    ) {
        if self.inner.asyncgens_shutdown_called.get() {
            self.call_exception_handler(ExceptionContext::new(format!(
                "asynchronous generator was scheduled after shutdown_asyncgens(): {}",
                describe()
            )));
        }
        let mut gens = self.inner.asyncgens.borrow_mut();
        if gens.len() >= 64 && gens.len().is_power_of_two() {
            gens.retain(|g| g.strong_count() > 0);
        }
        gens.push(what);
    }

    /// Run `fut` as the main task until it completes and return its output (Python's
    /// `loop.run_until_complete`). The future may borrow from the caller.
    ///
    /// Returns `Err(RunError::NestedRun)` if a loop is already running on this thread and
    /// `Err(RunError::Closed)` if this loop is closed; the future is not polled then. A panic in
    /// the future propagates out of this call once the loop is usable again.
    #[track_caller]
    pub fn run_until_complete<F: IntoFuture>(&self, fut: F) -> Result<F::Output, RunError> {
        let mut ctx = Context::current();
        self.run_main(fut.into_future(), &mut ctx, Location::caller(), None)
    }

    /// Run `fut` as the main task in `ctx`, leaving the task's final context in `ctx`. With an
    /// `interrupt` (a runner on the main thread), Ctrl-C cancels the main task and a second one
    /// makes this return `Err(Interrupted)` at once (R6.2, R6.3).
    pub(crate) fn run_main<F: Future>(
        &self,
        fut: F,
        ctx: &mut Context,
        at: &'static Location<'static>,
        interrupt: Option<&Interrupt>,
    ) -> Result<F::Output, RunError> {
        if get_running_loop().is_some() {
            return Err(RunError::NestedRun);
        }
        if self.is_closed() {
            return Err(RunError::Closed);
        }
        let header = Header::new(Some("main"), at, Some(self.inner.shared.clone()));
        let main_ref = TaskRef::from_header(header.clone());
        // Declared before `main` so that it is dropped after it: after a second Ctrl-C, the
        // cleanups the abandoned main task leaves are not waited for.
        let _abandoning;
        let mut main = pin!(TaskFuture::new(
            fut,
            header,
            std::mem::take(ctx),
            Slot::Never
        ));
        if let Some(interrupt) = interrupt {
            interrupt.set_main(Some(main_ref.clone()));
        }
        let output = {
            let _running = RunningGuard::enter(self);
            let main = self.inner.executor.run(main.as_mut());
            match interrupt {
                None => Some(async_io::block_on(main)),
                Some(interrupt) => {
                    let shown = Cell::new(false);
                    let notice = async {
                        interrupt.pressed().await;
                        let deadline = std::time::Instant::now() + NOTICE_AFTER;
                        let heading = "still finishing the main task 1 s after Ctrl-C";
                        self.notice_at(deadline, heading, Some(&main_ref), true, &shown)
                            .await;
                        None
                    };
                    async_io::block_on(
                        async { Some(main.await) }
                            .or(async {
                                interrupt.aborted().await;
                                None
                            })
                            .or(notice),
                    )
                }
            }
        };
        if let Some(interrupt) = interrupt {
            interrupt.set_main(None);
            interrupt.set_returned();
        }
        *ctx = main.as_mut().take_context();
        let Some(output) = output else {
            _abandoning = Abandoning::new(true);
            return Err(RunError::Interrupted);
        };
        match output.and_then(Output::into_inner) {
            Some(value) => Ok(value),
            None => match main_ref.take_panic() {
                Some(payload) => resume_unwind(payload),
                None if main_ref.is_cancelled_by_code() => Err(RunError::Cancelled),
                None if interrupt.is_some_and(|i| i.presses() > 0) => Err(RunError::Interrupted),
                None => Err(RunError::Cancelled),
            },
        }
    }

    /// Run `f` on the loop's default executor, a pool of threads created on first use.
    ///
    /// # Panics
    /// After [`shutdown_default_executor`](Self::shutdown_default_executor):
    /// "executor shutdown has been called".
    #[track_caller]
    pub fn run_in_executor<F, T>(&self, f: F) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_blocking(f, Context::new(), Location::caller())
    }

    pub(crate) fn spawn_blocking<F, T>(
        &self,
        f: F,
        ctx: Context,
        at: &'static Location<'static>,
    ) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let header = Header::new(None, at, Some(self.inner.shared.clone()));
        let job = TaskFuture::new(async move { f() }, header.clone(), ctx, Slot::Never);
        Task::new(self.inner.default_executor.spawn(job, at), header)
    }

    /// Schedule `f` to run on the loop's next iteration, in a copy of the current context.
    /// Callbacks run in the order they were scheduled.
    #[track_caller]
    pub fn call_soon<F: FnOnce() + 'static>(&self, f: F) -> CallbackHandle {
        self.inner
            .callbacks
            .call_soon(&self.inner.shared, Box::new(f), Location::caller())
    }

    /// Schedule `f` to run once `delay` has passed.
    #[track_caller]
    pub fn call_later<F: FnOnce() + 'static>(&self, delay: Duration, f: F) -> CallbackHandle {
        self.inner
            .callbacks
            .call_later(&self.inner.shared, delay, Box::new(f), Location::caller())
    }

    /// A `Send + Sync` handle for other threads.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle {
            shared: self.inner.shared.clone(),
        }
    }

    /// True if the loop is in debug mode: polls and callbacks are timed and slow ones reported.
    pub fn debug(&self) -> bool {
        self.inner.debug.get()
    }

    /// Turn debug mode on or off.
    pub fn set_debug(&self, enabled: bool) {
        self.inner.debug.set(enabled);
        self.publish_slow_poll();
    }

    /// Keep `SLOW_POLL` in step with this loop's settings while it runs.
    fn publish_slow_poll(&self) {
        if self.is_running() {
            let threshold = self.debug().then(|| self.slow_callback_duration());
            SLOW_POLL.with(|s| s.set(threshold));
        }
    }

    /// In debug mode, polls and callbacks at least this long are reported (default 100 ms).
    pub fn slow_callback_duration(&self) -> Duration {
        self.inner.slow_callback_duration.get()
    }

    /// Set the slow-poll threshold.
    pub fn set_slow_callback_duration(&self, d: Duration) {
        self.inner.slow_callback_duration.set(d);
        self.publish_slow_poll();
    }

    /// Send reports to `handler` instead of the default handler.
    pub fn set_exception_handler<H>(&self, handler: H)
    where
        H: Fn(&EventLoop, &ExceptionContext) + 'static,
    {
        *self.inner.handler.borrow_mut() = Some(Rc::new(handler));
    }

    /// Go back to the default handler.
    pub fn clear_exception_handler(&self) {
        *self.inner.handler.borrow_mut() = None;
    }

    /// Report `ctx` to the handler. A handler that panics is itself reported by the default
    /// handler ("unhandled error in exception handler") and the loop goes on.
    pub fn call_exception_handler(&self, ctx: ExceptionContext) {
        let handler = self.inner.handler.borrow().clone();
        let Some(handler) = handler else {
            self.default_exception_handler(&ctx);
            return;
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| handler(self, &ctx))) {
            self.default_exception_handler(
                &ExceptionContext::new("unhandled error in exception handler")
                    .with_error(panic_message(&*payload)),
            );
            self.default_exception_handler(&ctx);
            drop_quietly(payload);
        }
    }

    /// Write `ctx` to stderr: the message, then the task and the error on their own lines.
    pub fn default_exception_handler(&self, ctx: &ExceptionContext) {
        exception::write_to_stderr(ctx);
    }

    /// True while `run_until_complete` (or a runner's `run`) is running this loop.
    pub fn is_running(&self) -> bool {
        self.inner.running.get()
    }

    /// True once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.get()
    }

    /// Close every generator and finalized stream still open on the loop, concurrently, and
    /// wait for cleanups already scheduled on it. Failures are reported as "an error
    /// occurred during closing of asynchronous generator" naming the generator.
    pub async fn shutdown_asyncgens(&self) {
        self.inner.asyncgens_shutdown_called.set(true);
        loop {
            let gens = std::mem::take(&mut *self.inner.asyncgens.borrow_mut());
            let mut closing: Vec<Cleanup> = gens
                .iter()
                .filter_map(Weak::upgrade)
                .filter_map(|g| g.close_now())
                .collect();
            let finalizers = std::mem::take(&mut *self.inner.finalizers.borrow_mut());
            if closing.is_empty() && finalizers.is_empty() {
                return;
            }
            std::future::poll_fn(|cx| {
                closing.retain_mut(|c| c.as_mut().poll(cx).is_pending());
                match closing.is_empty() {
                    true => std::task::Poll::Ready(()),
                    false => std::task::Poll::Pending,
                }
            })
            .await;
            for finalizer in finalizers {
                finalizer.finished().await;
            }
        }
    }

    /// Stop the default executor and wait for its threads to finish their queued work, at most
    /// `timeout` (none: wait as long as it takes). When the time runs out a report says so; the
    /// threads left running do not keep the process alive.
    pub async fn shutdown_default_executor(&self, timeout: Option<Duration>) {
        if !self.inner.default_executor.shutdown(timeout).await {
            let secs = timeout.map_or(0.0, |t| t.as_secs_f64());
            self.call_exception_handler(ExceptionContext::new(format!(
                "the default executor did not finish joining its threads within {secs} seconds"
            )));
        }
    }

    /// What each close step would wait for, so that close skips the steps with nothing to do
    /// (each run of the executor costs an allocation): pending tasks; open generators or
    /// scheduled finalizers; a started default executor.
    pub(crate) fn close_work(&self) -> (bool, bool, bool) {
        let tasks = self.inner.tasks.borrow().has_pending();
        let gens = self
            .inner
            .asyncgens
            .borrow()
            .iter()
            .any(|g| g.strong_count() > 0)
            || self
                .inner
                .finalizers
                .borrow()
                .iter()
                .any(|t| !t.is_finished());
        (tasks, gens, !self.inner.default_executor.is_idle())
    }

    /// Cancel every pending task, and every task spawned while they are cancelled, and wait for
    /// all of them to finish (R2.1).
    ///
    /// Python's runner cancels one snapshot of the pending tasks and waits for it. Here tasks
    /// spawned while that snapshot is cancelled (from destructors, say) are cancelled in further
    /// rounds, at most `CANCEL_ROUNDS` in all, so that close ends even when every cancelled task
    /// spawns a replacement. What is still pending after the last round is reported ("tasks kept
    /// being spawned during runner shutdown") and dropped when the loop closes.
    pub(crate) async fn cancel_all_tasks(&self) {
        self.inner.closing.set(true);
        for _ in 0..CANCEL_ROUNDS {
            let pending = self.inner.tasks.borrow().pending();
            if pending.is_empty() {
                break;
            }
            for task in &pending {
                task.cancel();
            }
            for task in &pending {
                task.finished().await;
            }
        }
        let left = self.inner.tasks.borrow().pending();
        if !left.is_empty() {
            let (n, was) = match left.len() {
                1 => (1, "task was"),
                n => (n, "tasks were"),
            };
            let first = left[0].info();
            self.call_exception_handler(
                ExceptionContext::new(format!(
                    "tasks kept being spawned during runner shutdown: after {CANCEL_ROUNDS} \
                     rounds of cancelling, {n} {was} still pending; they are dropped without \
                     being waited for"
                ))
                .with_task(first),
            );
        }
        self.inner.closing.set(false);
    }

    /// What a run or close still waits for, one line each: unfinished tasks with their name and
    /// spawn site (`main` first, if given and unfinished), their pending async cleanups, and the
    /// blocking jobs still running with their call site and running time.
    pub(crate) fn pending_work(&self, main: Option<&TaskRef>) -> Vec<String> {
        const MOST_TASKS: usize = 10;
        let mut lines = Vec::new();
        let mut tasks: Vec<TaskRef> = main
            .filter(|m| !m.is_finished())
            .cloned()
            .into_iter()
            .collect();
        tasks.extend(self.inner.tasks.borrow().unfinished_refs());
        for task in tasks.iter().take(MOST_TASKS) {
            lines.push(task.info().to_string());
        }
        if tasks.len() > MOST_TASKS {
            lines.push(format!("and {} more tasks", tasks.len() - MOST_TASKS));
        }
        let cleanups: usize = self
            .inner
            .task_cleanups
            .borrow()
            .values()
            .map(Vec::len)
            .sum();
        if cleanups > 0 {
            lines.push(format!(
                "{cleanups} async cleanup(s) those tasks are running"
            ));
        }
        for (at, running) in self.inner.default_executor.running_jobs() {
            lines.push(format!(
                "a to_thread job started at {}, running for {:.1} s",
                exception::place(at),
                running.as_secs_f64()
            ));
        }
        lines
    }

    /// Wait until `deadline`, then write once (`shown` remembers) to stderr what is still
    /// pending, headed by `heading`; then never complete. Raced against a waiting step, so that
    /// a wait of more than a second is never silent. `ctrl_c`: a second Ctrl-C would get out.
    pub(crate) async fn notice_at(
        &self,
        deadline: std::time::Instant,
        heading: &str,
        main: Option<&TaskRef>,
        ctrl_c: bool,
        shown: &Cell<bool>,
    ) {
        async_io::Timer::at(deadline).await;
        if !shown.replace(true) {
            let mut text = format!("runner: {heading}, waiting for:");
            let lines = self.pending_work(main);
            if lines.is_empty() {
                text.push_str("\n  work runner cannot name (a generator's or stream's cleanup)");
            }
            for line in lines {
                text.push_str("\n  ");
                text.push_str(&line);
            }
            if ctrl_c {
                text.push_str("\n  press Ctrl-C again to exit at once");
            }
            exception::write_stderr(format_args!("{text}"));
        }
        std::future::pending::<()>().await;
    }

    /// Close the loop: pending callbacks are dropped, tasks still on it are dropped (their
    /// destructors run), the default executor is told to stop without waiting. Idempotent.
    ///
    /// # Panics
    /// If the loop is running: close it after `run_until_complete` returns.
    pub fn close(&self) {
        if self.is_running() {
            panic!("cannot close a running event loop; close it after run_until_complete returns");
        }
        if self.inner.closed.replace(true) {
            return;
        }
        self.inner.shared.close();
        self.inner.callbacks.clear();
        self.inner.default_executor.shutdown_nowait();
        self.inner.drop_tasks();
        // Cleanups the torn-down tasks were still running have no loop left: finish them now.
        let left: Vec<Cleanup> = self
            .inner
            .task_cleanups
            .borrow_mut()
            .drain()
            .flat_map(|(_, c)| c)
            .collect();
        crate::defer::run_on_the_spot(left);
    }

    /// Run one round of callbacks: the driver task's poll.
    fn drive(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let mut driver = self.inner.driver.borrow_mut();
        if driver.is_none() {
            *driver = Some(cx.waker().clone());
        }
        drop(driver);
        let (jobs, more) = self.inner.shared.take_jobs(cx.waker(), CALLBACK_BATCH);
        for job in jobs {
            self.run_callback(job, None);
        }
        if more {
            // The rest waits for the next round, after tasks, timers and I/O had their turn.
            cx.waker().wake_by_ref();
        }
        self.inner.callbacks.drive(self, cx)
    }

    /// Run one callback: catch its panic, time it in debug mode. `scheduled_at` is where a
    /// `call_soon`/`call_later` was made; `None` for jobs from other threads.
    pub(crate) fn run_callback(&self, f: impl FnOnce(), scheduled_at: Option<&Location<'_>>) {
        let describe = || match scheduled_at {
            Some(at) => format!("<callback scheduled at {}>", exception::place(at)),
            None => "<threadsafe callback>".to_owned(),
        };
        let threshold = slow_poll_threshold();
        let started = threshold.map(|_| std::time::Instant::now());
        if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
            self.call_exception_handler(
                ExceptionContext::new(format!("panic in callback {}", describe()))
                    .with_error(panic_message(&*payload)),
            );
            drop_quietly(payload);
        }
        if let (Some(threshold), Some(started)) = (threshold, started) {
            let took = started.elapsed();
            if took >= threshold {
                report_slow(&describe(), took, None);
            }
        }
    }
}

impl Default for EventLoop {
    fn default() -> Self {
        EventLoop::new()
    }
}

/// Two handles are equal when they refer to the same loop.
impl PartialEq for EventLoop {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for EventLoop {}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("running", &self.is_running())
            .field("closed", &self.is_closed())
            .field("debug", &self.debug())
            .finish()
    }
}

/// Options for a new [`EventLoop`].
///
/// ```
/// use std::time::Duration;
/// let lp = runner_core::EventLoop::builder()
///     .slow_callback_duration(Duration::from_millis(20))
///     .max_blocking_threads(4)
///     .build();
/// assert_eq!(lp.slow_callback_duration(), Duration::from_millis(20));
/// ```
pub struct LoopBuilder {
    slow_callback_duration: Duration,
    max_blocking_threads: Option<usize>,
    handler: Option<Handler>,
    debug: Option<bool>,
}

impl Default for LoopBuilder {
    fn default() -> Self {
        LoopBuilder {
            slow_callback_duration: Duration::from_millis(100),
            max_blocking_threads: None,
            handler: None,
            debug: None,
        }
    }
}

impl fmt::Debug for LoopBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopBuilder")
            .field("slow_callback_duration", &self.slow_callback_duration)
            .field("max_blocking_threads", &self.max_blocking_threads)
            .field("exception_handler", &self.handler.is_some())
            .field("debug", &self.debug)
            .finish()
    }
}

impl LoopBuilder {
    /// The slow-poll threshold for debug mode (default 100 ms).
    pub fn slow_callback_duration(mut self, d: Duration) -> Self {
        self.slow_callback_duration = d;
        self
    }

    /// The most threads the default executor may start (default min(32, cores + 4)).
    pub fn max_blocking_threads(mut self, n: usize) -> Self {
        self.max_blocking_threads = Some(n.max(1));
        self
    }

    /// The exception handler to start with.
    pub fn exception_handler<H>(mut self, handler: H) -> Self
    where
        H: Fn(&EventLoop, &ExceptionContext) + 'static,
    {
        self.handler = Some(Rc::new(handler));
        self
    }

    /// Debug mode on or off; unset follows `RUNNER_DEBUG`.
    pub fn debug(mut self, enabled: bool) -> Self {
        self.debug = Some(enabled);
        self
    }

    /// Build the loop. Nothing runs and no thread starts until it is used.
    pub fn build(self) -> EventLoop {
        let executor = Executor::new();
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            closed: AtomicBool::new(false),
            spawner: executor.spawner(),
        });
        let inner = Rc::new(LoopInner {
            executor,
            driver: RefCell::new(None),
            default_executor: DefaultExecutor::new(self.max_blocking_threads),
            shared,
            tasks: RefCell::default(),
            callbacks: Callbacks::default(),
            debug: Cell::new(self.debug.unwrap_or_else(debug::enabled_by_env)),
            slow_callback_duration: Cell::new(self.slow_callback_duration),
            handler: RefCell::new(self.handler),
            task_cleanups: RefCell::default(),
            finalizers: RefCell::default(),
            asyncgens: RefCell::default(),
            asyncgens_shutdown_called: Cell::new(false),
            running: Cell::new(false),
            closing: Cell::new(false),
            closed: Cell::new(false),
        });
        // The driver runs callbacks; it holds the loop weakly so the loop can be dropped.
        let weak = Rc::downgrade(&inner);
        let driver = std::future::poll_fn(move |cx| match weak.upgrade() {
            Some(inner) => EventLoop { inner }.drive(cx),
            None => std::task::Poll::Ready(()),
        });
        inner.executor.spawn(driver).detach();
        EventLoop { inner }
    }
}

/// A `Send + Sync` handle to a loop, for other threads.
///
/// ```
/// use std::time::Duration;
/// runner_core::run(async {
///     let handle = runner_core::get_running_loop().unwrap().handle();
///     let task = std::thread::spawn(move || handle.spawn(async { 5 })).join().unwrap();
///     assert_eq!(task.await.unwrap(), 5);
/// })
/// .unwrap();
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    shared: Arc<Shared>,
}

impl LoopHandle {
    /// Run `f` on the loop thread soon, in a copy of the calling thread's context. Dropped
    /// silently if the loop is closed.
    pub fn call_soon_threadsafe<F: FnOnce() + Send + 'static>(&self, f: F) {
        let mut ctx = Context::current();
        let _ = self.shared.post(Box::new(move || ctx.run(f)));
    }

    /// Spawn a `Send` future on the loop from any thread, in a copy of the calling thread's
    /// context. On a closed loop the task is cancelled at once.
    #[track_caller]
    pub fn spawn<F>(&self, fut: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let header = Header::new(None, Location::caller(), Some(self.shared.clone()));
        if self.is_closed() {
            return Task::cancelled(header);
        }
        let fut = TaskFuture::new(fut, header.clone(), Context::current(), Slot::OnFirstPoll);
        Task::new(self.shared.spawner.spawn(fut), header)
    }

    /// True once the loop is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Marks a loop as the one running on this thread; undone on drop, even when unwinding.
struct RunningGuard {
    lp: EventLoop,
}

impl RunningGuard {
    fn enter(lp: &EventLoop) -> Self {
        RUNNING.with(|r| *r.borrow_mut() = Some(lp.clone()));
        lp.inner.running.set(true);
        lp.publish_slow_poll();
        RunningGuard { lp: lp.clone() }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.lp.inner.running.set(false);
        SLOW_POLL.with(|s| s.set(None));
        RUNNING.with(|r| r.borrow_mut().take());
    }
}

/// The loop running on this thread, if any.
///
/// ```
/// assert!(runner_core::get_running_loop().is_none());
/// runner_core::run(async { assert!(runner_core::get_running_loop().is_some()) }).unwrap();
/// ```
pub fn get_running_loop() -> Option<EventLoop> {
    RUNNING.with(|r| r.borrow().clone())
}

fn with_running<R>(f: impl FnOnce(&LoopInner) -> R) -> Option<R> {
    RUNNING.with(|r| r.borrow().as_ref().map(|lp| f(&lp.inner)))
}

/// In debug mode, how long a poll may take before it is reported; `None` when debug is off.
pub(crate) fn slow_poll_threshold() -> Option<Duration> {
    SLOW_POLL.with(Cell::get)
}

/// True while the running loop's close is cancelling its tasks.
pub(crate) fn running_is_closing() -> bool {
    with_running(|l| l.closing.get()).unwrap_or(false)
}

/// A task spawned from another thread joins the registry at its first poll; during close it is
/// cancelled straight away.
pub(crate) fn register_remote(header: &Arc<Header>) -> Slot {
    with_running(|l| {
        let index = l.tasks.borrow_mut().insert(header, true);
        if l.closing.get() {
            TaskRef::from_header(header.clone()).cancel();
        }
        Slot::At(index)
    })
    .unwrap_or(Slot::Never)
}

pub(crate) fn deregister(index: usize) {
    with_running(|l| l.tasks.borrow_mut().remove(index));
}

/// Report `ctx` on the running loop, else on the loop that owns the reporter, else to stderr.
pub(crate) fn report(owner: Option<&Arc<Shared>>, ctx: ExceptionContext) {
    if let Some(lp) = get_running_loop() {
        lp.call_exception_handler(ctx);
        return;
    }
    let job: Job = Box::new(move || match get_running_loop() {
        Some(lp) => lp.call_exception_handler(ctx),
        None => exception::write_to_stderr(&ctx),
    });
    match owner {
        Some(shared) => {
            if let Err(job) = shared.post(job) {
                job();
            }
        }
        None => job(),
    }
}

/// R7.2: "Executing <what> took 0.153 seconds".
pub(crate) fn report_slow(what: &str, took: Duration, task: Option<crate::TaskInfo>) {
    let mut ctx = ExceptionContext::new(format!(
        "Executing {what} took {:.3} seconds",
        took.as_secs_f64()
    ));
    if let Some(task) = task {
        ctx = ctx.with_task(task);
    }
    report(None, ctx);
}
