//! R3: tasks and cancellation. Each test names the rule it checks.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{counting_factory, flag, recording_loop};
use runner::{current_task, Elapsed, EventLoop, Runner, TaskError};

/// R3.1: the future need not be Send; it runs on the loop thread.
#[test]
fn r3_1_spawn_runs_non_send_future_on_loop_thread() {
    let out = runner::run(async {
        let shared = Rc::new(Cell::new(1));
        let s = shared.clone();
        let here = std::thread::current().id();
        let task = runner::spawn(async move {
            s.set(s.get() + 1);
            std::thread::current().id()
        });
        let ran_on = task.await.unwrap();
        (shared.get(), ran_on == here)
    });
    assert_eq!(out.unwrap(), (2, true));
}

/// R3.1: dropping the handle detaches the task: it runs to completion.
#[test]
fn r3_1_drop_detaches() {
    let done = Rc::new(Cell::new(false));
    let (d, done2) = (done.clone(), done.clone());
    runner::run(async move {
        drop(runner::spawn(async move {
            runner::sleep(Duration::from_millis(5)).await;
            d.set(true);
        }));
        common::eventually("the detached task finished", || done2.get()).await;
    })
    .unwrap();
    assert!(done.get(), "the detached task kept running");
}

/// R3.1: runner::spawn outside a running loop panics naming the cause.
#[test]
fn r3_1_spawn_outside_loop_panics() {
    let caught = std::panic::catch_unwind(|| drop(runner::spawn(async {})));
    let payload = caught.unwrap_err();
    let msg = common::panic_text(&*payload);
    assert!(msg.contains("outside a running event loop"), "{msg}");
}

/// R3.2: cancel() takes effect at the next scheduling point, never in the middle of a poll; the
/// destructors run then and the awaiter sees Cancelled.
#[test]
fn r3_2_cancel_at_scheduling_point() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let (dropped, guard) = flag();
    let result = runner::run(async move {
        let task = runner::spawn(async move {
            let _guard = guard;
            l.borrow_mut().push("before cancel");
            current_task().unwrap().cancel();
            l.borrow_mut().push("same poll, after cancel");
            runner::yield_now().await;
            l.borrow_mut().push("never: the next poll drops the future");
        });
        task.await
    })
    .unwrap();
    assert!(matches!(result, Err(TaskError::Cancelled)));
    assert_eq!(*log.borrow(), ["before cancel", "same poll, after cancel"]);
    assert!(dropped.get());
}

/// R3.2: cancelling a pending task from another task drops its future (destructors run) before
/// its awaiter resumes.
#[test]
fn r3_2_cancel_from_outside() {
    let (dropped, guard) = flag();
    let d = dropped.clone();
    runner::run(async move {
        let task = runner::spawn(async move {
            let _guard = guard;
            runner::sleep(Duration::from_secs(10)).await;
        });
        runner::yield_now().await;
        assert!(!task.is_finished());
        task.cancel();
        let err = task.await.unwrap_err();
        assert!(err.is_cancelled() && !err.is_panic());
        assert_eq!(err.to_string(), "task was cancelled");
        assert!(d.get(), "destructors ran before the awaiter saw Cancelled");
    })
    .unwrap();
}

/// R3.3: cancel() on a finished task does nothing.
#[test]
fn r3_3_cancel_finished_is_noop() {
    runner::run(async {
        let task = runner::spawn(async { 5 });
        let r = task.to_ref();
        runner::yield_now().await;
        assert!(r.is_finished());
        r.cancel();
        task.cancel();
        assert_eq!(task.await.unwrap(), 5);
    })
    .unwrap();
}

/// R3.3: cancellation cannot be swallowed: a cancelled future is never polled again, whatever it
/// would do.
#[test]
fn r3_3_cancellation_not_swallowed() {
    let polls = Rc::new(Cell::new(0));
    let p = polls.clone();
    runner::run(async move {
        let task = runner::spawn(std::future::poll_fn(move |cx| {
            p.set(p.get() + 1);
            cx.waker().wake_by_ref();
            std::task::Poll::<()>::Pending
        }));
        runner::yield_now().await;
        task.cancel();
        assert!(task.await.unwrap_err().is_cancelled());
    })
    .unwrap();
    let after = polls.get();
    assert!(after >= 1);
    runner::run(runner::sleep(Duration::from_millis(5))).unwrap();
    assert_eq!(polls.get(), after);
}

