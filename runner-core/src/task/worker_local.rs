//! What a worker thread keeps for the `!Send` work only it may run: the async cleanups made on
//! it. A pool task may be polled by any worker, but a cleanup is not `Send` and stays on the
//! thread that made it, so each worker runs an `async_executor::LocalExecutor` of its own beside
//! the pool's, and a mailbox that other threads post jobs to (a `defer` guard dropped elsewhere
//! sends its cleanup home that way).
//!
//! A pool task whose future leaves cleanups hands them to its worker as one driver task, which
//! polls them with the pool task current (so cleanups they leave join the list), and the pool
//! task ends once the driver says [`Done`]. The worker goes on running other pool tasks
//! meanwhile: a cleanup never blocks it.
//!
//! The local executor also runs the `!Send` tasks `runner::spawn` makes on a worker (pinned to
//! it), and the worker keeps the generators and finalized streams first iterated on it, which
//! close closes there (R5.4). A worker told to stop finishes its local work first, still running
//! the pool meanwhile, since that work may wait for pool tasks.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as Cx, Poll, Waker};

use async_executor::LocalExecutor;
use event_listener::Event;

use crate::driver::io::Waiter;
use crate::driver::park::block_on;
use crate::error::catch_quietly;
use crate::header::TaskRef;
use crate::lock::lock;
use crate::pool::Pool;
use crate::post::{Delivery, Job, Post};
use crate::pruned::Pruned;
use crate::queue::Inbox;
use crate::report::ExceptionContext;
use crate::task::current;
use crate::task::scope::{self, Cleanup, Closable};

/// A worker thread's local executor and mailbox.
pub(crate) struct WorkerLocal {
    executor: LocalExecutor<'static>,
    mailbox: Arc<Mailbox>,
    /// The loop the worker's pool belongs to.
    home: Inbox,
    /// Local tasks not finished yet (cleanups, finalizers, pinned tasks, the mailbox's reader).
    outstanding: Cell<usize>,
    /// Notified when `outstanding` drops to zero.
    idle: Event,
    /// Generators and finalized streams first iterated on this worker, held weakly.
    asyncgens: RefCell<Pruned<Weak<dyn Closable>>>,
    asyncgens_shutdown_called: Cell<bool>,
    /// The pool was told to stop (shared with it): pinned tasks are refused from then on.
    stopping: Arc<AtomicBool>,
}

thread_local! {
    /// The worker this thread is, if it is one.
    static LOCAL: RefCell<Option<Rc<WorkerLocal>>> = const { RefCell::new(None) };
}

/// Jobs other threads post to a worker; refused once the worker is finishing.
struct Mailbox {
    /// The jobs, and whether the mailbox is closed.
    jobs: Mutex<(Vec<Job>, bool)>,
    posted: Event,
}

impl Post for Mailbox {
    fn post(&self, job: Job) -> Result<(), Job> {
        let mut jobs = lock(&self.jobs);
        if jobs.1 {
            return Err(job);
        }
        jobs.0.push(job);
        drop(jobs);
        self.posted.notify(1);
        Ok(())
    }
}

impl Mailbox {
    /// The jobs posted so far, and whether the mailbox is closed.
    fn take(&self) -> (Vec<Job>, bool) {
        let mut jobs = lock(&self.jobs);
        (std::mem::take(&mut jobs.0), jobs.1)
    }

    fn close(&self) {
        lock(&self.jobs).1 = true;
        self.posted.notify(usize::MAX);
    }
}

impl WorkerLocal {
    /// Make this thread a worker of the loop behind `home` for the guard's life: its cleanups
    /// go to a local executor.
    pub(crate) fn enter(home: Inbox, stopping: Arc<AtomicBool>) -> WorkerGuard {
        let local = Rc::new(WorkerLocal {
            executor: LocalExecutor::new(),
            mailbox: Arc::new(Mailbox {
                jobs: Mutex::default(),
                posted: Event::new(),
            }),
            home,
            outstanding: Cell::new(0),
            idle: Event::new(),
            asyncgens: RefCell::default(),
            asyncgens_shutdown_called: Cell::new(false),
            stopping,
        });
        let mailbox = local.mailbox.clone();
        local
            .spawn_counted(async move {
                loop {
                    let (jobs, closed) = mailbox.take();
                    if jobs.is_empty() {
                        if closed {
                            return;
                        }
                        let listener = mailbox.posted.listen();
                        if lock(&mailbox.jobs).0.is_empty() {
                            listener.await;
                        }
                        continue;
                    }
                    for job in jobs {
                        catch_quietly(|| job(Delivery::Run));
                    }
                }
            })
            .detach();
        let prev = LOCAL.with(|l| l.replace(Some(local.clone())));
        WorkerGuard { local, prev }
    }

