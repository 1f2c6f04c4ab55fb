//! A loop's run queues: the thread-local queue of the thread running the loop, where a task woken
//! on that thread goes (a push, no atomic operation), and the one cross-thread queue, where
//! everything else goes: runnables woken on other threads (or on this one while the loop is not
//! running), jobs and reports posted from other threads. [`Inbox`] is the `Send + Sync` handle to
//! the latter. It also keeps what close needs to know from any thread: whether the loop is
//! closing, the tasks of the loop that run on other threads (worker pool tasks), and the tasks
//! spawned while close cancels.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::thread;
use std::time::{Duration, Instant};

use crate::driver::{Reactor, ReactorHome};
use crate::error::catch_quietly;
use crate::header::{Header, Runnable, TaskRef};
use crate::lock::lock;
use crate::post::{Delivery, Job, Post};
use crate::pruned::Pruned;
use crate::refused::drop_refused;
use crate::report::ExceptionContext;

/// What the thread running an executor keeps at hand, so that a wake-up on that thread costs a
/// thread-local access and a push.
pub(crate) struct Local {
    /// The address of the running executor's `Remote`; 0 when none runs on this thread.
    pub(crate) owner: Cell<usize>,
    pub(crate) queue: RefCell<VecDeque<Runnable>>,
    /// The run loop found nothing to do and waits for `waker`.
    pub(crate) idle: Cell<bool>,
    pub(crate) waker: RefCell<Option<Waker>>,
    /// The buffer of the last closed loop's cross-thread queue, for the next loop made on this
    /// thread: a loop's tasks are first scheduled before it runs, so through that queue.
    spare: Cell<Vec<Runnable>>,
}

thread_local! {
    pub(crate) static LOCAL: Local = const {
        Local {
            owner: Cell::new(0),
            queue: RefCell::new(VecDeque::new()),
            idle: Cell::new(false),
            waker: RefCell::new(None),
            spare: Cell::new(Vec::new()),
        }
    };
}

/// The cross-thread queue. Schedule functions and [`Inbox`] handles hold it.
pub(crate) struct Remote {
    queue: Mutex<RemoteQueue>,
    /// Runnables are waiting in `queue` (read without the lock on every tick).
    pending: AtomicBool,
    /// Jobs are refused once the loop is closed; runnables never are (see `push`).
    jobs_closed: AtomicBool,
    /// Reports are refused once the loop's close has delivered the last ones (after its
    /// teardown, whose destructors may report).
    reports_closed: AtomicBool,
    /// Close is cancelling the loop's tasks (steps 1 and 2 of R2).
    closing: AtomicBool,
    /// Jobs may be waiting in `queue`: set under its lock by `post`, cleared by the take that
    /// empties them. Read without the lock, so that asking costs a lock only when one came.
    jobs_posted: AtomicBool,
    /// A report has been posted to `queue` at least once (set under its lock, before the
    /// report is pushed). Read without the lock for the same reason.
    reports_posted: AtomicBool,
    /// A task has been noted in `off_loop` at least once (set before its lock is taken): a loop
    /// without workers never takes that lock.
    off_loop_used: AtomicBool,
    /// The loop's tasks that run on other threads (the worker pool's), for close to cancel.
    off_loop: Mutex<Pruned<TaskRef>>,
    /// Tasks spawned while close cancels, for its next round, and who to wake for them.
    spawned_in_close: Mutex<(Vec<TaskRef>, Option<Waker>)>,
    /// The loop's timers and I/O driver, shared with its worker threads.
    reactor: Reactor,
}

impl ReactorHome for Remote {
    fn reactor(&self) -> &Reactor {
        &self.reactor
    }
}