/// R3.4: a panic is caught per task and comes back as Panicked with its payload.
#[test]
fn r3_4_panic_is_caught_with_payload() {
    runner::run(async {
        let task = runner::spawn(async { std::panic::panic_any(42_i32) });
        let sibling = runner::spawn(async { "unaffected" });
        match task.await {
            Err(TaskError::Panicked(payload)) => {
                assert_eq!(payload.downcast_ref::<i32>(), Some(&42))
            }
            other => panic!("expected a panic, got {other:?}"),
        }
        assert_eq!(sibling.await.unwrap(), "unaffected");
    })
    .unwrap();
}

/// R3.4: a detached task's panic is reported once, as "task panic was never retrieved".
#[test]
fn r3_4_unretrieved_panic_reported_once() {
    let (factory, reports, _) = counting_factory();
    let line = Cell::new(0);
    Runner::builder()
        .loop_factory(factory)
        .run(async {
            line.set(line!() + 1);
            let task = runner::spawn(async { panic!("nobody listens") });
            let r = task.to_ref();
            drop(task);
            common::eventually("the task panicked", || r.is_finished()).await;
        })
        .unwrap();
    let found = reports.with_message("task panic was never retrieved");
    assert_eq!(found.len(), 1, "{:?}", reports.messages());
    assert_eq!(found[0].error(), Some("nobody listens"));
    let at = found[0].task().unwrap().spawned_at().unwrap();
    assert!(at.file().ends_with("tasks.rs"));
    assert_eq!(at.line(), line.get());
}

/// R3.4: a handle dropped after the task panicked (never awaited) reports once; an awaited
/// panic is not reported.
#[test]
fn r3_4_dropped_after_panic_reported_once_awaited_not() {
    let (factory, reports, _) = counting_factory();
    Runner::builder()
        .loop_factory(factory)
        .run(async {
            let kept = runner::spawn(async { panic!("kept handle") });
            let awaited = runner::spawn(async { panic!("awaited") });
            runner::yield_now().await;
            assert!(kept.is_finished());
            assert!(awaited.await.unwrap_err().is_panic());
            drop(kept);
        })
        .unwrap();
    let found = reports.with_message("task panic was never retrieved");
    assert_eq!(found.len(), 1, "{:?}", reports.messages());
    assert_eq!(found[0].error(), Some("kept handle"));
}

/// R3.5: awaiting a task is a cancellation boundary (asyncio.shield).
#[test]
fn r3_5_awaiting_is_a_shield() {
    runner::run(async {
        let inner = runner::spawn(async {
            runner::sleep(Duration::from_millis(20)).await;
            "inner finished"
        });
        let r = inner.to_ref();
        let outer = runner::spawn(async move { inner.await.map(str::len) });
        runner::yield_now().await;
        outer.cancel();
        assert!(outer.await.unwrap_err().is_cancelled());
        assert!(!r.is_finished() && !r.is_cancel_requested());
        common::eventually("the awaited task finished", || r.is_finished()).await;
        assert!(!r.is_cancel_requested());
    })
    .unwrap();
}

/// R3.6: to_thread/run_in_executor run on another thread and give the value back.
#[test]
fn r3_6_to_thread_runs_elsewhere() {
    runner::run(async {
        let here = std::thread::current().id();
        let there = runner::to_thread(|| std::thread::current().id())
            .await
            .unwrap();
        assert_ne!(here, there);
        let lp = runner::get_running_loop().unwrap();
        assert_eq!(lp.run_in_executor(|| 3 * 3).await.unwrap(), 9);
        let err = runner::to_thread(|| panic!("in a thread"))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "task panicked: in a thread");
    })
    .unwrap();
}

/// R3.6: at most max_blocking_threads run at once.
#[test]
fn r3_6_max_blocking_threads() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    Runner::builder()
        .loop_factory(|| EventLoop::builder().max_blocking_threads(2).build())
        .run(async move {
            let jobs: Vec<_> = (0..6)
                .map(|_| {
                    let (r, p) = (r.clone(), p.clone());
                    runner::to_thread(move || {
                        let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                        p.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(30));
                        r.fetch_sub(1, Ordering::SeqCst);
                    })
                })
                .collect();
            for job in jobs {
                job.await.unwrap();
            }
        })
        .unwrap();
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&peak),
        "at most 2 jobs ran at once, saw {peak}"
    );
}

