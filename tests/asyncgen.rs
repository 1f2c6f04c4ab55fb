//! R5 (async generators, stream finalization, defer) and R3.2 (cancellation waits for cleanup).

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use common::{counting_factory, eventually};
use futures_lite::StreamExt;
use runner::{AsyncGen, AsyncGenError, ContextVar, Runner, TaskError};

type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn push(log: &Log, s: impl Into<String>) {
    log.borrow_mut().push(s.into());
}

/// A generator yielding `0..n` (forever if `n` is None), whose async cleanup logs "cleanup".
fn numbers(log: Log, n: Option<u32>) -> AsyncGen<u32> {
    AsyncGen::new(move |y| async move {
        let result = async {
            let mut i = 0;
            while n.map_or(true, |n| i < n) {
                y.yield_(i).await?;
                i += 1;
            }
            Ok(())
        }
        .await;
        runner::yield_now().await; // the cleanup is asynchronous
        push(&log, "cleanup");
        result
    })
}

/// R5.1, R5.3: items come lazily; exhaustion runs the cleanup inside the body, once.
#[test]
fn exhaustion_runs_cleanup() {
    let l = log();
    let seen = runner::run({
        let l = l.clone();
        async move {
            let mut gen = numbers(l.clone(), Some(3));
            assert!(
                l.borrow().is_empty(),
                "nothing runs before the first next()"
            );
            let mut seen = Vec::new();
            while let Some(i) = gen.next().await {
                seen.push(i);
            }
            assert!(gen.is_closed());
            assert_eq!(gen.next().await, None);
            seen
        }
    });
    assert_eq!(seen.unwrap(), [0, 1, 2]);
    assert_eq!(*l.borrow(), ["cleanup"]);
}

/// R5.2: aclose at a suspended yield_ runs the async cleanup; then the stream yields None.
#[test]
fn aclose_runs_async_cleanup_then_none() {
    let l = log();
    let l2 = l.clone();
    runner::run(async move {
        let mut gen = numbers(l2.clone(), None);
        assert_eq!(gen.next().await, Some(0));
        assert_eq!(gen.next().await, Some(1));
        gen.aclose().await.unwrap();
        assert_eq!(
            *l2.borrow(),
            ["cleanup"],
            "aclose returned after the async cleanup"
        );
        assert_eq!(gen.next().await, None);
        gen.aclose().await.unwrap(); // closing a finished generator does nothing
    })
    .unwrap();
    assert_eq!(*l.borrow(), ["cleanup"]);
}

/// R5.2: a body that yields again after GeneratorExit gives IgnoredExit.
#[test]
fn yielding_after_exit_is_ignored_exit() {
    runner::run(async {
        let mut gen = AsyncGen::new(|y| async move {
            loop {
                let _ = y.yield_(1).await; // ignores Err(GeneratorExit)
            }
        });
        assert_eq!(gen.next().await, Some(1));
        let err = gen.aclose().await.unwrap_err();
        assert!(matches!(err, AsyncGenError::IgnoredExit));
        assert!(
            err.to_string()
                .contains("async generator ignored GeneratorExit"),
            "{err}"
        );
        assert_eq!(gen.next().await, None);
    })
    .unwrap();
}

/// R5.2: closing a never-started generator does nothing, its body never runs.
#[test]
fn aclose_never_started() {
    let l = log();
    let l2 = l.clone();
    runner::run(async move {
        let mut gen = numbers(l2, Some(3));
        gen.aclose().await.unwrap();
        assert_eq!(gen.next().await, None);
    })
    .unwrap();
    assert!(l.borrow().is_empty());
}

/// R5.3: dropping a started generator schedules its cleanup on the loop.
#[test]
fn dropping_started_generator_runs_cleanup() {
    let l = log();
    let l2 = l.clone();
    runner::run(async move {
        let mut gen = numbers(l2.clone(), None);
        assert_eq!(gen.next().await, Some(0));
        drop(gen);
        eventually("the dropped generator's cleanup ran", || {
            !l2.borrow().is_empty()
        })
        .await;
    })
    .unwrap();
    assert_eq!(*l.borrow(), ["cleanup"], "exactly once");
}

