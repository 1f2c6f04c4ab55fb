//! Closing a loop: cancelling its tasks in rounds, closing its async generators, joining its
//! default executor, saying what a long wait waits for, and tearing the loop down.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Weak;
use std::task::{Context as Cx, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

use crate::event_loop::api::{EventLoop, LoopInner};
use crate::header::TaskRef;
use crate::queue::Inbox;
use crate::report::{source_location, write_stderr, write_to_stderr, ExceptionContext};
use crate::signal::{self, Interrupt};
use crate::task::cleanup::{is_abandoning, run_now_until, take_orphans};
use crate::time::Sleep;
use crate::workers::JOIN_WAIT;

/// How many rounds close cancels tasks in: the first cancels the tasks pending when close
/// begins, each further one the tasks spawned since (a destructor may spawn). After the last,
/// close stops waiting for what is still being spawned.
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
    /// leave more), here or on the workers.
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

/// Cancel the unfinished tasks of `spawned` (spawned while close cancels), and keep them in
/// `round`.
fn cancel_into(spawned: Vec<TaskRef>, round: &mut Vec<TaskRef>) {
    for task in spawned {
        if !task.is_finished() {
            task.cancel();
            round.push(task);
        }
    }
}

/// Completes with the tasks spawned while close cancels, once there are some.
struct SpawnedInClose<'a>(&'a Inbox);

impl Future for SpawnedInClose<'_> {
    type Output = Vec<TaskRef>;

    fn poll(self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<Vec<TaskRef>> {
        let spawned = self.0.take_spawned_in_close(cx.waker());
        match spawned.is_empty() {
            true => Poll::Pending,
            false => Poll::Ready(spawned),
        }
    }
}

