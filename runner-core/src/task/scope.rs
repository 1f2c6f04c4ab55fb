//! The part of a loop its tasks use: the registry close cancels, the async cleanups tasks are
//! still running, the generators to close at shutdown, and where reports go. While a loop runs,
//! its scope is current on the thread, so a task's poll finds it without knowing the loop.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context as Cx, Poll};
use std::time::Duration;

use crate::executor::Executor;
use crate::header::TaskRef;
use crate::post::{report_to_this_threads_loop, Post};
use crate::pruned::Pruned;
use crate::queue::Inbox;
use crate::report::{source_location, write_to_stderr, ExceptionContext, TaskInfo};
use crate::task::registry::{Registry, Slot};

/// An async cleanup: a dropped `defer` guard's, a generator's close, a finalized stream's
/// cleanup. Named, so that a report can say which cleanup a close waits for or cut short.
pub(crate) struct Cleanup {
    fut: Pin<Box<dyn Future<Output = ()>>>,
    what: What,
}

impl Cleanup {
    pub(crate) fn new(fut: impl Future<Output = ()> + 'static, what: What) -> Cleanup {
        Cleanup {
            fut: Box::pin(fut),
            what,
        }
    }

    /// What the cleanup is, for reports.
    pub(crate) fn what(&self) -> What {
        self.what
    }
}

impl Future for Cleanup {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<()> {
        self.fut.as_mut().poll(cx)
    }
}

/// Which cleanup, and where its owner was made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct What {
    pub(crate) kind: CleanupKind,
    pub(crate) at: &'static Location<'static>,
}

/// The kinds of async cleanup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CleanupKind {
    /// A dropped `defer` guard's cleanup: the dropping task's `finally`.
    Defer,
    /// An `AsyncGen`'s close.
    CloseGenerator,
    /// A `Finalized` stream's cleanup.
    CloseStream,
}

impl What {
    /// A generator's or a finalized stream's close (Python runs those as tasks of their own),
    /// not a deferred cleanup.
    pub(crate) fn is_close(&self) -> bool {
        self.kind != CleanupKind::Defer
    }
}

/// "deferred cleanup created at src/main.rs:4:9", "close of <AsyncGen created at ..>", ...
impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = source_location(self.at);
        match self.kind {
            CleanupKind::Defer => write!(f, "deferred cleanup created at {at}"),
            CleanupKind::CloseGenerator => write!(f, "close of <AsyncGen created at {at}>"),
            CleanupKind::CloseStream => {
                write!(f, "cleanup of <Finalized stream created at {at}>")
            }
        }
    }
}

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
    /// Finalizer tasks, and the cleanup each runs: close waits for them, never cancels them.
    pub(crate) finalizers: RefCell<Pruned<(TaskRef, What)>>,
    /// Generators and finalized streams iterated on this loop, held weakly.
    pub(crate) asyncgens: RefCell<Pruned<Weak<dyn Closable>>>,
    pub(crate) asyncgens_shutdown_called: Cell<bool>,
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

    /// The async cleanups task `task_id` is running, named.
    pub(crate) fn task_cleanups(&self, task_id: u64) -> Vec<What> {
        let cleanups = self.cleanups.borrow();
        let list = cleanups
            .get(&task_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        list.iter().map(Cleanup::what).collect()
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
        self.asyncgens
            .borrow_mut()
            .push(what, |g| g.strong_count() > 0);
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
    CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
}

#[inline]
fn with_current<R>(f: impl FnOnce(&Scope) -> R) -> Option<R> {
    CURRENT
        .try_with(|c| c.borrow().as_deref().map(f))
        .ok()
        .flatten()
}

/// In debug mode, how long a poll may take before it is reported; `None` when debug is off.
#[inline]
pub(crate) fn slow_poll_threshold() -> Option<Duration> {
    SLOW_POLL.try_with(Cell::get).ok().flatten()
}

/// Change the running loop's slow-poll threshold (its debug settings changed).
pub(crate) fn set_slow_poll_threshold(threshold: Option<Duration>) {
    SLOW_POLL.with(|s| s.set(threshold));
}

/// A task spawned from another thread joins the registry at its first poll; while close
/// cancels, its next round gets it.
pub(crate) fn register_remote(task: TaskRef) -> Slot {
    with_current(|s| {
        s.inbox.note_spawn(&task);
        Slot::At(s.tasks.borrow_mut().insert(task, true))
    })
    .unwrap_or(Slot::Never)
}

/// A finished task leaves the registry.
#[inline]
pub(crate) fn deregister(index: usize) {
    with_current(|s| s.tasks.borrow_mut().remove(index));
}

/// Report `ctx` on the running loop, else on the loop `owner` (queued for its thread), else on
/// the loop this thread reports to (a worker's), else to stderr.
pub(crate) fn report(owner: Option<&dyn Post>, ctx: ExceptionContext) {
    if let Some(scope) = current() {
        scope.report(ctx);
        return;
    }
    let ctx = match owner {
        Some(owner) => match owner.report(ctx) {
            Ok(()) => return,
            Err(ctx) => ctx,
        },
        None => ctx,
    };
    if let Err(ctx) = report_to_this_threads_loop(ctx) {
        write_to_stderr(&ctx);
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
