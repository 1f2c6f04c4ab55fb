//! Shutdown always ends: no hang, deadlock, leak or abort at close. Each test reproduces a
//! program that once hung, leaked or aborted (issue 11's items); the ones that could hang run
//! under the watchdog, the ones that could crash the process run in a child process.

mod common;

use std::cell::{Cell, RefCell};
use std::future::{pending, poll_fn};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use common::{finishes_within, recording_loop, run_child};
use runner::{EventLoop, Runner};

const WATCHDOG: Duration = Duration::from_secs(30);

/// A `Sender` held by one task and a `recv()` awaited by another: dropping the first at close
/// wakes the second under the channel's lock. Close must not tear the second down right there.
fn channel_pair(lp: &EventLoop) -> (runner::Task<()>, runner::Task<()>) {
    let (tx, rx) = async_channel::bounded::<u32>(1);
    let a = lp.spawn(async move {
        let _tx = tx;
        pending::<()>().await;
    });
    let b = lp.spawn(async move {
        let _ = rx.recv().await;
    });
    (a, b)
}

/// Run a loop with a channel pair on it for 1 ms, end it with `end` (close or drop) under the
/// watchdog; whether both tasks finished.
fn end_loop_with_channel_pair(end: fn(EventLoop)) -> (bool, bool) {
    finishes_within(WATCHDOG, move || {
        let lp = EventLoop::new();
        let (a, b) = channel_pair(&lp);
        lp.run_until_complete(runner::sleep(Duration::from_millis(1)))
            .unwrap();
        end(lp);
        (a.is_finished(), b.is_finished())
    })
}

/// Issue 11, item 1: `close()` with a channel pair on the loop returned.
#[test]
fn close_with_channel_pair_does_not_deadlock() {
    let finished = end_loop_with_channel_pair(|lp| lp.close());
    assert_eq!(finished, (true, true), "both tasks were torn down by close");
}

/// Item 1, dropping the loop instead of closing it.
#[test]
fn drop_with_channel_pair_does_not_deadlock() {
    let finished = end_loop_with_channel_pair(drop);
    assert_eq!(finished, (true, true));
}

/// Item 1, a `Runner` closed inside another loop's task (its waiting steps cannot run there, so
/// it tears its tasks down at once).
#[test]
fn runner_closed_inside_another_loop_does_not_deadlock() {
    let finished = finishes_within(WATCHDOG, || {
        let inner = Runner::new();
        let lp = inner.get_loop().unwrap();
        let (a, b) = channel_pair(&lp);
        inner.run(runner::sleep(Duration::from_millis(1))).unwrap();
        runner::run(async move {
            inner.close();
            (a.is_finished(), b.is_finished())
        })
        .unwrap()
    });
    assert_eq!(finished, (true, true));
}