    /// Run `fut` to completion on this thread, running local tasks meanwhile; idle, the thread
    /// waits on the loop's reactor (I/O and timers) like the loop's own thread.
    pub(crate) fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
        block_on(
            Some(self.home.reactor_home()),
            Waiter::Worker,
            self.executor.run(fut),
        )
    }

    /// The worker is stopping: refuse new pinned tasks, close the generators still open here
    /// and the mailbox (running what was posted), then run local tasks until none is left. The
    /// pool's tasks run meanwhile too: a cleanup may wait for one (close has cancelled them).
    pub(crate) fn finish(self: &Rc<Self>, pool: &Pool, index: usize) {
        self.stopping.store(true, Ordering::Release);
        self.close_asyncgens(None);
        self.mailbox.close();
        self.block_on(pool.run(index, async {
            while self.outstanding.get() > 0 {
                let listener = self.idle.listen();
                if self.outstanding.get() > 0 {
                    listener.await;
                }
            }
        }));
    }

    /// Run `fut` on this worker, counted until it ends or is dropped.
    fn spawn(self: &Rc<Self>, fut: Cleanup) {
        self.spawn_counted(fut).detach();
    }

    /// Run `fut` on this worker, pinned to it, counted until it ends or is dropped; refused
    /// once the pool is told to stop or the loop has closed (a worker left behind by a stuck
    /// poll comes back after close): the future is given back, to be dropped as refused.
    pub(crate) fn spawn_pinned<F>(self: &Rc<Self>, fut: F) -> Result<async_task::Task<F::Output>, F>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        match self.stopping.load(Ordering::Acquire) || self.home.is_closed() {
            true => Err(fut),
            false => Ok(self.spawn_counted(fut)),
        }
    }

    fn spawn_counted<F>(self: &Rc<Self>, fut: F) -> async_task::Task<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.outstanding.set(self.outstanding.get() + 1);
        let counted = Counted(self.clone());
        self.executor.spawn(async move {
            let _counted = counted;
            let mut fut = std::pin::pin!(fut);
            poll_fn(|cx| {
                // The worker is busy with it: the pool must not count on it meanwhile.
                crate::pool::running_local_work();
                fut.as_mut().poll(cx)
            })
            .await
        })
    }

    /// The loop the worker's pool belongs to.
    pub(crate) fn home(&self) -> &Inbox {
        &self.home
    }

    /// A generator or finalized stream was first iterated on this worker.
    pub(crate) fn register_asyncgen(
        &self,
        what: Weak<dyn Closable>,
        describe: &dyn Fn() -> String,
    ) {
        if self.asyncgens_shutdown_called.get() {
            scope::report(
                Some(&*self.home.owner()),
                ExceptionContext::new(format!(
                    "asynchronous generator was scheduled after shutdown_asyncgens(): {}",
                    describe()
                )),
            );
        }
        self.asyncgens
            .borrow_mut()
            .push(what, |g| g.strong_count() > 0);
    }

    /// Close every generator and finalized stream still open on this worker, all at once, as
    /// local work (R5.4); `signal` is dropped once all are closed.
    fn close_asyncgens(self: &Rc<Self>, signal: Option<DoneGuard>) {
        self.asyncgens_shutdown_called.set(true);
        let gens = self.asyncgens.borrow_mut().take();
        let mut closing: Vec<Cleanup> = gens
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|g| g.close_now())
            .collect();
        let Some(first) = closing.first().map(Cleanup::what) else {
            return;
        };
        let all = poll_fn(move |cx| {
            closing.retain_mut(|c| Pin::new(c).poll(cx).is_pending());
            match closing.is_empty() {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        });
        self.spawn(Cleanup::new(
            async move {
                let _signal = signal;
                all.await;
            },
            first,
        ));
    }

    /// Where other threads post jobs for this worker.
    pub(crate) fn mailbox(&self) -> Arc<dyn Post> {
        self.mailbox.clone()
    }
}