/// R5.3: a never-started generator's drop schedules nothing.
#[test]
fn dropping_unstarted_generator_schedules_nothing() {
    let l = log();
    let l2 = l.clone();
    runner::run(async move {
        drop(numbers(l2, None));
        runner::sleep(Duration::from_millis(5)).await;
    })
    .unwrap();
    assert!(l.borrow().is_empty());
}

/// R5.3, R5.4: a generator started in one run and still held by the caller is closed by close();
/// afterwards it yields None.
#[test]
fn held_generator_closed_by_runner_close() {
    let l = log();
    let runner = Runner::new();
    let mut gen = numbers(l.clone(), None);
    assert_eq!(runner.run(gen.next()).unwrap(), Some(0));
    assert!(l.borrow().is_empty());
    runner.close();
    assert_eq!(*l.borrow(), ["cleanup"]);
    assert_eq!(futures_lite::future::block_on(gen.next()), None);
    assert!(gen.is_closed());
    drop(gen);
    assert_eq!(
        *l.borrow(),
        ["cleanup"],
        "dropping it afterwards runs nothing more"
    );
}

/// R5.4: shutdown_asyncgens closes generators concurrently.
#[test]
fn shutdown_asyncgens_closes_concurrently() {
    let l = log();
    let runner = Runner::new();
    let make = |name: &'static str, l: Log| {
        AsyncGen::new(move |y| async move {
            let r = y.yield_(()).await;
            push(&l, format!("{name} start"));
            runner::sleep(Duration::from_millis(20)).await;
            push(&l, format!("{name} end"));
            r
        })
    };
    let (mut a, mut b) = (make("a", l.clone()), make("b", l.clone()));
    runner
        .run(async { (a.next().await, b.next().await) })
        .unwrap();
    runner.close();
    let order = l.borrow().clone();
    assert_eq!(order.len(), 4, "{order:?}");
    assert!(
        order[..2].iter().all(|s| s.ends_with("start")),
        "both started before either ended: {order:?}"
    );
}

/// R5.4: a panicking cleanup is reported, naming the generator.
#[test]
fn panicking_cleanup_reported_naming_generator() {
    let (factory, reports, _) = counting_factory();
    let line = Cell::new(0);
    Runner::builder()
        .loop_factory(factory)
        .run(async {
            line.set(line!() + 1);
            let mut gen = AsyncGen::new(|y| async move {
                let _ = y.yield_(1).await;
                runner::yield_now().await;
                panic!("cleanup exploded");
            });
            assert_eq!(gen.next().await, Some(1));
            drop(gen);
            runner::sleep(Duration::from_millis(5)).await;
        })
        .unwrap();
    let found = reports.with_message("an error occurred during closing of asynchronous generator");
    assert_eq!(found.len(), 1, "{:?}", reports.messages());
    let expected = format!("<AsyncGen created at tests/asyncgen.rs:{}:", line.get());
    assert!(
        found[0].message().contains(&expected),
        "{}",
        found[0].message()
    );
    assert!(found[0].error().unwrap().contains("cleanup exploded"));
}

/// R5.4: a generator first iterated after shutdown_asyncgens is reported.
#[test]
fn iterated_after_shutdown_reported() {
    let (factory, reports, _) = counting_factory();
    Runner::builder()
        .loop_factory(factory)
        .run(async {
            runner::get_running_loop()
                .unwrap()
                .shutdown_asyncgens()
                .await;
            let mut gen = numbers(log(), Some(1));
            assert_eq!(gen.next().await, Some(0));
        })
        .unwrap();
    let found =
        reports.with_message("asynchronous generator was scheduled after shutdown_asyncgens()");
    assert_eq!(found.len(), 1, "{:?}", reports.messages());
    assert!(found[0].message().contains("tests/asyncgen.rs"));
}

