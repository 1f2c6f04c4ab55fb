//! The event loop's callbacks and handles, debug mode (R7) and the exception handler (R8).

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{recording_loop, run_child, text};
use runner::{EventLoop, ExceptionContext};

/// call_soon runs callbacks in FIFO order on the next iteration; a cancelled one never runs.
#[test]
fn call_soon_order_and_cancel() {
    let lp = EventLoop::new();
    let log = Rc::new(RefCell::new(Vec::new()));
    let push = |tag: &'static str| {
        let log = log.clone();
        move || log.borrow_mut().push(tag)
    };
    lp.call_soon(push("a"));
    let b = lp.call_soon(push("b"));
    lp.call_soon(push("c"));
    b.cancel();
    assert!(b.is_cancelled());
    assert!(log.borrow().is_empty(), "nothing runs before the loop does");
    lp.run_until_complete(runner::yield_now()).unwrap();
    assert_eq!(*log.borrow(), ["a", "c"]);
    lp.close();
}

/// call_later runs by deadline, after ready callbacks; cancel keeps it from running.
#[test]
fn call_later_order_and_cancel() {
    let lp = EventLoop::new();
    let log = Rc::new(RefCell::new(Vec::new()));
    let push = |tag: &'static str| {
        let log = log.clone();
        move || log.borrow_mut().push(tag)
    };
    lp.call_later(Duration::from_millis(30), push("30ms"));
    lp.call_later(Duration::from_millis(10), push("10ms"));
    let cancelled = lp.call_later(Duration::from_millis(20), push("20ms cancelled"));
    lp.call_soon(push("soon"));
    cancelled.cancel();
    let l = log.clone();
    lp.run_until_complete(common::eventually("the 30 ms callback ran", move || {
        l.borrow().len() == 3
    }))
    .unwrap();
    assert_eq!(*log.borrow(), ["soon", "10ms", "30ms"]);
}

/// A callback scheduled by a callback runs on a later round, after tasks had their turn.
#[test]
fn call_soon_from_callback_waits_a_round() {
    let lp = EventLoop::new();
    let log = Rc::new(RefCell::new(Vec::new()));
    let (l1, l2) = (log.clone(), log.clone());
    let inner_lp = lp.clone();
    lp.call_soon(move || {
        l1.borrow_mut().push("first");
        let l = l1.clone();
        inner_lp.call_soon(move || l.borrow_mut().push("scheduled by first"));
    });
    lp.call_soon(move || l2.borrow_mut().push("second"));
    let l = log.clone();
    lp.run_until_complete(common::eventually("three callbacks ran", move || {
        l.borrow().len() == 3
    }))
    .unwrap();
    assert_eq!(*log.borrow(), ["first", "second", "scheduled by first"]);
}

/// A panicking callback is reported and the loop goes on.
#[test]
fn panicking_callback_is_reported() {
    let (lp, reports) = recording_loop();
    lp.call_soon(|| panic!("callback failed"));
    let r = reports.clone();
    let out = lp.run_until_complete(async move {
        common::eventually("the panic was reported", || !r.all().is_empty()).await;
        "loop went on"
    });
    assert_eq!(out.unwrap(), "loop went on");
    let all = reports.all();
    assert_eq!(all.len(), 1);
    assert!(all[0]
        .message()
        .starts_with("panic in callback <callback scheduled at tests/event_loop.rs"));
    assert_eq!(all[0].error(), Some("callback failed"));
}

/// LoopHandle::call_soon_threadsafe from another thread runs on the loop thread.
#[test]
fn call_soon_threadsafe_from_another_thread() {
    let lp = EventLoop::new();
    let handle = lp.handle();
    let ran_on = Arc::new(std::sync::Mutex::new(None));
    let r = ran_on.clone();
    let out = lp.run_until_complete(async move {
        std::thread::spawn(move || {
            handle.call_soon_threadsafe(move || {
                *r.lock().unwrap() = Some(std::thread::current().id());
            })
        });
        common::eventually("the threadsafe callback ran", || {
            ran_on.lock().unwrap().is_some()
        })
        .await;
        let seen = *ran_on.lock().unwrap();
        seen
    });
    assert_eq!(out.unwrap(), Some(std::thread::current().id()));
}

