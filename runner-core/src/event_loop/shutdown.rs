//! Closing a loop: cancelling its tasks in bounded rounds, closing its async generators,
//! joining its default executor, saying what a long wait waits for, and tearing the loop down.

use std::cell::Cell;
use std::future::poll_fn;
use std::rc::Weak;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::event_loop::api::{EventLoop, LoopInner};
use crate::header::TaskRef;
use crate::report::{source_location, write_stderr, write_to_stderr, ExceptionContext};
use crate::task::cleanup::{is_abandoning, run_now};
use crate::task::scope::Cleanup;
use crate::workers::JOIN_WAIT;

/// How many times close cancels the tasks pending on the loop before it gives up on the ones
/// still being spawned.
const CANCEL_ROUNDS: usize = 8;

/// How long a run after Ctrl-C, or a close, waits before it says what it is waiting for.
pub(crate) const NOTICE_AFTER: Duration = Duration::from_secs(1);

/// What close's waiting steps would wait for: close skips the steps with nothing to do (each
/// run of the loop costs an allocation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CloseWork {
    /// Tasks to cancel and wait for.
    pub(crate) tasks: bool,
    /// Generators, finalized streams or finalizers to close or wait for (cancelled tasks may
    /// leave more).
    pub(crate) asyncgens: bool,
    /// A started default executor to join.
    pub(crate) executor: bool,
    /// Worker threads to stop and join.
    pub(crate) workers: bool,
}

impl CloseWork {
    /// Whether any waiting step has something to do.
    pub(crate) fn any(self) -> bool {
        self.tasks || self.asyncgens || self.executor || self.workers
    }
}

