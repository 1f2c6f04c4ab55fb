//! async-executor's own executor tests (its `tests/` folder: drop, panic propagation, spawn order,
//! many and larger tasks, local queues), ported to runner's executor, which replaced its
//! `LocalExecutor`. They go through the public API: an `EventLoop` is runner's executor. Where
//! async-executor's test needs several threads running one executor, the port spawns onto the
//! loop from several threads through `LoopHandle` instead (a loop runs on one thread).

mod common;

use std::cell::{Cell, RefCell};
use std::future::{pending, poll_fn, ready};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::future::{block_on, poll_once};
use runner::{EventLoop, TaskError};

struct CallOnDrop<F: Fn()>(F);

impl<F: Fn()> Drop for CallOnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// A task that records its waker and never finishes, counting its drop in `drops`.
fn waiting_task(
    lp: &EventLoop,
    drops: &Arc<AtomicUsize>,
    waker: &Arc<Mutex<Option<Waker>>>,
) -> runner::Task<()> {
    let (drops, waker) = (drops.clone(), waker.clone());
    lp.spawn(async move {
        let _guard = CallOnDrop(move || {
            drops.fetch_add(1, Ordering::SeqCst);
        });
        poll_fn(|cx| {
            *waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::<()>::Pending
        })
        .await;
    })
}

/// A loop with one waiting task, polled once: the task's drop counter and its waker.
struct WaitingTask {
    lp: EventLoop,
    task: runner::Task<()>,
    drops: Arc<AtomicUsize>,
    waker: Arc<Mutex<Option<Waker>>>,
}

fn loop_with_waiting_task() -> WaitingTask {
    let drops = Arc::new(AtomicUsize::new(0));
    let waker = Arc::new(Mutex::new(None));
    let lp = EventLoop::new();
    let task = waiting_task(&lp, &drops, &waker);
    lp.run_until_complete(runner::yield_now()).unwrap();
    assert!(waker.lock().unwrap().is_some());
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    WaitingTask {
        lp,
        task,
        drops,
        waker,
    }
}

/// async-executor `drop.rs::executor_cancels_everything`: dropping the loop drops a waiting task;
/// awaiting it afterwards gives `Cancelled` (async-executor's handle panics instead).
#[test]
fn executor_cancels_everything() {
    let WaitingTask {
        lp,
        task,
        drops,
        waker,
    } = loop_with_waiting_task();
    drop(lp);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert!(matches!(block_on(task), Err(TaskError::Cancelled)));
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    // A late wake-up of the dropped task is harmless.
    let late = waker.lock().unwrap().take();
    if let Some(waker) = late {
        waker.wake();
    }
}

/// `drop.rs::leaked_executor_leaks_everything`: a leaked loop leaks its tasks, which stay pending.
#[test]
fn leaked_executor_leaks_everything() {
    let WaitingTask {
        lp, task, drops, ..
    } = loop_with_waiting_task();
    std::mem::forget(lp);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    let mut task = task;
    assert!(block_on(poll_once(&mut task)).is_none());
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    std::mem::forget(task);
}

/// `drop.rs::await_task_after_dropping_executor`: a finished task's output outlives the loop.
#[test]
fn await_task_after_dropping_executor() {
    let s: String = "hello".into();
    let lp = EventLoop::new();
    let task = lp.spawn(async move { s });
    lp.run_until_complete(runner::yield_now()).unwrap();
    drop(lp);
    assert_eq!(block_on(task).unwrap(), "hello");
}

/// A finished task whose output counts its drop; the loop and the handle are dropped in the
/// given order. The output is dropped with the handle, never with the loop.
fn drop_finished_task_and_loop(handle_first: bool) {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let lp = EventLoop::new();
    let task = lp.spawn(async move { CallOnDrop(move || d.set(d.get() + 1)) });
    lp.run_until_complete(runner::yield_now()).unwrap();
    assert_eq!(drops.get(), 0);
    if handle_first {
        drop(task);
        assert_eq!(drops.get(), 1, "dropped with the handle");
        drop(lp);
    } else {
        drop(lp);
        assert_eq!(
            drops.get(),
            0,
            "the loop's drop leaves a finished task's output alone"
        );
        drop(task);
    }
    assert_eq!(drops.get(), 1);
}

/// `drop.rs::drop_executor_and_then_drop_finished_task`.
#[test]
fn drop_executor_and_then_drop_finished_task() {
    drop_finished_task_and_loop(false);
}

/// `drop.rs::drop_finished_task_and_then_drop_executor`.
#[test]
fn drop_finished_task_and_then_drop_executor() {
    drop_finished_task_and_loop(true);
}

/// `drop.rs::iterator_panics_mid_run`: a panic half-way through spawning leaves the loop usable.
#[test]
fn panic_mid_spawning_leaves_loop_usable() {
    let lp = EventLoop::new();
    let spawned = catch_unwind(AssertUnwindSafe(|| {
        let mut handles = vec![];
        for i in 0..50 {
            if i == 25 {
                panic!("the iterator of futures panics");
            }
            handles.push(lp.spawn(ready(i)));
        }
        handles
    }));
    assert!(spawned.is_err());
    let task = lp.spawn(ready(0));
    assert_eq!(lp.run_until_complete(task).unwrap().unwrap(), 0);
}

