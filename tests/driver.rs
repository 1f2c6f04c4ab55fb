//! The threads that run tasks and wait for events (docs/behaviour.md R10): timers kept past
//! their loop, and the worker pool's scheduling (who runs a task, who is woken for it). Every
//! test runs under the watchdog: a task that is never run hangs its test, which fails.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::finishes_within;
use runner::Runner;

const LIMIT: Duration = Duration::from_secs(60);

/// How long a test's blocking task spins before it gives up (and says so): far beyond the time
/// the awaited work needs, so that a give-up means the work was never run.
const GIVE_UP: Duration = Duration::from_secs(20);

fn worker_name() -> String {
    thread::current().name().unwrap_or("?").to_owned()
}

/// Spin (blocking the thread) until `flag` is set or `GIVE_UP` has passed: whether it was set.
fn block_until(flag: &AtomicBool) -> bool {
    let give_up = std::time::Instant::now() + GIVE_UP;
    while !flag.load(Ordering::SeqCst) {
        if std::time::Instant::now() > give_up {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}

/// A sleep that waited in one runner's timers, awaited after that runner closed in another
/// runner: it waited in the closed loop's timers, which nobody fires, for ever. It moves to the
/// loop that polls it.
#[test]
#[allow(clippy::async_yields_async)] // The sleep is handed out of the run on purpose.
fn a_sleep_that_waited_in_a_closed_runner_ends_in_another() {
    let ended = finishes_within(LIMIT, || {
        let first = Runner::new();
        let sleep = first
            .run(async {
                let mut sleep = Box::pin(runner::sleep(Duration::from_millis(50)));
                assert!(futures_lite::future::poll_once(&mut sleep).await.is_none());
                sleep
            })
            .unwrap();
        first.close();
        runner::run(async {
            sleep.await;
            "ended"
        })
        .unwrap()
    });
    assert_eq!(ended, "ended");
}

/// The same with a `timeout` awaited on a plain thread while its first runner is open but not
/// running: it falls back to async-io's timer there, and elapses.
#[test]
#[allow(clippy::async_yields_async)] // The timeout is handed out of the run on purpose.
fn a_timeout_that_waited_in_an_idle_runner_elapses_on_a_plain_thread() {
    let out = finishes_within(LIMIT, || {
        let first = Runner::new();
        let t = first
            .run(async {
                let mut t = Box::pin(runner::timeout(
                    Duration::from_millis(50),
                    std::future::pending::<()>(),
                ));
                assert!(futures_lite::future::poll_once(&mut t).await.is_none());
                t
            })
            .unwrap();
        let out = thread::spawn(move || futures_lite::future::block_on(t))
            .join()
            .unwrap();
        drop(first);
        out
    });
    assert_eq!(out, Err(runner::Elapsed));
}

/// Pool tasks that yield for ever (each waits, yielding, for a task spawned from the loop's
/// thread) kept their workers' own queues busy, and a worker looked at the shared queue only
/// when its own was empty: the task from the loop never ran. Every 61 tasks a worker looks at
/// the shared queue first.
#[test]
fn tasks_yielding_on_every_worker_do_not_starve_a_task_spawned_from_the_loop() {
    let ended = finishes_within(LIMIT, || {
        let mut ended = Vec::new();
        for (workers, yielders) in [(1, 1), (2, 8)] {
            let n = Runner::builder()
                .workers(workers)
                .run(async move {
                    let done = Arc::new(AtomicBool::new(false));
                    let started = Arc::new(AtomicUsize::new(0));
                    let handles: Vec<_> = (0..yielders)
                        .map(|_| {
                            let (done, started) = (done.clone(), started.clone());
                            runner::spawn_send(async move {
                                started.fetch_add(1, Ordering::SeqCst);
                                while !done.load(Ordering::SeqCst) {
                                    runner::yield_now().await;
                                }
                            })
                        })
                        .collect();
                    common::eventually("every yielder started", || {
                        started.load(Ordering::SeqCst) == yielders
                    })
                    .await;
                    let d = done.clone();
                    runner::spawn_send(async move { d.store(true, Ordering::SeqCst) })
                        .await
                        .unwrap();
                    let mut n = 0;
                    for h in handles {
                        h.await.unwrap();
                        n += 1;
                    }
                    n
                })
                .unwrap();
            ended.push(n);
        }
        ended
    });
    assert_eq!(ended, [1, 8]);
}

/// A task pinned to a worker (`spawn` in a pool task) spawns a pool task, then blocks its
/// worker until that task has run. The worker's run was asleep while it ran the pinned task,
/// so the new task was queued on the blocked worker, and nobody else was woken: a deadlock.
/// The other, idle, worker runs it.
#[test]
fn a_pool_task_spawned_by_a_blocking_pinned_task_runs_on_the_idle_worker() {
    let runs = finishes_within(LIMIT, || {
        (0..8)
            .map(|_| {
                Runner::builder()
                    .workers(2)
                    .run(async {
                        // The loop's own driver (its threads wait on it), both workers idle.
                        let _listener =
                            runner::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                        runner::spawn_send(async {}).await.unwrap();
                        runner::sleep(Duration::from_millis(20)).await;
                        runner::spawn_send(async {
                            let pinned = runner::spawn(async {
                                let ran = Arc::new(AtomicBool::new(false));
                                let r = ran.clone();
                                let child = runner::spawn_send(async move {
                                    r.store(true, Ordering::SeqCst);
                                    worker_name()
                                });
                                let in_time = block_until(&ran);
                                (child, worker_name(), in_time)
                            });
                            let (child, pinned_on, in_time) = pinned.await.unwrap();
                            let child_on = child.await.unwrap();
                            (in_time, pinned_on != child_on)
                        })
                        .await
                        .unwrap()
                    })
                    .unwrap()
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(
        runs,
        vec![(true, true); 8],
        "(ran while the pinned task blocked, elsewhere)"
    );
}

/// Two of three workers block in pinned tasks until a task spawned from the loop's thread has
/// run. Asleep in their runs while they ran the pinned tasks, they were woken for it (one was
/// counted as looking for work, and no other worker was woken): it waited for them. The idle
/// worker runs it.
#[test]
fn a_task_spawned_from_the_loop_reaches_the_idle_worker_while_others_block() {
    let runs = finishes_within(LIMIT, || {
        (0..6)
            .map(|_| {
                Runner::builder()
                    .workers(3)
                    .run(async {
                        let _listener =
                            runner::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                        let claimed: Arc<Mutex<HashSet<String>>> = Arc::default();
                        let blocking = Arc::new(AtomicUsize::new(0));
                        let ran = Arc::new(AtomicBool::new(false));
                        let mut blockers = Vec::new();
                        // A blocker pinned on each of two workers.
                        while claimed.lock().unwrap().len() < 2 {
                            let (claimed, blocking, ran) =
                                (claimed.clone(), blocking.clone(), ran.clone());
                            let blocker = runner::spawn_send(async move {
                                let mine = {
                                    let mut claimed = claimed.lock().unwrap();
                                    claimed.len() < 2 && claimed.insert(worker_name())
                                };
                                match mine {
                                    true => Some(runner::spawn(async move {
                                        blocking.fetch_add(1, Ordering::SeqCst);
                                        block_until(&ran)
                                    })),
                                    false => None,
                                }
                            })
                            .await
                            .unwrap();
                            blockers.extend(blocker);
                            runner::sleep(Duration::from_millis(1)).await;
                        }
                        common::eventually("both blockers block", || {
                            blocking.load(Ordering::SeqCst) == 2
                        })
                        .await;
                        let r = ran.clone();
                        let on = runner::spawn_send(async move {
                            r.store(true, Ordering::SeqCst);
                            worker_name()
                        })
                        .await
                        .unwrap();
                        let mut in_time = true;
                        for blocker in blockers {
                            in_time &= blocker.await.unwrap();
                        }
                        let elsewhere = !claimed.lock().unwrap().contains(&on);
                        (in_time, elsewhere)
                    })
                    .unwrap()
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(
        runs,
        vec![(true, true); 6],
        "(ran while the others blocked, on the idle one)"
    );
}