impl EventLoop {
    /// Close every generator and finalized stream still open on the loop (and on its worker
    /// threads, each on its own), concurrently, and wait for them and for the cleanups already
    /// scheduled on the loop. Failures are reported as "an error occurred during closing of
    /// asynchronous generator" naming the generator.
    pub async fn shutdown_asyncgens(&self) {
        let scope = &self.inner.scope;
        scope.asyncgens_shutdown_called.set(true);
        let workers = self.inner.workers.borrow().clone();
        let on_workers = workers.map(|w| w.close_asyncgens()).unwrap_or_default();
        loop {
            // Each close is a finalizer of its own, so that a wait names what it waits for.
            let gens = scope.asyncgens.borrow_mut().take();
            for gen in gens.iter().filter_map(Weak::upgrade) {
                if let Some(close) = gen.close_now() {
                    scope.spawn_finalizer(close);
                }
            }
            let pending: Vec<TaskRef> = {
                let mut finalizers = scope.finalizers.borrow_mut();
                finalizers.sweep(|(t, _)| !t.is_finished());
                finalizers.iter().map(|(t, _)| t.clone()).collect()
            };
            if pending.is_empty() && scope.asyncgens.borrow().is_empty() {
                break;
            }
            for finalizer in pending {
                finalizer.finished().await;
            }
        }
        for done in on_workers {
            poll_fn(|cx| done.poll_done(cx)).await;
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
        let workers = self.inner.workers.borrow().is_some();
        CloseWork {
            tasks: scope.tasks.borrow().has_pending() || !scope.inbox.off_loop_pending().is_empty(),
            asyncgens: workers || self.has_cleanups_to_wait_for(),
            executor: !self.inner.default_executor.is_idle(),
            workers,
        }
    }

    /// Whether the loop has generators or finalized streams to close, finalizers to wait for, or
    /// jobs queued (a cleanup sent home from another thread): close's second step runs for them,
    /// and again after its third if some came meanwhile.
    pub(crate) fn has_cleanups_to_wait_for(&self) -> bool {
        let scope = &self.inner.scope;
        scope
            .asyncgens
            .borrow()
            .iter()
            .any(|g| g.strong_count() > 0)
            || scope
                .finalizers
                .borrow()
                .iter()
                .any(|(t, _)| !t.is_finished())
            || scope.inbox.has_jobs()
    }

    /// The unfinished tasks close cancels: the loop's, and its tasks on other threads.
    fn cancellable_tasks(&self) -> Vec<TaskRef> {
        let scope = &self.inner.scope;
        let mut pending = scope.tasks.borrow().pending();
        pending.extend(scope.inbox.off_loop_pending());
        pending
    }

    /// Cancel every pending task, and every task spawned while they are cancelled, and wait for
    /// all of them to finish. Close marks the loop as closing before this (`Inbox::set_closing`),
    /// so that each task spawned meanwhile is noted.
    ///
    /// Python's runner cancels one snapshot of the pending tasks and waits for it. Here the
    /// tasks spawned while a round is cancelled are cancelled as soon as they appear (a
    /// cancelled task's cleanup may wait for a task it spawned), and make the next round, which
    /// begins when every task of this one has finished. Rounds stop at `CANCEL_ROUNDS`, so that
    /// close ends even when every cancelled task spawns a replacement: what is still pending then
    /// is reported ("tasks kept being spawned during runner shutdown") and dropped when the loop
    /// closes.
    pub(crate) async fn cancel_all_tasks(&self) {
        let inbox = &self.inner.scope.inbox;
        let mut this_round: VecDeque<TaskRef> = self.cancellable_tasks().into();
        for task in &this_round {
            task.cancel();
        }
        let mut next_round: Vec<TaskRef> = Vec::new();
        let mut round = 1;
        loop {
            while this_round.front().is_some_and(TaskRef::is_finished) {
                this_round.pop_front();
            }
            let Some(front) = this_round.front().cloned() else {
                if next_round.is_empty() {
                    match futures_lite::future::poll_once(SpawnedInClose(inbox)).await {
                        Some(spawned) => cancel_into(spawned, &mut next_round),
                        None => break,
                    }
                }
                next_round.retain(|t| !t.is_finished());
                if next_round.is_empty() {
                    continue;
                }
                if round == CANCEL_ROUNDS {
                    self.report_kept_spawning(next_round.len(), &next_round[0]);
                    break;
                }
                round += 1;
                this_round.extend(next_round.drain(..));
                continue;
            };
            let finished = async {
                front.finished().await;
                Vec::new()
            };
            let spawned = finished.or(SpawnedInClose(inbox)).await;
            cancel_into(spawned, &mut next_round);
        }
    }

    fn report_kept_spawning(&self, left: usize, first: &TaskRef) {
        let was = match left {
            1 => "task was",
            _ => "tasks were",
        };
        self.call_exception_handler(
            ExceptionContext::new(format!(
                "tasks kept being spawned during runner shutdown: after {CANCEL_ROUNDS} rounds of \
                 cancelling, {left} {was} still pending; they are dropped without being waited for"
            ))
            .with_task(first.info()),
        );
    }

    /// While close's second step closes generators, cancel the tasks spawned meanwhile (their
    /// closes may wait for them), as soon as they appear. Never completes: raced against the
    /// step.
    pub(crate) async fn cancel_spawned_in_close(&self) {
        loop {
            for task in SpawnedInClose(&self.inner.scope.inbox).await {
                task.cancel();
            }
        }
    }

    /// What a run or close still waits for, one line each: unfinished tasks with their name and
    /// spawn site (`main` first, if given and unfinished) and the async cleanups each runs, the
    /// finalizers by the cleanup they run, the worker threads finishing theirs, and the blocking
    /// jobs still running with their call site and running time.
    pub(crate) fn pending_work(&self, main: Option<&TaskRef>) -> Vec<String> {
        const MOST_TASKS: usize = 10;
        let scope = &self.inner.scope;
        let mut lines = Vec::new();
        let mut tasks: Vec<TaskRef> = main
            .filter(|m| !m.is_finished())
            .cloned()
            .into_iter()
            .collect();
        tasks.extend(self.cancellable_tasks());
        for task in tasks.iter().take(MOST_TASKS) {
            let mut line = task.info().to_string();
            if task.header().is_polling() {
                line.push_str(", stuck inside one poll on a worker thread");
            }
            let cleanups = scope.task_cleanups(task.info().id());
            if !cleanups.is_empty() {
                let names: Vec<String> = cleanups.iter().map(|c| format!("the {c}")).collect();
                line.push_str(", running its async cleanup: ");
                line.push_str(&names.join(", "));
            }
            lines.push(line);
        }
        if tasks.len() > MOST_TASKS {
            lines.push(format!("and {} more tasks", tasks.len() - MOST_TASKS));
        }
        for (_, what) in scope
            .finalizers
            .borrow()
            .iter()
            .filter(|(t, _)| !t.is_finished())
        {
            lines.push(format!("the {what}"));
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

    /// The lines of [`pending_work`](Self::pending_work) under `heading`, as one text; "work
    /// runner cannot name" when there are none.
    pub(crate) fn describe_pending(&self, heading: &str, main: Option<&TaskRef>) -> String {
        let mut text = format!("{heading}:");
        let lines = self.pending_work(main);
        if lines.is_empty() {
            text.push_str("\n  work runner cannot name (a generator's or stream's cleanup)");
        }
        for line in lines {
            text.push_str("\n  ");
            text.push_str(&line);
        }
        text
    }

    /// Wait until `deadline`, then write once (`shown` remembers) to stderr what is still
    /// pending, headed by `heading`; then never complete. Raced against a waiting step, so that
    /// a wait of more than a second is never silent. With `interrupt` (the runner handles
    /// Ctrl-C), the notice says what a Ctrl-C does now.
    pub(crate) async fn notice_at(
        &self,
        deadline: Instant,
        heading: &str,
        main: Option<&TaskRef>,
        interrupt: Option<&Interrupt>,
        shown: &Cell<bool>,
    ) {
        Sleep::until(deadline).await;
        if !shown.replace(true) {
            let mut text = self.describe_pending(&format!("runner: {heading}, waiting for"), main);
            match interrupt.map(|i| i.presses() > 0 || signal::was_pressed()) {
                Some(true) => text.push_str("\n  press Ctrl-C again to exit at once"),
                Some(false) => text.push_str("\n  press Ctrl-C to stop waiting"),
                None => {}
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
        let inbox = &self.inner.scope.inbox;
        let driver = inbox.close_jobs();
        self.inner.callbacks.clear();
        self.inner.default_executor.shutdown_nowait();
        // A runner's close has cancelled the pool's tasks and waited for them; its threads are
        // stopped and joined here (not after a second Ctrl-C, nor once close has timed out),
        // then what is left on the pool dropped with the loop's handle to it.
        let wait = (!is_abandoning()).then_some(JOIN_WAIT);
        if let Some(workers) = self.inner.workers.borrow_mut().take() {
            workers.stop(wait, |ctx| self.call_exception_handler(ctx));
        }
        inbox.forget_off_loop();
        self.inner.drop_tasks(driver);
        // Sockets its tasks held were closed with them; others fail from now on.
        inbox.shutdown_io();
        // Cleanups the torn-down tasks were still running, and the ones sent home meanwhile, have
        // no loop left: finish them now, for at most a second (a loop closed by hand waits no
        // longer for its workers either).
        let mut cleanups = self.inner.scope.drain_task_cleanups();
        cleanups.extend(take_orphans());
        run_now_until(cleanups, wait);
        // Reports made on other threads (about pool tasks, say) or by the teardown reach the
        // handler, not the closed loop's queue.
        for ctx in inbox.close_reports() {
            self.call_exception_handler(ctx);
        }
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
        self.scope.inbox.forget_off_loop();
        let driver = self.scope.inbox.close_jobs();
        self.drop_tasks(driver);
        self.scope.inbox.shutdown_io();
        for ctx in self.scope.inbox.close_reports() {
            write_to_stderr(&ctx);
        }
    }
}