/// `panic_prop.rs::test_panic_propagation`: running the loop does not panic; awaiting does
/// (here: gives the payload back).
#[test]
fn panic_propagation() {
    let lp = EventLoop::new();
    let task = lp.spawn(async { panic!("should be caught by the task") });
    lp.run_until_complete(runner::yield_now()).unwrap();
    let err = block_on(task).unwrap_err();
    assert_eq!(
        common::panic_text(&*err.into_panic()),
        "should be caught by the task"
    );
}

/// `spawn_many.rs::spawn_many_local`: 50,000 ready tasks, awaited in order.
#[test]
fn spawn_many() {
    const READY_COUNT: usize = 50_000;
    let lp = EventLoop::new();
    let tasks: Vec<_> = (0..READY_COUNT).map(|i| lp.spawn(ready(i))).collect();
    lp.run_until_complete(async move {
        for (i, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), i);
        }
    })
    .unwrap();
}

/// Spawn order: tasks first run in the order they were spawned.
#[test]
fn spawn_order_is_fifo() {
    let lp = EventLoop::new();
    let order = Rc::new(std::cell::RefCell::new(Vec::new()));
    for i in 0..100 {
        let order = order.clone();
        drop(lp.spawn(async move { order.borrow_mut().push(i) }));
    }
    let o = order.clone();
    lp.run_until_complete(common::eventually("every task ran", move || {
        o.borrow().len() == 100
    }))
    .unwrap();
    assert_eq!(*order.borrow(), (0..100).collect::<Vec<_>>());
}

/// `larger_tasks.rs` (smoke, yield_now, timer) on a loop, with the tasks also spawned from 16
/// other threads through `LoopHandle` (async-executor runs one executor on 16 threads instead).
#[test]
fn larger_tasks() {
    common::finishes_within(Duration::from_secs(120), || {
        runner::run(async {
            runner::spawn(async {}).await.unwrap();
            runner::spawn(runner::yield_now()).await.unwrap();
            runner::spawn(runner::sleep(Duration::from_millis(5)))
                .await
                .unwrap();
            let handle = runner::get_running_loop().unwrap().handle();
            let threads: Vec<_> = (0..16)
                .map(|_| {
                    let handle = handle.clone();
                    std::thread::spawn(move || {
                        vec![
                            handle.spawn(async {}),
                            handle.spawn(runner::yield_now()),
                            handle.spawn(async {
                                async_io::Timer::after(Duration::from_millis(5)).await;
                            }),
                        ]
                    })
                })
                .collect();
            for thread in threads {
                for task in thread.join().unwrap() {
                    task.await.unwrap();
                }
            }
        })
        .unwrap();
    });
}

/// `local_queue.rs::shared_queue_slot`: a task spawned on one loop never runs on another.
#[test]
fn tasks_stay_on_their_own_loop() {
    let was_polled = Rc::new(Cell::new(false));
    let lp1 = EventLoop::new();
    let lp2 = EventLoop::new();
    let p = was_polled.clone();
    drop(lp1.spawn(async move {
        p.set(true);
        pending::<()>().await;
    }));
    lp2.run_until_complete(runner::yield_now()).unwrap();
    assert!(!was_polled.get());
    lp1.run_until_complete(runner::yield_now()).unwrap();
    assert!(was_polled.get());
}

/// Tasks still queued when a run ends wait for the loop's next run, in order, while another
/// loop runs on the same thread in between (the thread's run queue keeps its buffer from loop
/// to loop, and must never hand one loop's tasks to another).
#[test]
fn queued_tasks_carry_over_past_another_loops_run() {
    // A loop that lost its queued tasks would wait for them forever.
    common::finishes_within(Duration::from_secs(120), || {
        let ran = Rc::new(RefCell::new(Vec::new()));
        let lp1 = EventLoop::new();
        let lp2 = EventLoop::new();
        let spawn_logging = |lp: &EventLoop, id: u32| {
            let ran = ran.clone();
            lp.spawn(async move { ran.borrow_mut().push(id) })
        };
        // More tasks than one round of the run queue takes, so some are left queued when the
        // main future (one yield) is done.
        let tasks: Vec<_> = (0..1000).map(|i| spawn_logging(&lp1, i)).collect();
        lp1.run_until_complete(runner::yield_now()).unwrap();
        let left = 1000 - ran.borrow().len();
        assert!(left > 0, "every task ran in the first run");
        let other = spawn_logging(&lp2, 5000);
        lp2.run_until_complete(other).unwrap().unwrap();
        lp1.run_until_complete(async {
            for t in tasks {
                t.await.unwrap();
            }
        })
        .unwrap();
        let ran = ran.borrow();
        let first_run = 1000 - left;
        assert_eq!(ran[first_run], 5000, "lp2's task ran in between");
        let lp1_order: Vec<u32> = ran.iter().copied().filter(|&id| id != 5000).collect();
        assert_eq!(lp1_order, (0..1000).collect::<Vec<_>>());
        drop(ran);
        lp1.close();
        lp2.close();
    });
}