/// R5.3: finalize runs its closure exactly once, on drop, whether the stream was exhausted or not.
#[test]
fn finalize_runs_once_on_drop() {
    for exhaust in [true, false] {
        let count = Rc::new(Cell::new(0));
        let c = count.clone();
        runner::run(async move {
            let c2 = c.clone();
            let mut rows =
                runner::finalize(futures_lite::stream::iter([1, 2]), move |rest| async move {
                    runner::yield_now().await;
                    c2.set(c2.get() + 1 + 10 * rest.count().await as u32);
                });
            assert_eq!(rows.next().await, Some(1));
            if exhaust {
                assert_eq!(rows.next().await, Some(2));
                assert_eq!(rows.next().await, None);
                runner::yield_now().await;
                assert_eq!(c.get(), 0, "exhaustion alone does not run the cleanup");
            }
            drop(rows);
            eventually("the cleanup ran", || c.get() > 0).await;
        })
        .unwrap();
        // The closure got the stream back: with one item left unread, `rest.count()` is 1.
        assert_eq!(
            count.get(),
            if exhaust { 1 } else { 11 },
            "exhaust = {exhaust}"
        );
    }
}

/// R5.3, R5.4: a finalized stream still held at close is cleaned up by shutdown_asyncgens.
#[test]
fn finalized_stream_closed_at_shutdown() {
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    let runner = Runner::new();
    let mut rows = runner::finalize(futures_lite::stream::iter([1, 2, 3]), move |_| async move {
        c.set(c.get() + 1);
    });
    assert_eq!(runner.run(rows.next()).unwrap(), Some(1));
    runner.close();
    assert_eq!(count.get(), 1);
    assert_eq!(futures_lite::future::block_on(rows.next()), None);
    drop(rows);
    assert_eq!(count.get(), 1, "exactly once");
}

/// R5.5: defer runs on normal scope exit; disarm stops it.
#[test]
fn defer_scope_exit_and_disarm() {
    let l = log();
    let l2 = l.clone();
    runner::run(async move {
        {
            let l3 = l2.clone();
            let _guard = runner::defer(async move {
                runner::yield_now().await;
                push(&l3, "deferred");
            });
            push(&l2, "body");
        }
        let l4 = l2.clone();
        runner::defer(async move { push(&l4, "disarmed: never") }).disarm();
        eventually("the deferred cleanup ran", || l2.borrow().len() == 2).await;
    })
    .unwrap();
    assert_eq!(*l.borrow(), ["body", "deferred"]);
}

/// R3.2, R5.5: a cancelled task's awaiter sees Cancelled only after its deferred async cleanup ran.
#[test]
fn cancelled_task_awaiter_sees_cancelled_after_cleanup() {
    let l = log();
    let l2 = l.clone();
    runner::run(async move {
        let l3 = l2.clone();
        let task = runner::spawn(async move {
            let l4 = l3.clone();
            let _guard = runner::defer(async move {
                push(&l4, "cleanup started");
                runner::sleep(Duration::from_millis(10)).await;
                push(&l4, "cleanup finished");
            });
            runner::sleep(Duration::from_secs(60)).await;
        });
        runner::yield_now().await;
        task.cancel();
        let r = task.to_ref();
        let err = task.await.unwrap_err();
        assert!(err.is_cancelled());
        assert!(r.is_finished());
        push(&l2, "awaiter saw Cancelled");
    })
    .unwrap();
    assert_eq!(
        *l.borrow(),
        [
            "cleanup started",
            "cleanup finished",
            "awaiter saw Cancelled"
        ]
    );
}

/// R3.2: generators and finalized streams a cancelled task owned are closed as part of it.
#[test]
fn cancelled_task_closes_its_generators_first() {
    let l = log();
    let l2 = l.clone();
    runner::run(async move {
        let l3 = l2.clone();
        let task = runner::spawn(async move {
            let mut gen = numbers(l3.clone(), None);
            let l4 = l3.clone();
            let mut stream =
                runner::finalize(futures_lite::stream::pending::<()>(), move |_| async move {
                    runner::sleep(Duration::from_millis(5)).await;
                    push(&l4, "stream closed");
                });
            gen.next().await;
            stream.next().await;
        });
        runner::yield_now().await;
        task.cancel();
        assert!(task.await.unwrap_err().is_cancelled());
        push(&l2, "awaiter saw Cancelled");
    })
    .unwrap();
    let order = l.borrow().clone();
    assert_eq!(
        order.last().map(String::as_str),
        Some("awaiter saw Cancelled"),
        "{order:?}"
    );
    assert!(order.contains(&"cleanup".to_owned()) && order.contains(&"stream closed".to_owned()));
}

