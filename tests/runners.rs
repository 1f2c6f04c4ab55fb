//! Ports of CPython's `Lib/test/test_asyncio/test_runners.py` (3.14), plus the rest of R1 and R2.
//! Each test names the rule of docs/behaviour.md it checks.

mod common;

use std::cell::{Cell, RefCell};
use std::future::IntoFuture;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use common::{counting_factory, run_child, running_at_drop, text, RunningAtDrop};
use runner::{get_running_loop, EventLoop, RunError, Runner};

// ---- RunTests (asyncio.run) ----

/// R1.4
#[test]
fn test_asyncio_run_return() {
    assert_eq!(runner::run(async { 42 }).unwrap(), 42);
}

/// R1.7: the panic comes out with its own payload, after the runner is closed.
#[test]
fn test_asyncio_run_raises() {
    let (factory, _, made) = counting_factory();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        Runner::builder()
            .loop_factory(factory)
            .run(async { std::panic::panic_any(7_u32) })
    }));
    let payload = caught.expect_err("the panic propagates out of run");
    assert_eq!(payload.downcast_ref::<u32>(), Some(&7));
    assert!(
        made.borrow()[0].is_closed(),
        "run closes the runner before the panic leaves"
    );
}

/// R7.1 (the debug table): debug(true)/debug(false) win; unset follows RUNNER_DEBUG.
#[test]
fn test_asyncio_run_debug() {
    let debug_of = |b: runner::RunnerBuilder| b.run(async { get_running_loop().unwrap().debug() });
    assert!(!debug_of(Runner::builder().debug(false)).unwrap());
    assert!(debug_of(Runner::builder().debug(true)).unwrap());
    for (env, expect) in [
        (None, "false"),
        (Some("1"), "true"),
        (Some("0"), "false"),
        (Some(""), "false"),
    ] {
        let out = run_child(
            "debug_table_child",
            &[("RUNNER_DEBUG", env), ("EXPECT_DEBUG", Some(expect))],
        );
        assert!(out.status.success(), "RUNNER_DEBUG={env:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "{}",
            text(&out)
        );
    }
}

#[test]
#[ignore = "run by test_asyncio_run_debug in a child process with RUNNER_DEBUG set"]
fn debug_table_child() {
    let expect = std::env::var("EXPECT_DEBUG").unwrap() == "true";
    assert_eq!(
        runner::run(async { get_running_loop().unwrap().debug() }).unwrap(),
        expect
    );
    assert_eq!(Runner::new().get_loop().unwrap().debug(), expect);
    // An explicit setting wins over the environment either way.
    assert!(!Runner::builder()
        .debug(false)
        .run(async { get_running_loop().unwrap().debug() })
        .unwrap());
    assert!(Runner::builder()
        .debug(true)
        .run(async { get_running_loop().unwrap().debug() })
        .unwrap());
}

/// R1.6: refused at once, the inner future never polled, no loop created.
#[test]
fn test_asyncio_run_from_running_loop() {
    runner::run(async {
        let polled = Cell::new(false);
        let err = runner::run(async { polled.set(true) }).unwrap_err();
        assert_eq!(err, RunError::NestedRun);
        assert!(
            err.to_string()
                .contains("cannot be called from a running event loop"),
            "{err}"
        );
        assert!(
            err.to_string().contains(".await"),
            "the message suggests what to do: {err}"
        );

        let (factory, _, made) = counting_factory();
        let err = Runner::builder()
            .loop_factory(factory)
            .run(async { polled.set(true) });
        assert_eq!(err.unwrap_err(), RunError::NestedRun);
        assert!(
            made.borrow().is_empty(),
            "no loop is created for a refused run"
        );

        let other = EventLoop::new();
        assert_eq!(
            other
                .run_until_complete(async { polled.set(true) })
                .unwrap_err(),
            RunError::NestedRun
        );
        assert!(!polled.get());
    })
    .unwrap();
}

/// R2.1: tasks left pending are cancelled, and waited for, while the loop still runs.
#[test]
fn test_asyncio_run_cancels_hanging_tasks() {
    let (dropped, guard) = running_at_drop();
    let leftover = RefCell::new(None);
    let out = runner::run(async {
        let task = runner::spawn(async move {
            let _guard = guard;
            runner::sleep(Duration::from_secs(10)).await;
        });
        *leftover.borrow_mut() = Some(task.to_ref());
        123
    });
    assert_eq!(out.unwrap(), 123);
    assert_eq!(
        dropped.get(),
        Some(true),
        "cancelled by close, with the loop running"
    );
    assert!(leftover.borrow().as_ref().unwrap().is_finished());
}