/// R3.6: after shutdown_default_executor, to_thread panics with "executor shutdown has been called".
#[test]
fn r3_6_after_executor_shutdown() {
    runner::run(async {
        let lp = runner::get_running_loop().unwrap();
        lp.shutdown_default_executor(None).await;
        let caught = std::panic::catch_unwind(|| drop(runner::to_thread(|| ())));
        let payload = caught.unwrap_err();
        let msg = common::panic_text(&*payload);
        assert!(
            msg.starts_with("executor shutdown has been called"),
            "{msg}"
        );
    })
    .unwrap();
}

/// R3.7: timeout drops the future and returns Elapsed; a quick future gets through.
#[test]
fn r3_7_timeout() {
    let (dropped, guard) = flag();
    runner::run(async move {
        let slow = async move {
            let _guard = guard;
            runner::sleep(Duration::from_secs(10)).await;
        };
        assert_eq!(
            runner::timeout(Duration::from_millis(10), slow).await,
            Err(Elapsed)
        );
        assert_eq!(
            runner::timeout(Duration::from_secs(10), async { 3 }).await,
            Ok(3)
        );
    })
    .unwrap();
    assert!(dropped.get(), "the timed-out future was dropped");
}

/// R3.2, R6.2 groundwork: cancelling the main task by code ends run with Cancelled, after its
/// destructors ran.
#[test]
fn r3_2_main_task_cancelled_by_code() {
    let (dropped, guard) = flag();
    let err = runner::run(async move {
        let _guard = guard;
        current_task().unwrap().cancel();
        runner::yield_now().await;
        unreachable!("the main task is dropped at its next scheduling point");
    })
    .unwrap_err();
    assert_eq!(err, runner::RunError::Cancelled);
    assert!(dropped.get());
}

/// LoopHandle::spawn from another thread runs on the loop thread; after close it is cancelled.
#[test]
fn loop_handle_spawn() {
    let (lp, _) = recording_loop();
    let handle = lp.handle();
    let loop_thread = std::thread::current().id();
    let task = std::thread::spawn(move || handle.spawn(async move { std::thread::current().id() }))
        .join()
        .unwrap();
    assert_eq!(lp.run_until_complete(task).unwrap().unwrap(), loop_thread);

    let handle = lp.handle();
    lp.close();
    let late = std::thread::spawn(move || handle.spawn(async { 1 }))
        .join()
        .unwrap();
    assert!(futures_lite::future::block_on(late)
        .unwrap_err()
        .is_cancelled());
}

/// A task that finishes while never awaited (remote) is registered and cancelled at close.
#[test]
fn loop_handle_spawned_task_cancelled_at_close() {
    let runner = Runner::new();
    let handle = runner.get_loop().unwrap().handle();
    let task = std::thread::spawn(move || handle.spawn(runner::sleep(Duration::from_secs(10))))
        .join()
        .unwrap();
    let r = task.to_ref();
    drop(task);
    runner.run(runner::yield_now()).unwrap();
    runner.close();
    assert!(r.is_finished());
}

/// A task's header lives in the task's own allocation: a `TaskRef` keeps it alive after the
/// task finished, its `Task` handle is gone and its loop is dropped (checked under valgrind by
/// `.ci/memcheck`), and so does one taken inside the task with `current_task`, and the main
/// task's.
#[test]
fn task_refs_outlive_their_task_handle_and_loop() {
    let (spawned, inner, main) = runner::run(async {
        let task = runner::spawn(async { current_task().expect("inside a task") });
        let spawned = task.to_ref();
        let inner = task.await.unwrap();
        let unpolled = runner::spawn(std::future::pending::<()>()).to_ref();
        (spawned, inner, vec![current_task().unwrap(), unpolled])
    })
    .unwrap();
    assert!(spawned.is_finished() && inner.is_finished());
    assert_eq!(spawned.info().id(), inner.info().id());
    assert_eq!(main[0].info().name(), Some("main"));
    assert!(main[1].is_finished() && main[1].is_cancel_requested());
    // Cancelling a finished task wakes nothing: its waker is still valid to call.
    spawned.cancel();
    main[0].cancel();
    let moved = std::thread::spawn(move || inner.info().id())
        .join()
        .unwrap();
    assert_eq!(moved, spawned.info().id());
}