impl EventLoop {
    /// Close every generator and finalized stream still open on the loop, concurrently, and
    /// wait for cleanups already scheduled on it. Failures are reported as "an error occurred
    /// during closing of asynchronous generator" naming the generator.
    pub async fn shutdown_asyncgens(&self) {
        let scope = &self.inner.scope;
        scope.asyncgens_shutdown_called.set(true);
        loop {
            let gens = std::mem::take(&mut *scope.asyncgens.borrow_mut());
            let mut closing: Vec<Cleanup> = gens
                .iter()
                .filter_map(Weak::upgrade)
                .filter_map(|g| g.close_now())
                .collect();
            let finalizers = std::mem::take(&mut *scope.finalizers.borrow_mut());
            if closing.is_empty() && finalizers.is_empty() {
                return;
            }
            poll_fn(|cx| {
                closing.retain_mut(|c| c.as_mut().poll(cx).is_pending());
                match closing.is_empty() {
                    true => Poll::Ready(()),
                    false => Poll::Pending,
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

    /// Stop the worker threads and wait until they have exited, each after finishing the
    /// async cleanups made on it, at most `timeout`. When the time runs out a report says so;
    /// the threads left running do not keep the process alive.
    pub(crate) async fn shutdown_workers(&self, timeout: Duration) {
        let workers = self.inner.workers.borrow().clone();
        if let Some(workers) = workers {
            workers
                .join(timeout, |ctx| self.call_exception_handler(ctx))
                .await;
        }
    }

    /// What each close step would wait for.
    pub(crate) fn close_work(&self) -> CloseWork {
        let scope = &self.inner.scope;
        let pool_pending = self
            .inner
            .workers
            .borrow()
            .as_ref()
            .is_some_and(|w| !w.pending().is_empty());
        CloseWork {
            tasks: scope.tasks.borrow().has_pending() || pool_pending,
            asyncgens: scope
                .asyncgens
                .borrow()
                .iter()
                .any(|g| g.strong_count() > 0)
                || scope.finalizers.borrow().iter().any(|t| !t.is_finished()),
            executor: !self.inner.default_executor.is_idle(),
            workers: self.inner.workers.borrow().is_some(),
        }
    }

    /// Cancel every pending task, and every task spawned while they are cancelled, and wait for
    /// all of them to finish.
    ///
    /// Python's runner cancels one snapshot of the pending tasks and waits for it. Here tasks
    /// spawned while that snapshot is cancelled (from destructors, say) are cancelled in further
    /// rounds, at most `CANCEL_ROUNDS` in all, so that close ends even when every cancelled task
    /// spawns a replacement. What is still pending after the last round is reported ("tasks kept
    /// being spawned during runner shutdown") and dropped when the loop closes.
    pub(crate) async fn cancel_all_tasks(&self) {
        let scope = &self.inner.scope;
        let workers = self.inner.workers.borrow().clone();
        let pending = || {
            let mut pending = scope.tasks.borrow().pending();
            if let Some(workers) = &workers {
                pending.extend(workers.pending());
            }
            pending
        };
        scope.closing.set(true);
        if let Some(workers) = &workers {
            workers.set_closing(true);
        }
        for _ in 0..CANCEL_ROUNDS {
            let pending = pending();
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
        let left = pending();
        if let Some(first) = left.first() {
            let (n, was) = match left.len() {
                1 => (1, "task was"),
                n => (n, "tasks were"),
            };
            self.call_exception_handler(
                ExceptionContext::new(format!(
                    "tasks kept being spawned during runner shutdown: after {CANCEL_ROUNDS} \
                     rounds of cancelling, {n} {was} still pending; they are dropped without \
                     being waited for"
                ))
                .with_task(first.info()),
            );
        }
        scope.closing.set(false);
        if let Some(workers) = &workers {
            workers.set_closing(false);
        }
    }

    /// What a run or close still waits for, one line each: unfinished tasks with their name and
    /// spawn site (`main` first, if given and unfinished), their pending async cleanups, and the
    /// blocking jobs still running with their call site and running time.
    pub(crate) fn pending_work(&self, main: Option<&TaskRef>) -> Vec<String> {
        const MOST_TASKS: usize = 10;
        let scope = &self.inner.scope;
        let mut lines = Vec::new();
        let mut tasks: Vec<TaskRef> = main
            .filter(|m| !m.is_finished())
            .cloned()
            .into_iter()
            .collect();
        tasks.extend(scope.tasks.borrow().unfinished_refs());
        if let Some(workers) = &*self.inner.workers.borrow() {
            tasks.extend(workers.pending());
        }
        for task in tasks.iter().take(MOST_TASKS) {
            lines.push(task.info().to_string());
        }
        if tasks.len() > MOST_TASKS {
            lines.push(format!("and {} more tasks", tasks.len() - MOST_TASKS));
        }
        let cleanups = scope.task_cleanup_count();
        if cleanups > 0 {
            lines.push(format!(
                "{cleanups} async cleanup(s) those tasks are running"
            ));
        }
        if let Some(workers) = &*self.inner.workers.borrow() {
            let running = workers.finishing();
            if running > 0 {
                lines.push(format!(
                    "{running} worker thread(s) finishing the async cleanups made on them"
                ));
            }
        }
        for (at, running) in self.inner.default_executor.running_jobs() {
            lines.push(format!(
                "a to_thread job started at {}, running for {:.1} s",
                source_location(at),
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
        deadline: Instant,
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
            write_stderr(format_args!("{text}"));
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
        let driver = self.inner.scope.inbox.close_jobs();
        self.inner.callbacks.clear();
        self.inner.default_executor.shutdown_nowait();
        // The pool's tasks were cancelled and waited for by close's first step; its threads
        // are stopped and joined (not after a second Ctrl-C), then what is left on it dropped.
        if let Some(workers) = self.inner.workers.borrow_mut().take() {
            let wait = (!is_abandoning()).then_some(JOIN_WAIT);
            workers.stop(wait, |ctx| self.call_exception_handler(ctx));
        }
        self.inner.drop_tasks(driver);
        // Cleanups the torn-down tasks were still running have no loop left: finish them now.
        run_now(self.inner.scope.drain_task_cleanups());
    }
}

impl LoopInner {
    /// Drop every task still on the loop (their destructors run), waking the waiting ones (and
    /// the driver) so that the executor gets hold of them.
    fn drop_tasks(&self, driver: Option<Waker>) {
        let scope = &self.scope;
        let tasks = std::mem::take(&mut *scope.tasks.borrow_mut());
        let wakers = tasks.wakers().into_iter().chain(driver);
        let outcome = scope.executor.close(wakers, || tasks.all_finished());
        if outcome.unreached {
            scope.report(ExceptionContext::new(format!(
                "{} task(s) of the closed loop could not be torn down: another thread began \
                 waking them and did not finish within a second; they are leaked",
                tasks.unfinished_refs().len()
            )));
        }
    }
}

impl Drop for LoopInner {
    fn drop(&mut self) {
        // A loop dropped without close: let its threads finish their queue and exit; drop its
        // tasks.
        self.default_executor.shutdown_nowait();
        if let Some(workers) = self.workers.borrow_mut().take() {
            workers.stop(None, |ctx| write_to_stderr(&ctx));
        }
        let driver = self.scope.inbox.close_jobs();
        self.drop_tasks(driver);
    }
}