/// Wakes a task when dropped.
struct WakeOnDrop(Rc<RefCell<Option<Waker>>>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        if let Some(waker) = self.0.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// A chain of `n` tasks, each waking the next when it is dropped. Runs the loop until every
/// task has been polled once (tasks run in spawn order: the last one registering means all did).
fn spawn_wake_chain(lp: &EventLoop, n: usize) -> Rc<Cell<usize>> {
    let dropped = Rc::new(Cell::new(0));
    let slots: Vec<_> = (0..=n).map(|_| Rc::new(RefCell::new(None))).collect();
    for i in 0..n {
        let mine = slots[i].clone();
        let next = WakeOnDrop(slots[i + 1].clone());
        let counter = common::CountOnDrop(dropped.clone());
        drop(lp.spawn(async move {
            let _next = next;
            let _counter = counter;
            poll_fn(|cx| {
                *mine.borrow_mut() = Some(cx.waker().clone());
                Poll::<()>::Pending
            })
            .await;
        }));
    }
    let last = slots[n - 1].clone();
    lp.run_until_complete(async move {
        while last.borrow().is_none() {
            runner::yield_now().await;
        }
    })
    .unwrap();
    dropped
}

/// Item 2: a chain of 30,000 tasks overflowed the stack at close. Teardown is iterative; run
/// in a child so that an overflow fails this test instead of killing the test binary.
#[test]
fn close_tears_down_long_wake_chain_iteratively() {
    let out = run_child("wake_chain_child", &[]);
    common::assert_child_printed(&out, &["dropped 100000 of 100000"]);
}

#[test]
#[ignore = "run by close_tears_down_long_wake_chain_iteratively in a child process"]
fn wake_chain_child() {
    // A 1 MiB stack: recursive teardown overflows it within a few thousand tasks.
    let thread = std::thread::Builder::new().stack_size(1 << 20).spawn(|| {
        let lp = EventLoop::new();
        let dropped = spawn_wake_chain(&lp, 100_000);
        lp.close();
        dropped.get()
    });
    let dropped = thread.unwrap().join().unwrap();
    println!("dropped {dropped} of 100000");
}

/// Item 3: wake-ups from another thread that arrive while the loop closes were forgotten, and
/// their tasks leaked. Here a task's destructor, run by close, has another thread wake every
/// other task and waits for it: every task must still be dropped and its handle completed.
#[test]
fn wakeups_from_other_threads_during_close_are_not_lost() {
    const N: usize = 20_000;
    let (dropped, finished) = finishes_within(WATCHDOG, || {
        let lp = EventLoop::new();
        let dropped = Arc::new(AtomicUsize::new(0));
        let wakers: Arc<Mutex<Vec<Waker>>> = Arc::default();
        let w = wakers.clone();
        // Spawned first: close drops it first, and its destructor wakes the others remotely.
        let first = lp.spawn(async move {
            struct WakeAllFromAnotherThread(Arc<Mutex<Vec<Waker>>>);
            impl Drop for WakeAllFromAnotherThread {
                fn drop(&mut self) {
                    let wakers = std::mem::take(&mut *self.0.lock().unwrap());
                    let _ =
                        std::thread::spawn(move || wakers.into_iter().for_each(Waker::wake)).join();
                }
            }
            let _wake = WakeAllFromAnotherThread(w);
            pending::<()>().await;
        });
        let mut tasks = vec![first];
        for _ in 0..N {
            let wakers = wakers.clone();
            let counter = common::CountOnDropSync(dropped.clone());
            tasks.push(lp.spawn(async move {
                let _counter = counter;
                poll_fn(|cx| {
                    wakers.lock().unwrap().push(cx.waker().clone());
                    Poll::<()>::Pending
                })
                .await;
            }));
        }
        let w = wakers.clone();
        lp.run_until_complete(async move {
            while w.lock().unwrap().len() < N {
                runner::yield_now().await;
            }
        })
        .unwrap();
        lp.close();
        let finished = tasks.iter().filter(|t| t.is_finished()).count();
        (dropped.load(Ordering::SeqCst), finished)
    });
    assert_eq!(dropped, N, "every task's future was dropped");
    assert_eq!(finished, N + 1, "every task's handle completed");
}

/// Item 4: a report that cannot be written (stderr is a broken pipe) hung close. Run with the
/// child's stderr closed before it writes anything.
#[test]
fn broken_stderr_does_not_hang_close() {
    let out = common::run_child_without_stderr("broken_stderr_child", WATCHDOG);
    common::assert_child_printed(&out, &["closed after 2 unretrieved panics"]);
}

#[test]
#[ignore = "run by broken_stderr_does_not_hang_close with stderr closed"]
fn broken_stderr_child() {
    let runner = Runner::new();
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    runner
        .run(async move {
            for _ in 0..2 {
                drop(runner::spawn(async { panic!("nobody awaits this") }));
            }
            runner::sleep(Duration::from_millis(5)).await;
            r.set(2);
        })
        .unwrap();
    runner.close();
    println!("closed after {} unretrieved panics", runs.get());
}

/// A panic payload whose own destructor panics.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("a destructor that panics");
        }
    }
}