/// R2.4: threadsafe callbacks sent after close are dropped silently, never run.
#[test]
fn call_soon_threadsafe_after_close_is_dropped() {
    let lp = EventLoop::new();
    let handle = lp.handle();
    lp.close();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    std::thread::spawn(move || {
        handle.call_soon_threadsafe(move || r.store(true, Ordering::SeqCst))
    })
    .join()
    .expect("posting to a closed loop does not panic");
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(
        Arc::strong_count(&ran),
        1,
        "the callback itself was dropped"
    );
}

/// R2.4: closing a loop is idempotent and leaves it closed; spawn on it gives a cancelled task.
#[test]
fn closed_loop_spawn_is_cancelled() {
    let lp = EventLoop::new();
    lp.close();
    lp.close();
    assert!(lp.is_closed());
    let task = lp.spawn(async { 1 });
    assert!(task.is_finished());
    assert!(futures_lite::future::block_on(task)
        .unwrap_err()
        .is_cancelled());
}

fn slow_loop() -> (EventLoop, common::Reports) {
    let (lp, reports) = recording_loop();
    lp.set_debug(true);
    lp.set_slow_callback_duration(Duration::from_millis(20));
    (lp, reports)
}

/// R7.2, R7.3: a slow poll is reported with the task's spawn location and the time it took.
#[test]
fn r7_2_slow_poll_reported_with_spawn_location() {
    let (lp, reports) = slow_loop();
    let line = line!() + 1;
    let task = lp.spawn(async {
        std::thread::sleep(Duration::from_millis(60));
    });
    let info = task.info();
    lp.run_until_complete(task).unwrap().unwrap();
    let slow = reports.with_message("Executing <Task #");
    assert_eq!(slow.len(), 1, "{:?}", reports.messages());
    let msg = slow[0].message();
    let expected_start = format!(
        "Executing <Task #{} spawned at tests/event_loop.rs:{line}:",
        info.id()
    );
    assert!(msg.starts_with(&expected_start), "{msg} / {expected_start}");
    let secs: f64 = msg
        .rsplit(" took ")
        .next()
        .unwrap()
        .trim_end_matches(" seconds")
        .parse()
        .unwrap();
    assert!(secs >= 0.06, "{msg}");
    assert_eq!(slow[0].task().unwrap().spawned_at().unwrap().line(), line);
}

/// R7.2: slow callbacks are reported with where they were scheduled.
#[test]
fn r7_2_slow_callback_reported() {
    let (lp, reports) = slow_loop();
    lp.call_soon(|| std::thread::sleep(Duration::from_millis(40)));
    let r = reports.clone();
    lp.run_until_complete(common::eventually("a report", move || !r.all().is_empty()))
        .unwrap();
    let slow = reports.with_message("Executing <callback scheduled at tests/event_loop.rs:");
    assert_eq!(slow.len(), 1, "{:?}", reports.messages());
}

/// R7.2: the main task's slow polls name it.
#[test]
fn r7_2_slow_main_task_named() {
    let (lp, reports) = slow_loop();
    lp.run_until_complete(async { std::thread::sleep(Duration::from_millis(30)) })
        .unwrap();
    let slow = reports.with_message("Executing <Task 'main' #");
    assert_eq!(slow.len(), 1, "{:?}", reports.messages());
}

/// R7.4: without debug mode nothing is timed or reported.
#[test]
fn r7_4_no_reports_without_debug() {
    let (lp, reports) = recording_loop();
    lp.set_debug(false);
    lp.set_slow_callback_duration(Duration::from_millis(1));
    lp.call_soon(|| std::thread::sleep(Duration::from_millis(10)));
    lp.run_until_complete(async { std::thread::sleep(Duration::from_millis(10)) })
        .unwrap();
    assert!(reports.all().is_empty(), "{:?}", reports.messages());
}

