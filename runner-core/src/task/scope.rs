//! The part of a loop its tasks use: the registry close cancels, the async cleanups tasks are
//! still running, the generators to close at shutdown, and where reports go. While a loop runs,
//! its scope is current on the thread, so a task's poll finds it without knowing the loop.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::executor::Executor;
use crate::header::TaskRef;
use crate::post::{Job, Post};
use crate::queue::Inbox;
use crate::report::{write_to_stderr, ExceptionContext, TaskInfo};
use crate::task::registry::{Registry, Slot};

/// An async cleanup: a dropped `defer` guard, a closing generator or stream.
pub(crate) type Cleanup = Pin<Box<dyn Future<Output = ()>>>;

/// Something the loop closes at `shutdown_asyncgens`: a generator or a finalized stream.
pub(crate) trait Closable {
    /// Take what must be closed and return its cleanup; `None` if there is nothing to do.
    fn close_now(&self) -> Option<Cleanup>;
    /// How reports name it: where it was created.
    fn describe(&self) -> String;
}

/// How the loop's exception handler is reached.
type Reporter = Rc<dyn Fn(ExceptionContext)>;

/// Spawns a cleanup that belongs to no task as a task of its own (a finalizer). Spawning needs
/// the task future, a layer above this one: the loop hands its scope the function.
pub(crate) type FinalizerSpawner = fn(&Rc<Scope>, Cleanup);

/// See the module documentation.
pub(crate) struct Scope {
    pub(crate) executor: Executor,
    pub(crate) inbox: Inbox,
    pub(crate) tasks: RefCell<Registry>,
    /// Async cleanups of tasks still running them, by task id.
    cleanups: RefCell<HashMap<u64, Vec<Cleanup>>>,
    /// Finalizer tasks: close waits for them, never cancels them.
    pub(crate) finalizers: RefCell<Vec<TaskRef>>,
    /// Generators and finalized streams iterated on this loop, held weakly.
    pub(crate) asyncgens: RefCell<Vec<Weak<dyn Closable>>>,
    pub(crate) asyncgens_shutdown_called: Cell<bool>,
    /// Close is cancelling the loop's tasks.
    pub(crate) closing: Cell<bool>,
    reporter: RefCell<Option<Reporter>>,
    spawn_finalizer: FinalizerSpawner,
}

thread_local! {
    /// The scope of the loop running on this thread, if any.
    static CURRENT: RefCell<Option<Rc<Scope>>> = const { RefCell::new(None) };
    /// The running loop's slow-poll threshold when it is in debug mode, else `None`: the one
    /// thing every poll reads, kept where reading it costs a load.
    static SLOW_POLL: Cell<Option<Duration>> = const { Cell::new(None) };
}

impl Scope {
    pub(crate) fn new(spawn_finalizer: FinalizerSpawner) -> Rc<Scope> {
        let executor = Executor::new();
        Rc::new(Scope {
            inbox: executor.inbox(),
            executor,
            tasks: RefCell::default(),
            cleanups: RefCell::default(),
            finalizers: RefCell::default(),
            asyncgens: RefCell::default(),
            asyncgens_shutdown_called: Cell::new(false),
            closing: Cell::new(false),
            reporter: RefCell::new(None),
            spawn_finalizer,
        })
    }

    /// Route this scope's reports to `reporter` (the loop's exception handler).
    pub(crate) fn set_reporter(&self, reporter: Reporter) {
        *self.reporter.borrow_mut() = Some(reporter);
    }

    /// Report `ctx` to the loop's exception handler.
    pub(crate) fn report(&self, ctx: ExceptionContext) {
        let reporter = self.reporter.borrow().clone();
        match reporter {
            Some(reporter) => reporter(ctx),
            None => write_to_stderr(&ctx),
        }
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.inbox.is_closed()
    }

    /// Run a cleanup that belongs to no task on this loop; close waits for it.
    pub(crate) fn spawn_finalizer(self: &Rc<Self>, cleanup: Cleanup) {
        (self.spawn_finalizer)(self, cleanup);
    }

    pub(crate) fn take_task_cleanups(&self, task_id: u64) -> Vec<Cleanup> {
        self.cleanups
            .borrow_mut()
            .remove(&task_id)
            .unwrap_or_default()
    }

    pub(crate) fn put_task_cleanups(&self, task_id: u64, cleanups: Vec<Cleanup>) {
        self.cleanups.borrow_mut().insert(task_id, cleanups);
    }