/// Item 4: a panic payload that panics when dropped hung close; runner drops it quietly and
/// the report still arrives.
#[test]
fn panic_payload_that_panics_on_drop_does_not_hang_close() {
    let messages = finishes_within(WATCHDOG, || {
        let (lp, reports) = recording_loop();
        drop(lp.spawn(async { std::panic::panic_any(PanicsOnDrop) }));
        lp.run_until_complete(async {
            for _ in 0..10 {
                runner::yield_now().await;
            }
        })
        .unwrap();
        lp.close();
        reports.messages()
    });
    assert_eq!(messages, ["task panic was never retrieved"]);
}

/// Item 5: a detached task whose output panics when dropped aborted the process (async-task
/// drops the output under its abort guard). The panic is reported instead.
#[test]
fn output_that_panics_on_drop_does_not_abort() {
    let out = run_child("panicking_output_child", &[]);
    common::assert_child_printed(
        &out,
        &[
            "report: panic while dropping the output of a task",
            "finished",
        ],
    );
}

#[test]
#[ignore = "run by output_that_panics_on_drop_does_not_abort in a child process"]
fn panicking_output_child() {
    let lp = EventLoop::builder()
        .exception_handler(|_, ctx| println!("report: {}", ctx.message()))
        .build();
    lp.run_until_complete(async {
        drop(runner::spawn(async { PanicsOnDrop }));
        let awaited = runner::spawn(async { PanicsOnDrop });
        let output = awaited.await.unwrap();
        std::mem::forget(output);
        for _ in 0..10 {
            runner::yield_now().await;
        }
    })
    .unwrap();
    lp.close();
    println!("finished");
}

/// Spawns a replacement of itself when dropped, forever.
struct Respawn(Rc<Cell<usize>>);

impl Drop for Respawn {
    fn drop(&mut self) {
        let count = self.0.clone();
        count.set(count.get() + 1);
        drop(runner::spawn(async move {
            let _again = Respawn(count);
            pending::<()>().await;
        }));
    }
}

/// Item 6: close never ended when cancelled tasks spawned replacements in their `Drop`. Close
/// cancels in a bounded number of rounds, then reports what it left behind and drops it.
#[test]
fn close_ends_when_cancelled_tasks_keep_respawning() {
    let (messages, respawned) = finishes_within(WATCHDOG, || {
        let (lp, reports) = recording_loop();
        let runner = Runner::builder().loop_factory(move || lp).build();
        let count = Rc::new(Cell::new(0));
        let c = count.clone();
        runner
            .run(async move {
                drop(runner::spawn(async move {
                    let _r = Respawn(c);
                    pending::<()>().await;
                }));
                runner::yield_now().await;
            })
            .unwrap();
        runner.close();
        (reports.messages(), count.get())
    });
    let kept: Vec<_> = messages
        .iter()
        .filter(|m| m.starts_with("tasks kept being spawned during runner shutdown"))
        .collect();
    assert_eq!(kept.len(), 1, "one report: {messages:?}");
    assert!(
        kept[0].contains("1 task was still pending"),
        "the report says how many were left: {messages:?}"
    );
    assert!(respawned >= 2, "the tasks were cancelled in rounds");
}

/// Item 7: a thread flooding `call_soon_threadsafe` with 2 µs callbacks starved the main task:
/// its 100 ms sleep ended seconds after the flood. Each iteration runs a bounded batch of posted
/// work, so the sleep ends while the flood is still going on (it lasts ten times as long).
#[test]
fn threadsafe_flood_does_not_starve_the_main_task() {
    let (woke_during_flood, ran_before_wake) = finishes_within(Duration::from_secs(120), || {
        let flooding = Arc::new(AtomicBool::new(true));
        let ran = Arc::new(AtomicUsize::new(0));
        let runner = Runner::new();
        let handle = runner.get_loop().unwrap().handle();
        let (f, r) = (flooding.clone(), ran.clone());
        let flood = std::thread::spawn(move || {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(1) {
                for _ in 0..64 {
                    let r = r.clone();
                    handle.call_soon_threadsafe(move || {
                        let t = Instant::now();
                        while t.elapsed() < Duration::from_micros(2) {}
                        r.fetch_add(1, Ordering::Relaxed);
                    });
                }
            }
            f.store(false, Ordering::SeqCst);
        });
        let (f, r) = (flooding.clone(), ran.clone());
        let seen = runner
            .run(async move {
                runner::sleep(Duration::from_millis(100)).await;
                (f.load(Ordering::SeqCst), r.load(Ordering::Relaxed))
            })
            .unwrap();
        flood.join().unwrap();
        drop(runner);
        seen
    });
    assert!(
        woke_during_flood,
        "main's 100 ms sleep ended only after the 1 s flood (callbacks run before: {ran_before_wake})"
    );
}