/// R2.1: a panic while being cancelled is reported once, and run still returns its value.
#[test]
fn test_asyncio_run_reports_hanging_tasks_errors() {
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("cleanup failed");
        }
    }
    let (factory, reports, _) = counting_factory();
    let out = Runner::builder().loop_factory(factory).run(async {
        let leftover = runner::spawn(async {
            let _guard = PanicOnDrop;
            runner::sleep(Duration::from_secs(10)).await;
        });
        drop(leftover);
        runner::yield_now().await;
        123
    });
    assert_eq!(out.unwrap(), 123);
    let all = reports.all();
    assert_eq!(all.len(), 1, "exactly one report: {:?}", reports.messages());
    assert_eq!(all[0].message(), "unhandled panic during runner shutdown");
    assert_eq!(all[0].error(), Some("cleanup failed"));
    assert!(all[0]
        .task()
        .unwrap()
        .spawned_at()
        .unwrap()
        .file()
        .ends_with("runners.rs"));
}

/// R1.2: the factory is called exactly once, with no arguments, and its loop is the running one.
#[test]
fn test_asyncio_run_loop_factory() {
    let (factory, _, made) = counting_factory();
    let seen = RefCell::new(None);
    Runner::builder()
        .loop_factory(factory)
        .run(async { *seen.borrow_mut() = get_running_loop() })
        .unwrap();
    assert_eq!(made.borrow().len(), 1);
    let lp = made.borrow()[0].clone();
    assert_eq!(seen.borrow().as_ref(), Some(&lp));
    assert!(lp.is_closed(), "run closes the factory's loop");
}

/// The result's Debug is never called (CPython: the result's repr is not used).
#[test]
fn test_asyncio_run_result_debug_not_called() {
    struct NoDebug(u8);
    impl std::fmt::Debug for NoDebug {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("Debug must not be called on the result");
        }
    }
    let out = runner::run(async { NoDebug(3) }).unwrap();
    assert_eq!(out.0, 3);
    let runner = Runner::new();
    assert_eq!(runner.run(async { NoDebug(4) }).unwrap().0, 4);
}

// ---- RunnerTests (asyncio.Runner) ----

/// R1.2
#[test]
fn test_non_debug() {
    assert!(!Runner::builder()
        .debug(false)
        .build()
        .get_loop()
        .unwrap()
        .debug());
}

/// R1.2
#[test]
fn test_debug() {
    assert!(Runner::builder()
        .debug(true)
        .build()
        .get_loop()
        .unwrap()
        .debug());
}

/// R1.2, R2.4
#[test]
fn test_custom_factory() {
    let lp = EventLoop::new();
    let given = lp.clone();
    let runner = Runner::builder().loop_factory(move || given).build();
    assert_eq!(runner.get_loop().unwrap(), lp);
    runner.close();
    assert!(lp.is_closed());
}

/// R1.4
#[test]
fn test_run() {
    let runner = Runner::new();
    assert_eq!(runner.run(async { 42 }).unwrap(), 42);
}

/// R1.4: any IntoFuture, e.g. a ready future.
#[test]
fn test_run_future() {
    let runner = Runner::new();
    assert_eq!(runner.run(std::future::ready(42)).unwrap(), 42);
}

/// R1.4: a custom IntoFuture (Python: an awaitable with `__await__`).
#[test]
fn test_run_awaitable() {
    struct Answer;
    impl IntoFuture for Answer {
        type Output = u32;
        type IntoFuture = std::future::Ready<u32>;
        fn into_future(self) -> Self::IntoFuture {
            std::future::ready(42)
        }
    }
    assert_eq!(Runner::new().run(Answer).unwrap(), 42);
    assert_eq!(runner::run(Answer).unwrap(), 42);
}

/// R1.4: the main future may borrow from the caller.
#[test]
fn test_run_borrows() {
    let mut local = vec![1, 2];
    let runner = Runner::new();
    runner.run(async { local.push(3) }).unwrap();
    assert_eq!(local, [1, 2, 3]);
}

/// R1.3, R2.4
#[test]
fn test_explicit_close() {
    let runner = Runner::new();
    let lp = runner.get_loop().unwrap();
    runner.close();
    let err = runner.get_loop().unwrap_err();
    assert_eq!(err, RunError::Closed);
    assert!(err.to_string().contains("Runner is closed"));
    assert!(lp.is_closed());
    assert!(runner.is_closed());
}