    /// Every task's pending cleanups, for close to finish once the tasks are torn down.
    pub(crate) fn drain_task_cleanups(&self) -> Vec<Cleanup> {
        let mut all = self.cleanups.borrow_mut();
        all.drain().flat_map(|(_, c)| c).collect()
    }

    /// How many async cleanups tasks are running.
    pub(crate) fn task_cleanup_count(&self) -> usize {
        self.cleanups.borrow().values().map(Vec::len).sum()
    }

    /// A generator or finalized stream was first iterated on this loop.
    pub(crate) fn register_asyncgen(
        &self,
        what: Weak<dyn Closable>,
        describe: &dyn Fn() -> String,
    ) {
        if self.asyncgens_shutdown_called.get() {
            self.report(ExceptionContext::new(format!(
                "asynchronous generator was scheduled after shutdown_asyncgens(): {}",
                describe()
            )));
        }
        let mut gens = self.asyncgens.borrow_mut();
        if gens.len() >= 64 && gens.len().is_power_of_two() {
            gens.retain(|g| g.strong_count() > 0);
        }
        gens.push(what);
    }
}

/// Makes a loop's scope current on this thread while the loop runs; undone on drop.
pub(crate) struct ScopeGuard {
    prev: Option<Rc<Scope>>,
    prev_slow_poll: Option<Duration>,
}

impl ScopeGuard {
    pub(crate) fn enter(scope: &Rc<Scope>, slow_poll: Option<Duration>) -> ScopeGuard {
        ScopeGuard {
            prev: CURRENT.with(|c| c.borrow_mut().replace(scope.clone())),
            prev_slow_poll: SLOW_POLL.with(|s| s.replace(slow_poll)),
        }
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        let _ = CURRENT.try_with(|c| *c.borrow_mut() = prev);
        let _ = SLOW_POLL.try_with(|s| s.set(self.prev_slow_poll));
    }
}

/// The scope of the loop running on this thread, if any.
#[inline]
pub(crate) fn current() -> Option<Rc<Scope>> {
    CURRENT.with(|c| c.borrow().clone())
}

#[inline]
fn with_current<R>(f: impl FnOnce(&Scope) -> R) -> Option<R> {
    CURRENT.with(|c| c.borrow().as_deref().map(f))
}

/// In debug mode, how long a poll may take before it is reported; `None` when debug is off.
#[inline]
pub(crate) fn slow_poll_threshold() -> Option<Duration> {
    SLOW_POLL.with(Cell::get)
}

/// Change the running loop's slow-poll threshold (its debug settings changed).
pub(crate) fn set_slow_poll_threshold(threshold: Option<Duration>) {
    SLOW_POLL.with(|s| s.set(threshold));
}

/// True while the running loop's close is cancelling its tasks.
pub(crate) fn is_closing() -> bool {
    with_current(|s| s.closing.get()).unwrap_or(false)
}

/// A task spawned from another thread joins the registry at its first poll; during close it is
/// cancelled straight away.
pub(crate) fn register_remote(task: TaskRef) -> Slot {
    with_current(|s| {
        if s.closing.get() {
            task.cancel();
        }
        Slot::At(s.tasks.borrow_mut().insert(task, true))
    })
    .unwrap_or(Slot::Never)
}

/// A finished task leaves the registry.
#[inline]
pub(crate) fn deregister(index: usize) {
    with_current(|s| s.tasks.borrow_mut().remove(index));
}

/// Report `ctx` on the running loop, else on the loop `owner` (posted to its thread), else to
/// stderr.
pub(crate) fn report(owner: Option<&dyn Post>, ctx: ExceptionContext) {
    if let Some(scope) = current() {
        scope.report(ctx);
        return;
    }
    let job: Job = Box::new(move || match current() {
        Some(scope) => scope.report(ctx),
        None => write_to_stderr(&ctx),
    });
    match owner {
        Some(owner) => {
            if let Err(job) = owner.post(job) {
                job();
            }
        }
        None => job(),
    }
}

/// "Executing <what> took 0.153 seconds", reported like [`report`].
pub(crate) fn report_slow(
    what: &str,
    took: Duration,
    task: Option<TaskInfo>,
    owner: Option<&dyn Post>,
) {
    let mut ctx = ExceptionContext::new(format!(
        "Executing {what} took {:.3} seconds",
        took.as_secs_f64()
    ));
    if let Some(task) = task {
        ctx = ctx.with_task(task);
    }
    report(owner, ctx);
}