/// R3.2: a task that panics still runs its deferred cleanup before its awaiter sees the panic.
#[test]
fn panicking_task_runs_cleanup_first() {
    let l = log();
    let l2 = l.clone();
    runner::run(async move {
        let l3 = l2.clone();
        let task = runner::spawn(async move {
            let _guard = runner::defer(async move {
                runner::yield_now().await;
                push(&l3, "cleanup");
            });
            panic!("task failed");
        });
        let err = task.await.unwrap_err();
        assert!(matches!(err, TaskError::Panicked(_)));
        push(&l2, "awaiter saw the panic");
    })
    .unwrap();
    assert_eq!(*l.borrow(), ["cleanup", "awaiter saw the panic"]);
}

/// R4.5: deferred cleanups and finalizers run in a copy of their creator's context.
#[test]
fn cleanups_run_in_creators_context() {
    static WHO: ContextVar<&'static str> = ContextVar::new("who");
    let l = log();
    let l2 = l.clone();
    runner::run(async move {
        WHO.set("creator");
        let l3 = l2.clone();
        let guard = runner::defer(async move { push(&l3, WHO.get().unwrap_or("none")) });
        let l4 = l2.clone();
        let mut gen = AsyncGen::new(move |y| async move {
            let r = y.yield_(()).await;
            push(&l4, format!("gen: {}", WHO.get().unwrap_or("none")));
            r
        });
        gen.next().await;
        WHO.set("someone else");
        drop(guard);
        drop(gen);
        eventually("both cleanups ran", || l2.borrow().len() == 2).await;
    })
    .unwrap();
    let mut seen = l.borrow().clone();
    seen.sort();
    assert_eq!(seen, ["creator", "gen: creator"]);
}

/// R5.3: a guard dropped by sync code between runs has its cleanup run on its loop, at close.
#[test]
fn defer_dropped_outside_tasks_runs_on_its_loop() {
    let ran_with_loop = Rc::new(Cell::new(None));
    let r = ran_with_loop.clone();
    let runner = Runner::new();
    let guard = runner
        .run(async move {
            runner::defer(async move { r.set(Some(runner::get_running_loop().is_some())) })
        })
        .unwrap();
    drop(guard);
    assert_eq!(
        ran_with_loop.get(),
        None,
        "scheduled, not run synchronously"
    );
    runner.close();
    assert_eq!(ran_with_loop.get(), Some(true), "close ran it on the loop");
}

/// R5.3: with no open loop at all, the cleanup runs to completion on the spot.
#[test]
fn defer_without_loop_runs_on_the_spot() {
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let guard = runner::defer(async move {
        async_io::Timer::after(Duration::from_millis(1)).await;
        d.set(true);
    });
    drop(guard);
    assert!(done.get());
}