#[derive(Default)]
struct RemoteQueue {
    runnables: Vec<Runnable>,
    /// The executor has torn its tasks down for good: a runnable that arrives now (a task
    /// spawned from another thread as the loop closed) is dropped at once, not kept.
    torn_down: bool,
    jobs: VecDeque<Job>,
    /// Reports made on other threads, for the loop's exception handler.
    reports: VecDeque<ExceptionContext>,
    /// Wakes the thread running the executor.
    waker: Option<Waker>,
    /// Wakes the loop's driver, which runs the jobs.
    driver: Option<Waker>,
}

impl Remote {
    pub(crate) fn new() -> Arc<Remote> {
        let runnables = LOCAL.try_with(|l| l.spare.take()).unwrap_or_default();
        Arc::new(Remote {
            queue: Mutex::new(RemoteQueue {
                runnables,
                ..RemoteQueue::default()
            }),
            pending: AtomicBool::new(false),
            jobs_closed: AtomicBool::new(false),
            reports_closed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            jobs_posted: AtomicBool::new(false),
            reports_posted: AtomicBool::new(false),
            off_loop_used: AtomicBool::new(false),
            off_loop: Mutex::new(Pruned::new()),
            spawned_in_close: Mutex::default(),
            reactor: Reactor::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, RemoteQueue> {
        lock(&self.queue)
    }

    /// What `Local::owner` holds while this queue's executor runs.
    pub(crate) fn id(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    /// The schedule function of every task: the local queue if this queue's executor runs on
    /// this thread, else the cross-thread queue.
    pub(crate) fn schedule(self: &Arc<Self>, runnable: Runnable) {
        let mut runnable = Some(runnable);
        let _ = LOCAL.try_with(|local| {
            if local.owner.get() == self.id() {
                if let Some(r) = runnable.take() {
                    local.queue.borrow_mut().push_back(r);
                }
                if local.idle.replace(false) {
                    if let Some(waker) = &*local.waker.borrow() {
                        waker.wake_by_ref();
                    }
                }
            }
        });
        if let Some(runnable) = runnable {
            self.push(runnable);
        }
    }

    /// Queue a runnable woken off the loop. Never drops it, even on a closed loop: dropping a
    /// task runs its destructors, and a wake-up may come from inside someone's lock (a channel
    /// waking its receivers), so teardown happens only in `Executor::close`, which drains this
    /// queue.
    ///
    /// Once the executor has torn its tasks down for good, nobody would drop a runnable queued
    /// here: one that arrives then is dropped at once (not inside another such drop, see
    /// `refused`). Only a task that never ran can arrive then (every task that did was torn
    /// down, and waking a finished task queues nothing): one spawned from another thread as
    /// the loop closed, whose future holds only what its spawner gave it.
    fn push(&self, runnable: Runnable) {
        let waker = {
            let mut queue = self.lock();
            if queue.torn_down {
                drop(queue);
                drop_refused(Box::new(runnable));
                return;
            }
            queue.runnables.push(runnable);
            self.pending.store(true, Ordering::Release);
            queue.waker.clone()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The executor is done tearing its tasks down: the runnables still queued, and from now
    /// on none is kept (see `push`).
    pub(crate) fn tear_down(&self) -> Vec<Runnable> {
        let mut queue = self.lock();
        queue.torn_down = true;
        self.pending.store(false, Ordering::Relaxed);
        std::mem::take(&mut queue.runnables)
    }

    /// The queue, locked, if runnables are waiting in it (they are taken: `pending` is
    /// cleared). No lock otherwise.
    fn pending_queue(&self) -> Option<MutexGuard<'_, RemoteQueue>> {
        if !self.pending.load(Ordering::Acquire) {
            return None;
        }
        let queue = self.lock();
        self.pending.store(false, Ordering::Relaxed);
        Some(queue)
    }

    /// Move the runnables waiting here onto `local`.
    pub(crate) fn drain_into(&self, local: &mut VecDeque<Runnable>) {
        if let Some(mut queue) = self.pending_queue() {
            local.extend(queue.runnables.drain(..));
        }
    }

    /// Take every runnable waiting here, with the buffer, for close to drop; give the emptied
    /// buffer to [`Remote::keep_spare`].
    pub(crate) fn take_runnables(&self) -> Vec<Runnable> {
        self.pending_queue()
            .map(|mut queue| std::mem::take(&mut queue.runnables))
            .unwrap_or_default()
    }

    /// Keep a queue buffer for the next loop made on this thread, emptied here.
    pub(crate) fn keep_spare(mut buffer: Vec<Runnable>) {
        buffer.clear();
        if buffer.capacity() > 0 {
            let _ = LOCAL.try_with(|l| l.spare.set(buffer));
        }
    }

    /// Remember who to wake for the next runnable; false if one arrived meanwhile.
    pub(crate) fn park(&self, waker: &Waker) -> bool {
        let mut queue = self.lock();
        if !queue.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            queue.waker = Some(waker.clone());
        }
        !self.pending.load(Ordering::Acquire)
    }

    /// Park this thread until a runnable is pushed; false if `limit` passed first.
    pub(crate) fn wait_for_push(&self, limit: Duration) -> bool {
        let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
        let deadline = Instant::now() + limit;
        loop {
            if !self.park(&waker) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            thread::park_timeout(deadline - now);
        }
    }
}

impl Post for Remote {
    fn post(&self, job: Job) -> Result<(), Job> {
        let driver = {
            let mut queue = self.lock();
            if self.jobs_closed.load(Ordering::Acquire) {
                return Err(job);
            }
            queue.jobs.push_back(job);
            self.jobs_posted.store(true, Ordering::Release);
            queue.driver.clone()
        };
        if let Some(driver) = driver {
            driver.wake();
        }
        Ok(())
    }

    fn report(&self, ctx: ExceptionContext) -> Result<(), ExceptionContext> {
        let driver = {
            let mut queue = self.lock();
            // Marked before `reports_closed` is read, and that read is SeqCst as is close's
            // store and its read of this mark (`Inbox::close_reports`): either close sees the mark and
            // takes the lock (so it sees the report), or this sees the loop closed.
            self.reports_posted.store(true, Ordering::SeqCst);
            if self.reports_closed.load(Ordering::SeqCst) {
                return Err(ctx);
            }
            queue.reports.push_back(ctx);
            queue.driver.clone()
        };
        if let Some(driver) = driver {
            driver.wake();
        }
        Ok(())
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // No lock: nobody else holds the queue. Its runnables are gone (close drains them).
        if let Ok(queue) = self.queue.get_mut() {
            Remote::keep_spare(std::mem::take(&mut queue.runnables));
        }
    }
}

/// Wakes a thread parked in [`Remote::wait_for_push`].
struct ThreadWaker(thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// The `Send + Sync` way into a loop from any thread: spawn `Send` futures onto its executor,
/// post jobs for its driver. Tasks spawned here wake through the same queue as every other
/// task, so close tears them down the same way.
#[derive(Clone)]
pub(crate) struct Inbox(Arc<Remote>);

impl Inbox {
    pub(crate) fn new(remote: Arc<Remote>) -> Inbox {
        Inbox(remote)
    }

    /// Spawn the future `make` builds from the task's header (kept in the task's allocation);
    /// the task is queued to run on the loop's thread, and its runnable is returned unscheduled.
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
        let remote = self.0.clone();
        async_task::Builder::new()
            .metadata(header)
            .spawn(make, move |r| remote.schedule(r))
    }

    /// Queue `job` for the loop's driver; gives it back if the loop is closed.
    pub(crate) fn post(&self, job: Job) -> Result<(), Job> {
        self.0.post(job)
    }

    /// The loop as its tasks' headers keep it.
    pub(crate) fn owner(&self) -> Arc<dyn Post> {
        self.0.clone()
    }

    /// The loop has closed: operations on its sockets fail from now on (R2.4).
    pub(crate) fn shutdown_io(&self) {
        self.0.reactor.shutdown();
    }

    /// The loop's timers and I/O driver, as the threads that run it and the sockets and timers
    /// made on it keep them.
    pub(crate) fn reactor_home(&self) -> Arc<dyn ReactorHome> {
        self.0.clone()
    }

    /// Wake the driver so it looks at its queues again.
    pub(crate) fn wake_driver(&self) {
        let driver = self.0.lock().driver.clone();
        if let Some(driver) = driver {
            driver.wake();
        }
    }

    /// Take at most `max` posted jobs, oldest first, and the reports posted; remember `driver`
    /// as who to wake for the next ones; also whether more jobs are left. The bound keeps a
    /// thread that posts faster than the loop runs from starving the loop's tasks and timers.
    pub(crate) fn take_jobs(
        &self,
        driver: &Waker,
        max: usize,
    ) -> (Vec<Job>, Vec<ExceptionContext>, bool) {
        let mut queue = self.0.lock();
        if !queue.driver.as_ref().is_some_and(|w| w.will_wake(driver)) {
            queue.driver = Some(driver.clone());
        }
        let n = queue.jobs.len().min(max);
        let jobs = queue.jobs.drain(..n).collect();
        let reports = queue.reports.drain(..).collect();
        let more = !queue.jobs.is_empty();
        self.0.jobs_posted.store(more, Ordering::Relaxed);
        (jobs, reports, more)
    }

    /// Refuse jobs from now on, and refuse the queued ones (see `Delivery`): a user's callback
    /// is dropped, as Python drops a closed loop's pending callbacks; runner's own answer or say
    /// what they could not do. The driver's waker, so that close can reach the driver task.
    /// Once closed, nothing is queued any more and the driver's waker is gone: no lock.
    pub(crate) fn close_jobs(&self) -> Option<Waker> {
        if self.is_closed() {
            return None;
        }
        let (jobs, driver) = {
            let mut queue = self.0.lock();
            self.0.jobs_closed.store(true, Ordering::Release);
            self.0.jobs_posted.store(false, Ordering::Relaxed);
            (std::mem::take(&mut queue.jobs), queue.driver.take())
        };
        // Outside the lock: a job may own a task whose destructors post more jobs.
        for job in jobs {
            catch_quietly(|| job(Delivery::Refused));
        }
        driver
    }

    /// True if jobs wait to be run: close runs the loop for them (a cleanup sent home).
    pub(crate) fn has_jobs(&self) -> bool {
        self.0.jobs_posted.load(Ordering::Acquire) && !self.0.lock().jobs.is_empty()
    }

    /// The reports queued for the loop's handler, taken, and reports refused from now on (their
    /// makers write them to stderr). Close delivers these before it returns.
    ///
    /// No lock when no report was ever posted, the common case (see `Remote::report`), nor
    /// once closed (taken then, refused since).
    pub(crate) fn close_reports(&self) -> Vec<ExceptionContext> {
        if self.0.reports_closed.load(Ordering::Acquire)
            || self.0.reports_closed.swap(true, Ordering::SeqCst)
            || !self.0.reports_posted.load(Ordering::SeqCst)
        {
            return Vec::new();
        }
        self.0.lock().reports.drain(..).collect()
    }

    /// Close is cancelling the loop's tasks (or has stopped): tasks spawned meanwhile are
    /// noted for its next round.
    pub(crate) fn set_closing(&self, closing: bool) {
        self.0.closing.store(closing, Ordering::Release);
        if !closing {
            let late = std::mem::take(&mut lock(&self.0.spawned_in_close).0);
            drop(late);
        }
    }

    /// True while close cancels the loop's tasks.
    pub(crate) fn is_closing(&self) -> bool {
        self.0.closing.load(Ordering::Acquire)
    }

    /// `task` runs on another thread (a pool task, or a task pinned on a worker): close cancels
    /// it with the loop's own. Noted for close's next round if close is cancelling.
    pub(crate) fn track_off_loop(&self, task: &TaskRef) {
        self.0.off_loop_used.store(true, Ordering::Release);
        lock(&self.0.off_loop).push(task.clone(), |t| !t.is_finished());
        // After the push: a close that began meanwhile either saw the task in its snapshot or
        // is seen here (the lock orders the two).
        self.note_spawn(task);
    }

    /// Let go of the loop's tasks on other threads (close has stopped the pool). Their headers
    /// hold this queue: kept, they would keep each other alive.
    pub(crate) fn forget_off_loop(&self) {
        if !self.0.off_loop_used.load(Ordering::Acquire) {
            return;
        }
        let tasks = lock(&self.0.off_loop).take();
        drop(tasks);
    }

    /// The loop's unfinished tasks that run on other threads.
    pub(crate) fn off_loop_pending(&self) -> Vec<TaskRef> {
        if !self.0.off_loop_used.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut tasks = lock(&self.0.off_loop);
        tasks.sweep(|t| !t.is_finished());
        tasks.iter().cloned().collect()
    }

    /// A task was spawned: while close cancels, its next round gets it.
    pub(crate) fn note_spawn(&self, task: &TaskRef) {
        if !self.is_closing() {
            return;
        }
        let closer = {
            let mut late = lock(&self.0.spawned_in_close);
            late.0.push(task.clone());
            late.1.clone()
        };
        if let Some(closer) = closer {
            closer.wake();
        }
    }

    /// The tasks spawned while close cancels, since the last call; else `closer` is woken by
    /// the next one.
    pub(crate) fn take_spawned_in_close(&self, closer: &Waker) -> Vec<TaskRef> {
        let mut late = lock(&self.0.spawned_in_close);
        if late.0.is_empty() && !late.1.as_ref().is_some_and(|w| w.will_wake(closer)) {
            late.1 = Some(closer.clone());
        }
        std::mem::take(&mut late.0)
    }

    /// True once the loop is closed.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.0.jobs_closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A report posted from another thread while close takes the last ones is either taken by
    /// close or refused to its maker (who writes it to stderr), never left in the queue: close
    /// takes no lock when no report was posted, and the order of the marks is what keeps that
    /// honest. The closer follows the reporter from loop to loop, closing each just as the
    /// report on it starts, so that the two meet inside `report` often.
    #[test]
    fn a_report_racing_close_is_taken_or_refused_never_lost() {
        const LOOPS: usize = 20_000;
        let inboxes: Arc<Vec<Inbox>> =
            Arc::new((0..LOOPS).map(|_| Inbox::new(Remote::new())).collect());
        // The loop the reporter is about to report to, plus one (0: not started).
        let at = Arc::new(AtomicUsize::new(0));
        let reporter = {
            let (inboxes, at) = (inboxes.clone(), at.clone());
            thread::spawn(move || {
                let mut queued = Vec::with_capacity(LOOPS);
                for (i, inbox) in inboxes.iter().enumerate() {
                    at.store(i + 1, Ordering::SeqCst);
                    queued.push(inbox.0.report(ExceptionContext::new("late")).is_ok());
                }
                queued
            })
        };
        let mut taken = Vec::with_capacity(LOOPS);
        for (i, inbox) in inboxes.iter().enumerate() {
            while at.load(Ordering::SeqCst) <= i {
                std::hint::spin_loop();
            }
            taken.push(inbox.close_reports().len());
        }
        let queued = reporter.join().expect("reporter");
        let mut lost = 0;
        for (i, inbox) in inboxes.iter().enumerate() {
            let left = lock(&inbox.0.queue).reports.len();
            assert_eq!(taken[i] + left, usize::from(queued[i]), "loop {i}");
            lost += left;
        }
        assert_eq!(lost, 0, "reports left in closed loops' queues");
    }
}