/// Item 3 under real concurrency: another thread wakes every task while the loop thread closes
/// the loop. Whatever the interleaving, every task is dropped on the loop thread (their futures
/// are `!Send`: the counter is an `Rc`) and every handle completes.
#[test]
fn concurrent_wakeups_while_closing_lose_nothing() {
    const N: usize = 20_000;
    for _ in 0..5 {
        let (dropped, finished) = finishes_within(WATCHDOG, || {
            let lp = EventLoop::new();
            let dropped = Rc::new(Cell::new(0));
            let wakers: Arc<Mutex<Vec<Waker>>> = Arc::default();
            let tasks: Vec<_> = (0..N)
                .map(|_| {
                    let wakers = wakers.clone();
                    let counter = common::CountOnDrop(dropped.clone());
                    lp.spawn(async move {
                        let _counter = counter;
                        poll_fn(|cx| {
                            wakers.lock().unwrap().push(cx.waker().clone());
                            Poll::<()>::Pending
                        })
                        .await;
                    })
                })
                .collect();
            let w = wakers.clone();
            lp.run_until_complete(async move {
                while w.lock().unwrap().len() < N {
                    runner::yield_now().await;
                }
            })
            .unwrap();
            let all = std::mem::take(&mut *wakers.lock().unwrap());
            let start = Arc::new(std::sync::Barrier::new(2));
            let go = start.clone();
            let waking = std::thread::spawn(move || {
                go.wait();
                all.into_iter().for_each(Waker::wake);
            });
            start.wait();
            lp.close();
            waking.join().unwrap();
            let finished = tasks.iter().filter(|t| t.is_finished()).count();
            (dropped.get(), finished)
        });
        assert_eq!((dropped, finished), (N, N));
    }
}

/// A runner on a recording loop with `shutdown_timeout`; runs `body`, closes, under the
/// watchdog. The reports' messages, and the log `body` wrote to.
fn close_after<F, Fut>(shutdown_timeout: Duration, body: F) -> (Vec<String>, Vec<String>)
where
    F: FnOnce(Rc<RefCell<Vec<String>>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    finishes_within(WATCHDOG, move || {
        let (lp, reports) = recording_loop();
        let log = Rc::new(RefCell::new(Vec::new()));
        let runner = Runner::builder()
            .loop_factory(move || lp)
            .executor_shutdown_timeout(shutdown_timeout)
            .build();
        runner.run(body(log.clone())).unwrap();
        runner.close();
        let log = log.borrow().clone();
        (reports.messages(), log)
    })
}

/// A task that runs until cancelled, logging its cancellation.
async fn forever(log: Rc<RefCell<Vec<String>>>, name: &'static str) {
    let _bye = common::LogOnDrop(log, format!("{name} cancelled"));
    loop {
        runner::sleep(Duration::from_millis(1)).await;
    }
}

/// Issue 23, item 23: a `defer` in a task that close cancels, whose cleanup spawns a task and
/// waits for it (a task that runs until cancelled). Close never ended: its rounds of
/// cancelling waited for the whole first round before looking for new tasks. The task the
/// cleanup spawned is cancelled in a further round, the cleanup ends, close ends.
#[test]
fn close_cancels_a_task_a_cancelled_tasks_cleanup_spawns_and_waits_for() {
    let (reports, log) = close_after(Duration::from_secs(30), |log| async move {
        drop(runner::spawn(async move {
            let _cleanup = runner::defer(async move {
                let helper = runner::spawn(forever(log.clone(), "helper"));
                let ended = helper.await;
                log.borrow_mut().push(format!(
                    "cleanup saw cancelled: {}",
                    ended.unwrap_err().is_cancelled()
                ));
            });
            pending::<()>().await;
        }));
        runner::yield_now().await;
    });
    assert_eq!(log, ["helper cancelled", "cleanup saw cancelled: true"]);
    assert_eq!(reports, Vec::<String>::new());
}