/// Counts a local task as outstanding until dropped.
struct Counted(Rc<WorkerLocal>);

impl Drop for Counted {
    fn drop(&mut self) {
        let left = self.0.outstanding.get() - 1;
        self.0.outstanding.set(left);
        if left == 0 {
            self.0.idle.notify(usize::MAX);
        }
    }
}

/// This thread is a worker while it lives; undone on drop.
pub(crate) struct WorkerGuard {
    local: Rc<WorkerLocal>,
    prev: Option<Rc<WorkerLocal>>,
}

impl WorkerGuard {
    /// See [`WorkerLocal::finish`].
    pub(crate) fn finish(&self, pool: &Pool, index: usize) {
        self.local.finish(pool, index);
    }
}

impl std::ops::Deref for WorkerGuard {
    type Target = WorkerLocal;

    fn deref(&self) -> &WorkerLocal {
        &self.local
    }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        let _ = LOCAL.try_with(|l| *l.borrow_mut() = prev);
    }
}

/// The worker this thread is, if it is one.
pub(crate) fn current() -> Option<Rc<WorkerLocal>> {
    LOCAL.try_with(|l| l.borrow().clone()).ok().flatten()
}

/// Close the generators and finalized streams open on the worker behind `mailbox` (close's
/// second step, R2.2): `Some` wait that ends when they are closed; `None` if the worker has
/// stopped taking jobs.
pub(crate) fn close_asyncgens_on(mailbox: &dyn Post) -> Option<Arc<Done>> {
    let done = Arc::new(Done::default());
    let signal = DoneGuard(done.clone());
    let job: Job = Box::new(move |_| match current() {
        Some(local) => local.close_asyncgens(Some(signal)),
        None => drop(signal),
    });
    mailbox.post(job).ok().map(|()| done)
}

/// Run a cleanup that belongs to no task on this worker. Gives it back if this thread is not a
/// worker.
pub(crate) fn spawn_finalizer(cleanup: Cleanup) -> Result<(), Cleanup> {
    match current() {
        Some(local) => {
            local.spawn(cleanup);
            Ok(())
        }
        None => Err(cleanup),
    }
}

/// Run the cleanups a pool task left, on this worker, with the task current so that cleanups
/// they leave join them; gives them back if this thread is not a worker. The task ends once the
/// returned [`Done`] is.
pub(crate) fn drive_task_cleanups(
    task: TaskRef,
    mut list: Vec<Cleanup>,
) -> Result<Arc<Done>, Vec<Cleanup>> {
    let Some(local) = current() else {
        return Err(list);
    };
    let done = Arc::new(Done::default());
    let signal = DoneGuard(done.clone());
    local
        .spawn_counted(async move {
            let _signal = signal;
            poll_fn(|cx| {
                let entered = current::enter(task.header(), Some(task.waker()));
                // Cleanups are `guarded` and do not unwind; were one to, the task must still stop
                // being current before this returns.
                let polled = catch_quietly(|| loop {
                    list.retain_mut(|cleanup| Pin::new(cleanup).poll(cx).is_pending());
                    match current::take_cleanups(entered.start) {
                        Some(more) => list.extend(more),
                        None => break,
                    }
                });
                let late = current::leave(&entered);
                if polled.is_none() {
                    list.clear();
                }
                list.extend(late.unwrap_or_default());
                match list.is_empty() {
                    true => Poll::Ready(()),
                    false => Poll::Pending,
                }
            })
            .await;
        })
        .detach();
    Ok(done)
}

/// Set once some work on another thread has ended (or was dropped unfinished); wakes who waits.
#[derive(Default)]
pub(crate) struct Done {
    set: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Done {
    /// Ready once set; else `cx`'s waker is woken when it is.
    pub(crate) fn poll_done(&self, cx: &mut Cx<'_>) -> Poll<()> {
        if self.set.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        *lock(&self.waker) = Some(cx.waker().clone());
        match self.set.load(Ordering::Acquire) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    fn set(&self) {
        self.set.store(true, Ordering::Release);
        if let Some(waker) = lock(&self.waker).take() {
            waker.wake();
        }
    }
}

/// Sets its [`Done`] when dropped: when the work it travels with ends, or is dropped unfinished.
pub(crate) struct DoneGuard(pub(crate) Arc<Done>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.set();
    }
}