/// CPython's test_asyncio_run_closes_gens_after_hanging_tasks_errors: a task iterating an
/// infinite generator, main returning an error. The error comes back, the task is done, the
/// generator's cleanup ran once, and the task's failure went to the handler. The generator is
/// cancelled between two items (in its sleep), where Python throws CancelledError into it and
/// runs its `finally`; in Rust its body is dropped there (R5.2), so its `finally` is a `defer`.
#[test]
fn test_asyncio_run_closes_gens_after_hanging_tasks_errors() {
    struct PanicOnCancel;
    impl Drop for PanicOnCancel {
        fn drop(&mut self) {
            panic!("division by zero");
        }
    }
    let (factory, reports, _) = counting_factory();
    let l = log();
    let lazyboy = RefCell::new(None);
    let l2 = l.clone();
    let out = Runner::builder().loop_factory(factory).run(async {
        let spin = runner::spawn(async move {
            let _fails_when_cancelled = PanicOnCancel;
            let mut spinner = AsyncGen::new(move |y| async move {
                let _finally = runner::defer(async move { push(&l2, "spinner closed") });
                loop {
                    y.yield_(1).await?;
                    runner::sleep(Duration::from_millis(1)).await;
                }
            });
            while spinner.next().await.is_some() {}
        });
        *lazyboy.borrow_mut() = Some(spin.to_ref());
        drop(spin);
        runner::sleep(Duration::from_millis(5)).await;
        Err::<(), _>("fancy exit")
    });
    assert_eq!(out.unwrap(), Err("fancy exit"));
    assert!(lazyboy.borrow().as_ref().unwrap().is_finished());
    assert_eq!(*l.borrow(), ["spinner closed"]);
    let found = reports.with_message("unhandled panic during runner shutdown");
    assert_eq!(found.len(), 1, "{:?}", reports.messages());
    assert_eq!(found[0].error(), Some("division by zero"));
    assert_eq!(
        found[0].task().unwrap().id(),
        lazyboy.borrow().as_ref().unwrap().info().id()
    );
}

/// Issue 23, item 26: two `yield_` calls at once (here zipped) lost the first item. A second
/// `yield_` while one is pending is refused, with a message that says what to do.
#[test]
fn two_yields_at_once_are_refused() {
    let err = common::finishes_within(Duration::from_secs(30), || {
        runner::run(async {
            let mut gen = AsyncGen::new(|y| async move {
                let (a, b) = futures_lite::future::zip(y.yield_(1), y.yield_(2)).await;
                a?;
                b?;
                Ok(())
            });
            let consumer = runner::spawn(async move { gen.next().await });
            consumer.await.unwrap_err()
        })
        .unwrap()
    });
    let TaskError::Panicked(payload) = err else {
        panic!("the consumer's next panics with the body's refusal")
    };
    let message = common::panic_text(&*payload);
    assert!(
        message.contains("yield_ was called while another yield_ of the same generator"),
        "{message}"
    );
}

/// Issue 23, item 26: a `Yielder` moved into a spawned task: its `yield_` never woke anyone, and
/// its item was dropped when the body ended. Awaited outside the body's own polls, it is
/// refused, with a message that says what to do.
#[test]
fn a_yield_awaited_by_another_task_is_refused() {
    let (items, err) = common::finishes_within(Duration::from_secs(30), || {
        runner::run(async {
            let (tx, rx) = async_channel::bounded(1);
            let mut gen = AsyncGen::new(|y| async move {
                let elsewhere = runner::spawn(async move { y.yield_(1).await });
                let _ = tx.send(elsewhere.await).await;
                Ok(())
            });
            let mut items = Vec::new();
            while let Some(item) = gen.next().await {
                items.push(item);
            }
            let err = rx.recv().await.unwrap().unwrap_err();
            (items, err)
        })
        .unwrap()
    });
    assert_eq!(items, Vec::<u32>::new());
    let TaskError::Panicked(payload) = err else {
        panic!("the spawned task's yield_ panics")
    };
    let message = common::panic_text(&*payload);
    assert!(
        message.contains("yield_ must be awaited by the generator's own body"),
        "{message}"
    );
}

/// Issue 23, item 14: a generator that close had already closed, dropped afterwards on another
/// thread, printed "its cleanup is not `Send` and does not run": it has no cleanup left. Run in a
/// child process, whose stderr is read.
#[test]
fn a_generator_close_closed_dropped_later_elsewhere_says_nothing() {
    let out = common::run_child("closed_generator_dropped_elsewhere_child", &[]);
    assert!(out.status.success(), "{}", common::text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("closed by close: true"),
        "{}",
        common::text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("does not run"), "{}", common::text(&out));
}