/// Issue 23, item 23: a generator closed at shutdown whose cleanup spawns a task and waits for
/// it: `shutdown_asyncgens` cancelled nothing, so close never ended.
#[test]
fn close_cancels_a_task_a_generators_cleanup_spawns_at_shutdown_and_waits_for() {
    let (reports, log) = close_after(Duration::from_secs(30), |log| async move {
        let mut gen = runner::AsyncGen::new(move |y| async move {
            let result = y.yield_(1).await;
            let helper = runner::spawn(forever(log.clone(), "helper"));
            let ended = helper.await;
            log.borrow_mut().push(format!(
                "close saw cancelled: {}",
                ended.unwrap_err().is_cancelled()
            ));
            result
        });
        assert_eq!(gen.next().await, Some(1));
        std::mem::forget(gen); // never dropped: only close's second step closes it
    });
    assert_eq!(log, ["helper cancelled", "close saw cancelled: true"]);
    assert_eq!(reports, Vec::<String>::new());
}

/// Issue 23, item 23: a `finalize` cleanup that never ends. Close stops waiting for it after
/// the shutdown timeout, reports which cleanup it cut short, and ends.
#[test]
fn close_cuts_short_a_cleanup_that_never_ends_and_names_it() {
    let (reports, log) = close_after(Duration::from_millis(200), |log| async move {
        let mut stream =
            runner::finalize(futures_lite::stream::iter([1, 2]), move |_| async move {
                let _dropped = common::LogOnDrop(log, "cleanup dropped unfinished".into());
                pending::<()>().await;
            });
        // Iterated, so registered with the loop, and never dropped: close's second step
        // closes it.
        assert_eq!(futures_lite::StreamExt::next(&mut stream).await, Some(1));
        std::mem::forget(stream);
    });
    assert_eq!(log, ["cleanup dropped unfinished"]);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(
        reports[0].starts_with("close stopped waiting after 0.2 s for:")
            && reports[0]
                .contains("the cleanup of <Finalized stream created at tests/shutdown.rs:"),
        "{reports:?}"
    );
}

/// Issue 23, item 24: a finalized stream dropped in `main` whose cleanup waits for a background
/// task that runs until cancelled. `main` never returned and nothing was printed. As Python runs
/// a generator's `aclose()` as a task of its own, the close no longer holds `main` once its
/// future has returned: the run returns, close cancels the background task, and the cleanup ends.
#[test]
fn a_stream_dropped_in_main_whose_cleanup_waits_for_a_background_task_lets_the_program_end() {
    let (reports, log) = close_after(Duration::from_secs(30), |log| async move {
        let background = runner::spawn(forever(log.clone(), "background"));
        runner::yield_now().await; // the background task is running
        let l = log.clone();
        let stream = runner::finalize(futures_lite::stream::iter([1]), move |_| async move {
            let ended = background.await;
            l.borrow_mut().push(format!(
                "cleanup saw cancelled: {}",
                ended.unwrap_err().is_cancelled()
            ));
        });
        drop(stream);
        log.borrow_mut().push("main returns".into());
    });
    assert_eq!(
        log,
        [
            "main returns",
            "background cancelled",
            "cleanup saw cancelled: true"
        ]
    );
    assert_eq!(reports, Vec::<String>::new());
}