/// R1.3
#[test]
fn test_double_close() {
    let runner = Runner::new();
    let lp = runner.get_loop().unwrap();
    runner.close();
    assert!(runner.is_closed());
    runner.close();
    assert!(runner.is_closed());
    assert!(lp.is_closed());
}

/// R1.3: a never-used runner is closed too (Python leaves it open; we do not).
#[test]
fn test_close_unused_runner() {
    let (factory, _, made) = counting_factory();
    let runner = Runner::builder().loop_factory(factory).build();
    runner.close();
    assert!(runner.is_closed());
    assert!(
        made.borrow().is_empty(),
        "closing an unused runner creates nothing"
    );
    assert_eq!(runner.run(async {}).unwrap_err(), RunError::Closed);
}

/// R1.3: run after close returns Closed and never polls its future.
#[test]
fn test_run_with_closed_runner() {
    let runner = Runner::new();
    runner.close();
    let polled = Cell::new(false);
    assert_eq!(
        runner.run(async { polled.set(true) }).unwrap_err(),
        RunError::Closed
    );
    assert!(!polled.get());
}

/// R1.6: recursive run through a second reference.
#[test]
fn test_recursive_run() {
    let runner = Runner::new();
    let polled = Cell::new(false);
    let inner = runner
        .run(async { runner.run(async { polled.set(true) }) })
        .unwrap();
    let err = inner.unwrap_err();
    assert_eq!(err, RunError::NestedRun);
    assert!(err
        .to_string()
        .contains("cannot be called from a running event loop"));
    assert!(!polled.get());
    assert_eq!(
        runner.run(async { 5 }).unwrap(),
        5,
        "the runner is still usable"
    );
}

// ---- The rest of R1 and R2 ----

/// R1.1: new/build create nothing; the first use creates the loop once.
#[test]
fn r1_1_lazy_creation() {
    let (factory, _, made) = counting_factory();
    let runner = Runner::builder().loop_factory(factory).build();
    assert!(made.borrow().is_empty());
    let lp = runner.get_loop().unwrap();
    assert_eq!(made.borrow().len(), 1);
    runner.run(async {}).unwrap();
    runner.run(async {}).unwrap();
    assert_eq!(made.borrow().len(), 1, "the factory is called exactly once");
    assert_eq!(runner.get_loop().unwrap(), lp);
}

/// R1.4: the loop stays open between runs; a task spawned in one run continues in the next.
#[test]
fn r1_4_tasks_continue_in_next_run() {
    let runner = Runner::new();
    let progress = Rc::new(Cell::new(0));
    let p = progress.clone();
    runner
        .run(async move {
            runner::spawn(async move {
                for _ in 0..3 {
                    runner::sleep(Duration::from_millis(1)).await;
                    p.set(p.get() + 1);
                }
            })
            .to_ref()
        })
        .map(|task| assert!(!task.is_finished()))
        .unwrap();
    assert_eq!(progress.get(), 0, "run returned as soon as main was done");
    let p = progress.clone();
    runner
        .run(common::eventually(
            "the leftover task finished",
            move || p.get() == 3,
        ))
        .unwrap();
    assert_eq!(
        progress.get(),
        3,
        "the leftover task went on in the second run"
    );
}

/// R1.7: after a panic the runner is usable again.
#[test]
fn r1_7_usable_after_panic() {
    let runner = Runner::new();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        runner.run(async { panic!("first run fails") })
    }));
    assert_eq!(
        *caught.unwrap_err().downcast_ref::<&str>().unwrap(),
        "first run fails"
    );
    assert!(!runner.get_loop().unwrap().is_running());
    assert_eq!(runner.run(async { 2 }).unwrap(), 2);
}

/// R1.8, R2.4: RunnerBuilder::run closes the runner and its loop.
#[test]
fn r1_8_builder_run_closes() {
    let (factory, _, made) = counting_factory();
    assert_eq!(
        Runner::builder()
            .loop_factory(factory)
            .run(async { 1 })
            .unwrap(),
        1
    );
    assert!(made.borrow()[0].is_closed());
}

