//! What a worker thread keeps for the `!Send` work only it may run: the async cleanups made on
//! it. A pool task may be polled by any worker, but a cleanup is not `Send` and stays on the
//! thread that made it, so each worker runs an `async_executor::LocalExecutor` of its own beside
//! the pool's, and a mailbox that other threads post jobs to (a `defer` guard dropped elsewhere
//! sends its cleanup home that way).
//!
//! A pool task whose future leaves cleanups hands them to its worker as one driver task, which
//! polls them with the pool task current (so cleanups they leave join the list), and the pool
//! task ends once the driver says [`Done`]. The worker goes on running other pool tasks
//! meanwhile: a cleanup never blocks it. A worker told to stop finishes its local work first.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as Cx, Poll, Waker};

use async_executor::LocalExecutor;
use event_listener::Event;

use crate::error::catch_quietly;
use crate::header::TaskRef;
use crate::lock::lock;
use crate::post::{Job, Post};
use crate::task::current;
use crate::task::scope::Cleanup;

/// A worker thread's local executor and mailbox.
pub(crate) struct WorkerLocal {
    executor: LocalExecutor<'static>,
    mailbox: Arc<Mailbox>,
    /// Local tasks not finished yet (cleanups, finalizers, the mailbox's reader).
    outstanding: Cell<usize>,
    /// Notified when `outstanding` drops to zero.
    idle: Event,
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
    /// Make this thread a worker for the guard's life: its cleanups go to a local executor.
    pub(crate) fn enter() -> WorkerGuard {
        let local = Rc::new(WorkerLocal {
            executor: LocalExecutor::new(),
            mailbox: Arc::new(Mailbox {
                jobs: Mutex::default(),
                posted: Event::new(),
            }),
            outstanding: Cell::new(0),
            idle: Event::new(),
        });
        let mailbox = local.mailbox.clone();
        local.spawn(Box::pin(async move {
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
                    catch_quietly(job);
                }
            }
        }));
        let prev = LOCAL.with(|l| l.replace(Some(local.clone())));
        WorkerGuard { local, prev }
    }

    /// Run `fut` to completion on this thread, running local tasks meanwhile.
    pub(crate) fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
        async_io::block_on(self.executor.run(fut))
    }

    /// The worker is stopping: close the mailbox (running what was posted), then run local
    /// tasks until none is left.
    pub(crate) fn finish(&self) {
        self.mailbox.close();
        self.block_on(async {
            while self.outstanding.get() > 0 {
                let listener = self.idle.listen();
                if self.outstanding.get() > 0 {
                    listener.await;
                }
            }
        });
    }

    /// Run `fut` on this worker, counted until it ends or is dropped.
    fn spawn(self: &Rc<Self>, fut: Cleanup) {
        self.outstanding.set(self.outstanding.get() + 1);
        let counted = Counted(self.clone());
        self.executor
            .spawn(async move {
                let _counted = counted;
                fut.await;
            })
            .detach();
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
    local.spawn(Box::pin(async move {
        let _signal = signal;
        poll_fn(|cx| {
            let entered = current::enter(task.header(), Some(task.waker()));
            // Cleanups are `guarded` and do not unwind; were one to, the task must still stop
            // being current before this returns.
            let polled = catch_quietly(|| loop {
                list.retain_mut(|cleanup| cleanup.as_mut().poll(cx).is_pending());
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
    }));
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