/// Issue 23, item 24: the same with an `AsyncGen` dropped in `main`.
#[test]
fn a_generator_dropped_in_main_whose_close_waits_for_a_background_task_lets_the_program_end() {
    let (reports, log) = close_after(Duration::from_secs(30), |log| async move {
        let background = runner::spawn(forever(log.clone(), "background"));
        runner::yield_now().await; // the background task is running
        let l = log.clone();
        let mut gen = runner::AsyncGen::new(move |y| async move {
            let result = y.yield_(1).await;
            let ended = background.await;
            l.borrow_mut().push(format!(
                "close saw cancelled: {}",
                ended.unwrap_err().is_cancelled()
            ));
            result
        });
        assert_eq!(gen.next().await, Some(1));
        drop(gen);
        log.borrow_mut().push("main returns".into());
    });
    assert_eq!(
        log,
        [
            "main returns",
            "background cancelled",
            "close saw cancelled: true"
        ]
    );
    assert_eq!(reports, Vec::<String>::new());
}

/// Issue 23, item 24: `main`'s own `defer` cleanup is its `finally`, which the run waits for; a
/// wait that lasts is never silent. A second after `main` returned, stderr says what it waits
/// for. Run in a child process, whose stderr is read.
#[test]
fn main_waiting_for_its_deferred_cleanup_says_so_after_a_second() {
    let out = run_child("main_waits_for_its_cleanup_child", &[]);
    common::assert_child_printed(&out, &["run returned"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("runner: main returned 1 s ago and still runs its async cleanup")
            && stderr.contains("the deferred cleanup created at tests/shutdown.rs:"),
        "{}",
        common::text(&out)
    );
}

#[test]
#[ignore = "run by main_waiting_for_its_deferred_cleanup_says_so_after_a_second"]
fn main_waits_for_its_cleanup_child() {
    runner::run(async {
        let _finally = runner::defer(runner::sleep(Duration::from_millis(1500)));
    })
    .unwrap();
    println!("run returned");
}

/// Spawn tasks onto `lp` from another thread until it has seen the loop closed (one spawn
/// after that, at least), each task holding a counter bumped when its future is dropped; then
/// close the loop (and drop it, with `drop_loop`) from this thread. The handles, and the count.
fn remote_spawns_racing_close(drop_loop: bool) -> (Vec<runner::Task<()>>, Arc<AtomicUsize>) {
    let lp = EventLoop::new();
    let handle = lp.handle();
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let spawner = std::thread::spawn(move || {
        let mut tasks = Vec::new();
        loop {
            let closed = handle.is_closed();
            let count = common::CountOnDropSync(d.clone());
            tasks.push(handle.spawn(async move { drop(count) }));
            if closed {
                return tasks;
            }
        }
    });
    std::thread::sleep(Duration::from_micros(100));
    lp.close();
    if drop_loop {
        drop(lp);
    }
    let tasks = spawner.join().unwrap();
    (tasks, dropped)
}

/// A sweep finding: `LoopHandle::spawn` racing `EventLoop::close` left a task queued after
/// close's teardown, never run nor dropped, its handle never completing (and, with the loop
/// dropped, the task and the loop's queue leaked, each holding the other). Once torn down, the
/// loop drops what arrives at once. Three hundred races, with the loop kept and dropped.
#[test]
fn tasks_spawned_from_another_thread_as_the_loop_closes_are_dropped_and_complete() {
    finishes_within(Duration::from_secs(120), || {
        for round in 0..300 {
            for drop_loop in [false, true] {
                let (tasks, dropped) = remote_spawns_racing_close(drop_loop);
                let n = tasks.len();
                let unfinished = tasks.iter().filter(|t| !t.is_finished()).count();
                assert_eq!(unfinished, 0, "round {round} (loop dropped: {drop_loop})");
                assert_eq!(
                    dropped.load(Ordering::SeqCst),
                    n,
                    "round {round}: every future dropped"
                );
                for task in tasks {
                    let ended = futures_lite::future::block_on(task);
                    assert!(ended.is_err_and(|e| e.is_cancelled()) || n > 0);
                }
            }
        }
    });
}

/// A sweep finding: close cancels in rounds, and counted as a round each batch of tasks spawned
/// while one round was being cancelled (a loop iteration's worth). N tasks whose deferred
/// cleanups each spawn one helper and wait for it are one generation of spawns, whatever N:
/// every cleanup finishes, and nothing is reported ("tasks kept being spawned" came from
/// N ≈ 900; from N ≈ 1100 close stopped waiting and the cleanups failed after it).
#[test]
fn one_generation_of_tasks_spawned_by_cleanups_is_one_round_whatever_its_size() {
    for n in [1000, 2000] {
        let (reports, log) = close_after(Duration::from_secs(30), move |log| async move {
            let started = Rc::new(Cell::new(0usize));
            for _ in 0..n {
                let (log, started) = (log.clone(), started.clone());
                drop(runner::spawn(async move {
                    started.set(started.get() + 1);
                    let _cleanup = runner::defer(async move {
                        // Spawned while close cancels: cancelled in the next round.
                        let _ = runner::spawn(async {}).await;
                        log.borrow_mut().push(String::new());
                    });
                    pending::<()>().await;
                }));
            }
            while started.get() < n {
                runner::yield_now().await;
            }
        });
        assert_eq!(log.len(), n, "every cleanup finished");
        assert_eq!(reports, Vec::<String>::new());
    }
}

/// The three ways a cleanup went home to a loop and was lost without a word: a `defer` guard, and
/// a finalized stream never iterated, dropped on another thread between two runs (close had
/// nothing else to wait for, and dropped the job that carried the cleanup home), and a guard
/// dropped on another thread while close joins the default executor (its cleanup was torn down
/// unfinished). Each child prints how many times its cleanup ran.
#[test]
fn cleanups_sent_home_between_runs_or_during_close_run() {
    for child in [
        "defer_dropped_elsewhere_between_runs_child",
        "finalized_dropped_elsewhere_between_runs_child",
        "defer_dropped_elsewhere_during_the_executor_join_child",
    ] {
        let out = run_child(child, &[]);
        common::assert_child_printed(&out, &["cleanup ran 1 time(s)"]);
    }
}

/// A runner, one run that returns what `make` makes with a counter its cleanup bumps, the value
/// dropped on another thread, then close: how many times the cleanup ran.
fn send_home_between_runs<T: Send + 'static>(make: impl FnOnce(Arc<AtomicUsize>) -> T) -> usize {
    let ran = Arc::new(AtomicUsize::new(0));
    let runner = Runner::new();
    let value = runner.run(async { make(ran.clone()) }).unwrap();
    std::thread::spawn(move || drop(value)).join().unwrap();
    runner.close();
    ran.load(Ordering::SeqCst)
}