/// R7.3: every task records where it was spawned.
#[test]
fn r7_3_spawned_at() {
    runner::run(async {
        let line = line!() + 1;
        let task = runner::spawn(async {});
        let at = task.info().spawned_at().unwrap();
        assert_eq!((at.file(), at.line()), ("tests/event_loop.rs", line));
        let main = runner::current_task().unwrap().info();
        assert_eq!(main.name(), Some("main"));
        assert_eq!(main.spawned_at().unwrap().file(), "tests/event_loop.rs");
    })
    .unwrap();
}

/// R8.1: reports go to the handler set; clear goes back to the default one.
#[test]
fn r8_1_handler_set_call_and_clear() {
    let (lp, reports) = recording_loop();
    lp.call_exception_handler(ExceptionContext::new("first").with_error("detail"));
    let all = reports.all();
    assert_eq!(
        (all[0].message(), all[0].error()),
        ("first", Some("detail"))
    );
    lp.clear_exception_handler();
    lp.call_exception_handler(ExceptionContext::new("to stderr"));
    assert_eq!(
        reports.all().len(),
        1,
        "after clear the recording handler gets nothing"
    );
}

/// R8.1: the default handler writes the message and its details to stderr.
#[test]
fn r8_1_default_handler_writes_stderr() {
    let out = run_child("default_handler_child", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a report for stderr"), "{}", text(&out));
    assert!(stderr.contains("error: the detail"), "{}", text(&out));
}

#[test]
#[ignore = "run by r8_1_default_handler_writes_stderr in a child process"]
fn default_handler_child() {
    EventLoop::new().call_exception_handler(
        ExceptionContext::new("a report for stderr").with_error("the detail"),
    );
}

/// R8.2: a panicking handler is reported by the default handler and the loop goes on.
#[test]
fn r8_2_panicking_handler() {
    let out = run_child("panicking_handler_child", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unhandled error in exception handler"),
        "{}",
        text(&out)
    );
    assert!(stderr.contains("handler is broken"), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("loop went on"),
        "{}",
        text(&out)
    );
}

#[test]
#[ignore = "run by r8_2_panicking_handler in a child process"]
fn panicking_handler_child() {
    let lp = EventLoop::builder()
        .exception_handler(|_, _| panic!("handler is broken"))
        .build();
    let out = lp.run_until_complete(async {
        let task = runner::spawn(async { panic!("task failed") });
        let r = task.to_ref();
        drop(task);
        common::eventually("the task panicked", || r.is_finished()).await;
        runner::yield_now().await;
        "loop went on"
    });
    println!("{}", out.unwrap());
}

// The loop's own executor (runner-core/src/executor.rs).

/// R2.4: closing a loop (without a runner's cancel step) drops a task that waits on a timer, so
/// its destructors run at close; and a loop dropped without close does the same.
#[test]
fn close_and_drop_tear_down_waiting_tasks() {
    for close in [true, false] {
        let lp = EventLoop::new();
        let (dropped, guard) = common::flag();
        let task = lp.spawn(async move {
            let _guard = guard;
            runner::sleep(Duration::from_secs(3600)).await;
        });
        drop(task);
        lp.run_until_complete(runner::yield_now()).unwrap();
        assert!(!dropped.get(), "the task is waiting, not dropped");
        match close {
            true => lp.close(),
            false => drop(lp),
        }
        assert!(
            dropped.get(),
            "close={close}: the waiting task was torn down"
        );
    }
}

/// R1.4: tasks queued when a run ends run in the next run, in the order they were queued.
#[test]
fn queued_tasks_carry_over_between_runs_in_order() {
    let lp = EventLoop::new();
    let log = Rc::new(RefCell::new(Vec::new()));
    for i in 0..3 {
        let log = log.clone();
        drop(lp.spawn(async move { log.borrow_mut().push(i) }));
    }
    assert!(log.borrow().is_empty(), "nothing runs before the loop does");
    lp.run_until_complete(async {}).unwrap();
    lp.run_until_complete(runner::yield_now()).unwrap();
    assert_eq!(*log.borrow(), [0, 1, 2]);
    lp.close();
}

/// A task that never stops yielding does not starve timers: the executor hands control back to
/// the reactor after a bounded number of polls.
#[test]
fn busy_task_does_not_starve_timers() {
    let polls = common::finishes_within(Duration::from_secs(30), busy_task_while_main_sleeps);
    assert!(
        polls > 1,
        "the busy task ran while main slept ({polls} polls)"
    );
}

fn busy_task_while_main_sleeps() -> u64 {
    runner::run(async {
        let stop = Rc::new(std::cell::Cell::new(false));
        let busy = {
            let stop = stop.clone();
            runner::spawn(async move {
                let mut polls = 0u64;
                while !stop.get() {
                    polls += 1;
                    runner::yield_now().await;
                }
                polls
            })
        };
        runner::sleep(Duration::from_millis(5)).await;
        stop.set(true);
        busy.await.unwrap()
    })
    .unwrap()
}

/// A task woken on its loop's thread while another loop runs there stays on its own loop: it
/// runs when its loop runs again, and sees that loop as the running one.
#[test]
fn wake_while_another_loop_runs_stays_on_own_loop() {
    common::finishes_within(Duration::from_secs(30), wake_while_another_loop_runs);
}

fn wake_while_another_loop_runs() {
    let a = EventLoop::new();
    let b = EventLoop::new();
    let (tx, rx) = async_channel::bounded::<u8>(1);
    let task = a.spawn(async move {
        let value = rx.recv().await.unwrap();
        let on_a = runner::get_running_loop().unwrap();
        (value, on_a)
    });
    a.run_until_complete(runner::yield_now()).unwrap();
    b.run_until_complete(async move { tx.send(7).await.unwrap() })
        .unwrap();
    let (value, ran_on) = a.run_until_complete(task).unwrap().unwrap();
    assert_eq!(value, 7);
    assert!(ran_on == a, "the task ran on its own loop");
    a.close();
    b.close();
}

/// Wake-ups from other threads reach a loop that is waiting for them.
#[test]
fn wake_from_another_thread_reaches_waiting_loop() {
    let (tx, rx) = async_channel::bounded::<u32>(1);
    let got = runner::run(async move {
        let task = runner::spawn(async move { rx.recv().await.unwrap() * 2 });
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            futures_lite::future::block_on(tx.send(21)).unwrap();
        });
        let got = task.await.unwrap();
        sender.join().unwrap();
        got
    })
    .unwrap();
    assert_eq!(got, 42);
}

/// The main future is polled when it is woken, not whenever a task wakes the loop: a busy task
/// yielding 10,000 times makes the executor hand back to `block_on` dozens of times, and a main
/// future that waits for it is polled twice (first, and when the task ends). A main future that
/// is an accept loop would otherwise retry `accept`, a system call, on every wake-up.
#[test]
fn main_future_is_polled_only_when_woken() {
    let lp = EventLoop::new();
    let busy = lp.spawn(async {
        for _ in 0..10_000 {
            runner::yield_now().await;
        }
    });
    let polls = Rc::new(std::cell::Cell::new(0));
    let p = polls.clone();
    let mut busy = Box::pin(busy);
    lp.run_until_complete(std::future::poll_fn(move |cx| {
        p.set(p.get() + 1);
        std::future::Future::poll(busy.as_mut(), cx)
    }))
    .unwrap()
    .unwrap();
    assert_eq!(
        polls.get(),
        2,
        "polled once at the start and once when woken"
    );
}