/// R2.1: tasks spawned while the leftovers are being cancelled are cancelled and awaited too.
#[test]
fn r2_1_tasks_spawned_during_cancellation() {
    struct SpawnOnDrop(Option<RunningAtDrop>);
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            let guard = self.0.take();
            drop(runner::spawn(async move {
                let _guard = guard;
                runner::sleep(Duration::from_secs(10)).await;
            }));
        }
    }
    let (second, guard) = running_at_drop();
    runner::run(async move {
        drop(runner::spawn(async move {
            let _respawn = SpawnOnDrop(Some(guard));
            runner::sleep(Duration::from_secs(10)).await;
        }));
        runner::yield_now().await;
    })
    .unwrap();
    assert_eq!(
        second.get(),
        Some(true),
        "the task spawned during cancellation was cancelled by close"
    );
}

/// R2.3: the default executor is joined with the runner's timeout and the overrun is reported.
#[test]
fn r2_3_executor_shutdown_timeout_reported() {
    let (factory, reports, _) = counting_factory();
    Runner::builder()
        .loop_factory(factory)
        .executor_shutdown_timeout(Duration::from_millis(50))
        .run(async {
            drop(runner::to_thread(|| {
                std::thread::sleep(Duration::from_secs(3))
            }));
            runner::yield_now().await;
        })
        .unwrap();
    let found = reports.with_message("the default executor did not finish joining its threads");
    assert_eq!(found.len(), 1, "{:?}", reports.messages());
    assert!(
        found[0].message().ends_with("within 0.05 seconds"),
        "{}",
        found[0].message()
    );
}

/// R2.3: threads still running after the timeout do not keep the process alive.
#[test]
fn r2_3_stuck_thread_does_not_keep_process_alive() {
    let started = std::time::Instant::now();
    let out = run_child("stuck_thread_child", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the child exited while its blocking job (60 s) was still running"
    );
}

#[test]
#[ignore = "run by r2_3_stuck_thread_does_not_keep_process_alive in a child process"]
fn stuck_thread_child() {
    Runner::builder()
        .executor_shutdown_timeout(Duration::from_millis(100))
        .run(async {
            drop(runner::to_thread(|| {
                std::thread::sleep(Duration::from_secs(60))
            }));
            runner::yield_now().await;
        })
        .unwrap();
}

/// R2.3: work queued on the default executor before close still runs to completion.
#[test]
fn r2_3_queued_blocking_work_finishes() {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let d = done.clone();
    Runner::builder()
        .loop_factory(|| EventLoop::builder().max_blocking_threads(1).build())
        .run(async move {
            for _ in 0..3 {
                let d = d.clone();
                drop(runner::to_thread(move || {
                    std::thread::sleep(Duration::from_millis(20));
                    d.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }));
            }
        })
        .unwrap();
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// R2.4: after close, threadsafe callbacks and spawns are dropped silently.
#[test]
fn r2_4_closed_loop_drops_threadsafe_work() {
    let runner = Runner::new();
    let handle = runner.get_loop().unwrap().handle();
    runner.close();
    assert!(handle.is_closed());
    let payload = std::sync::Arc::new(());
    let held = payload.clone();
    std::thread::spawn(move || handle.call_soon_threadsafe(move || drop(held)))
        .join()
        .unwrap();
    assert_eq!(
        std::sync::Arc::strong_count(&payload),
        1,
        "the callback was dropped, not kept"
    );
}

/// R1.5 needs contexts; the closed runner's loop refuses run_until_complete (R1.3).
#[test]
fn r1_3_closed_loop_refuses_run() {
    let lp = EventLoop::new();
    lp.close();
    assert_eq!(
        lp.run_until_complete(async { 1 }).unwrap_err(),
        RunError::Closed
    );
}

/// Issue 23, item 17: `RUNNER_DEBUG` was read once per process. Python reads its environment
/// each time a loop is made (`BaseEventLoop.__init__` calls `coroutines._is_debug_mode()`), so
/// a change between two runs takes effect. Run in a child, whose environment the test changes.
#[test]
fn runner_debug_is_read_for_each_new_loop() {
    let out = run_child("debug_per_loop_child", &[("RUNNER_DEBUG", None)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("debug per loop: [false, true, false]"),
        "{}",
        text(&out)
    );
}

#[test]
#[ignore = "run by runner_debug_is_read_for_each_new_loop in a child process"]
fn debug_per_loop_child() {
    let debug = || runner::run(async { get_running_loop().unwrap().debug() }).unwrap();
    let mut seen = vec![debug()];
    std::env::set_var("RUNNER_DEBUG", "1");
    seen.push(debug());
    std::env::remove_var("RUNNER_DEBUG");
    seen.push(debug());
    println!("debug per loop: {seen:?}");
}