#[test]
#[ignore = "run by cleanups_sent_home_between_runs_or_during_close_run"]
fn defer_dropped_elsewhere_between_runs_child() {
    let ran = send_home_between_runs(|ran| {
        runner::defer(async move {
            ran.fetch_add(1, Ordering::SeqCst);
        })
    });
    println!("cleanup ran {ran} time(s)");
}

#[test]
#[ignore = "run by cleanups_sent_home_between_runs_or_during_close_run"]
fn finalized_dropped_elsewhere_between_runs_child() {
    let ran = send_home_between_runs(|ran| {
        runner::finalize(futures_lite::stream::iter([1u32, 2]), move |_| async move {
            ran.fetch_add(1, Ordering::SeqCst);
        })
    });
    println!("cleanup ran {ran} time(s)");
}

#[test]
#[ignore = "run by cleanups_sent_home_between_runs_or_during_close_run"]
fn defer_dropped_elsewhere_during_the_executor_join_child() {
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let runner = Runner::new();
    runner
        .run(async move {
            let guard = runner::defer(async move {
                runner::sleep(Duration::from_millis(100)).await;
                r.fetch_add(1, Ordering::SeqCst);
            });
            drop(runner::to_thread(move || {
                std::thread::sleep(Duration::from_millis(100)); // close joins the executor now
                std::thread::spawn(move || drop(guard)).join().unwrap();
            }));
        })
        .unwrap();
    runner.close();
    println!("cleanup ran {} time(s)", ran.load(Ordering::SeqCst));
}