#[test]
#[ignore = "run by a_generator_close_closed_dropped_later_elsewhere_says_nothing"]
fn closed_generator_dropped_elsewhere_child() {
    static HOLD: std::sync::Mutex<Option<AsyncGen<u32>>> = std::sync::Mutex::new(None);
    runner::run(async {
        let mut gen = AsyncGen::new(|y| async move {
            y.yield_(1).await?;
            y.yield_(2).await?;
            Ok(())
        });
        assert_eq!(gen.next().await, Some(1));
        *HOLD.lock().unwrap() = Some(gen);
    })
    .unwrap();
    let gen = HOLD.lock().unwrap().take().unwrap();
    println!("closed by close: {}", gen.is_closed());
    std::thread::spawn(move || drop(gen)).join().unwrap();
}

/// A generator made on runner A, asked for an item from runner B's loop on another thread; A
/// closes while the request is out. `closing_run` is what A runs before closing. B's `next`.
fn next_from_elsewhere_as_home_closes(
    started: bool,
    closing_run: Duration,
) -> Result<Option<u32>, runner::Elapsed> {
    let a = Runner::builder()
        .executor_shutdown_timeout(Duration::from_millis(500))
        .build();
    let gen = a
        .run(async move {
            let mut gen = AsyncGen::new(|y| async move {
                y.yield_(1u32).await?;
                runner::sleep(Duration::from_secs(3600)).await;
                y.yield_(2u32).await?;
                Ok(())
            });
            if started {
                assert_eq!(gen.next().await, Some(1));
            }
            gen
        })
        .unwrap();
    let (asked, is_asked) = std::sync::mpsc::channel();
    let b = std::thread::spawn(move || {
        runner::run(async move {
            let mut gen = gen;
            let mut next = std::pin::pin!(gen.next());
            if let Some(item) = futures_lite::future::poll_once(next.as_mut()).await {
                return Ok(item);
            }
            asked.send(()).unwrap();
            runner::timeout(Duration::from_secs(10), next).await
        })
        .unwrap()
    });
    is_asked.recv().unwrap();
    if !closing_run.is_zero() {
        a.run(runner::sleep(closing_run)).unwrap();
    }
    a.close();
    b.join().unwrap()
}

/// A sweep finding (R5.6): a request from another thread was never answered once the
/// generator's loop closed: the request's job, queued while the loop was between runs, was
/// dropped by close unanswered; or the request was out while close's second step closed the
/// generator. Either way the consumer now gets `None` (the generator has ended).
#[test]
fn a_request_out_when_the_generators_loop_closes_is_answered_with_the_end() {
    let got = common::finishes_within(Duration::from_secs(60), || {
        [
            next_from_elsewhere_as_home_closes(false, Duration::ZERO),
            next_from_elsewhere_as_home_closes(true, Duration::from_millis(50)),
        ]
    });
    assert_eq!(got, [Ok(None), Ok(None)]);
}

/// A sweep finding: a task cancelled while it waits for a generator's next item, the body inside
/// a long await (not at a `yield_`): the close of the dropped generator drove the body through
/// its whole await, so close waited its full shutdown timeout. A body caught between items is
/// cancelled (its future dropped, its destructors run), as Python throws CancelledError into the
/// generator's await.
#[test]
fn a_generator_cancelled_between_items_is_dropped_not_driven_to_its_next_yield() {
    let (reports, log) = common::finishes_within(Duration::from_secs(60), || {
        let (lp, reports) = common::recording_loop();
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        let runner = Runner::builder()
            .executor_shutdown_timeout(Duration::from_secs(30))
            .loop_factory(move || lp)
            .build();
        runner
            .run(async move {
                drop(runner::spawn(async move {
                    let mut gen = AsyncGen::new(move |y| async move {
                        let _dropped = common::LogOnDrop(l, "body dropped".into());
                        y.yield_(1u32).await?;
                        runner::sleep(Duration::from_secs(3600)).await; // a slow page fetch
                        y.yield_(2u32).await?;
                        Ok(())
                    });
                    assert_eq!(gen.next().await, Some(1));
                    gen.next().await; // cancelled here, by close
                }));
                runner::sleep(Duration::from_millis(10)).await;
            })
            .unwrap();
        runner.close();
        let log = log.borrow().clone();
        (reports.messages(), log)
    });
    assert_eq!(log, ["body dropped"]);
    assert_eq!(reports, Vec::<String>::new(), "close did not wait it out");
}
