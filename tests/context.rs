//! R4 (context variables) and the context parts of R1 (R1.2, R1.5).

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use common::recording_loop;
use runner::{copy_context, Context, ContextError, ContextVar, EventLoop, Runner};

static CVAR: ContextVar<i32> = ContextVar::with_default("cvar", || -1);

async fn set_and_return_old(val: i32) -> i32 {
    let old = CVAR.get().unwrap();
    runner::yield_now().await;
    CVAR.set(val);
    old
}

/// R1.5: CPython's test_run_keeps_context.
#[test]
fn test_run_keeps_context() {
    let runner = Runner::new();
    assert_eq!(runner.run(set_and_return_old(1)).unwrap(), -1);
    assert_eq!(runner.run(set_and_return_old(2)).unwrap(), 1);
    let ctx = runner.run(async { copy_context() }).unwrap();
    assert_eq!(ctx.get(&CVAR), Some(2));
}

/// R1.5: run_with_context uses the given context and leaves the final one in it.
#[test]
fn test_run_with_context_keeps_context() {
    let runner = Runner::new();
    let mut ctx = Context::new();
    assert_eq!(
        runner
            .run_with_context(set_and_return_old(5), &mut ctx)
            .unwrap(),
        -1
    );
    assert_eq!(ctx.get(&CVAR), Some(5));
    assert_eq!(
        runner
            .run_with_context(set_and_return_old(6), &mut ctx)
            .unwrap(),
        5
    );
    assert_eq!(ctx.get(&CVAR), Some(6));
    // The runner's own context was not touched.
    assert_eq!(runner.run(async { CVAR.get() }).unwrap(), Some(-1));
}

/// R1.2: the runner's context is a copy of the thread's context at its first use.
#[test]
fn r1_2_runner_copies_thread_context_at_first_use() {
    static VAR: ContextVar<&'static str> = ContextVar::new("r1_2");
    let before = VAR.set("before first use");
    assert_eq!(VAR.get(), Some("before first use"));
    let runner = Runner::new();
    VAR.set("set before first use, after new()");
    runner.get_loop().unwrap();
    VAR.set("after first use");
    assert_eq!(
        runner.run(async { VAR.get() }).unwrap(),
        Some("set before first use, after new()")
    );
    runner.run(async { VAR.set("inside run") }).unwrap();
    assert_eq!(
        VAR.get(),
        Some("after first use"),
        "a run's changes stay in the runner"
    );
    VAR.reset(before).unwrap();
    assert_eq!(
        VAR.get(),
        None,
        "the thread's own context still resets with its token"
    );
}

/// R4.1: value, else default, else None.
#[test]
fn r4_1_get_set_default_unset() {
    static NO_DEFAULT: ContextVar<String> = ContextVar::new("no_default");
    static WITH_DEFAULT: ContextVar<u8> = ContextVar::with_default("with_default", || 9);
    let mut ctx = Context::new();
    ctx.run(|| {
        assert_eq!(NO_DEFAULT.get(), None);
        assert_eq!(WITH_DEFAULT.get(), Some(9));
        NO_DEFAULT.set("x".into());
        WITH_DEFAULT.set(1);
        assert_eq!(NO_DEFAULT.get().as_deref(), Some("x"));
        assert_eq!(WITH_DEFAULT.get(), Some(1));
    });
    assert_eq!(NO_DEFAULT.name(), "no_default");
    assert!(ctx.contains(&NO_DEFAULT) && ctx.contains(&WITH_DEFAULT));
    assert_eq!((ctx.len(), ctx.is_empty()), (2, false));
    assert!(Context::new().is_empty());
    assert_eq!(
        Context::new().get(&WITH_DEFAULT),
        None,
        "Context::get does not apply defaults"
    );
}

/// R4.2: reset restores the previous value (or unset); a token from another context or another
/// variable is refused.
#[test]
fn r4_2_reset_and_foreign_tokens() {
    static A: ContextVar<u32> = ContextVar::new("a");
    static B: ContextVar<u32> = ContextVar::new("b");
    let mut ctx = Context::new();
    ctx.run(|| {
        let t1 = A.set(1);
        let t2 = A.set(2);
        assert_eq!(A.get(), Some(2));
        A.reset(t2).unwrap();
        assert_eq!(A.get(), Some(1));
        A.reset(t1).unwrap();
        assert_eq!(A.get(), None, "back to unset, not to a stale value");

        let token_of_a = A.set(3);
        assert_eq!(
            B.reset(token_of_a),
            Err(ContextError),
            "a token of another variable"
        );
    });
    let token = ctx.run(|| A.set(4));
    let mut copy = ctx.clone();
    let err = copy.run(|| A.reset(token)).unwrap_err();
    assert!(err.to_string().contains("another context"), "{err}");
    assert_eq!(copy.get(&A), Some(4));
}

/// R4.4: copies are independent of each other.
#[test]
fn r4_4_copies_are_independent() {
    static V: ContextVar<u8> = ContextVar::new("v");
    let mut a = Context::new();
    a.run(|| V.set(1));
    let mut b = a.clone();
    b.run(|| V.set(2));
    assert_eq!((a.get(&V), b.get(&V)), (Some(1), Some(2)));
    let c = copy_context();
    let mut a2 = a.clone();
    a2.run(|| V.set(3));
    assert_eq!(a.get(&V), Some(1));
    assert_eq!(c.get(&V), None);
}

/// R4.4: Context::run keeps the changes in self and restores the previous context, even when f
/// panics.
#[test]
fn r4_4_context_run_restores_on_panic() {
    static V: ContextVar<&'static str> = ContextVar::new("v_panic");
    V.set("outer");
    let mut ctx = Context::new();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ctx.run(|| {
            V.set("inner");
            panic!("inside Context::run");
        })
    }));
    assert!(caught.is_err());
    assert_eq!(V.get(), Some("outer"));
    assert_eq!(ctx.get(&V), Some("inner"));
}

/// R4.3: a task starts with a copy of its spawner's context taken at spawn; what it sets is
/// invisible to its spawner and its siblings.
#[test]
fn r4_3_children_isolated() {
    static REQ: ContextVar<u32> = ContextVar::new("req");
    runner::run(async {
        REQ.set(1);
        let a = runner::spawn(async {
            let inherited = REQ.get();
            REQ.set(10);
            runner::sleep(Duration::from_millis(5)).await;
            (inherited, REQ.get())
        });
        let b = runner::spawn(async {
            let inherited = REQ.get();
            REQ.set(20);
            runner::sleep(Duration::from_millis(5)).await;
            (inherited, REQ.get())
        });
        REQ.set(2); // after the spawns: the children keep the value they were spawned with
        assert_eq!(a.await.unwrap(), (Some(1), Some(10)));
        assert_eq!(b.await.unwrap(), (Some(1), Some(20)));
        assert_eq!(REQ.get(), Some(2));
    })
    .unwrap();
}

/// R4.5: to_thread runs in a copy of the caller's context; its changes stay in the thread's copy.
#[test]
fn r4_5_to_thread_sees_callers_values() {
    static USER: ContextVar<String> = ContextVar::new("user");
    runner::run(async {
        USER.set("ada".into());
        let seen = runner::to_thread(|| {
            let seen = USER.get();
            USER.set("changed in thread".into());
            seen
        })
        .await
        .unwrap();
        assert_eq!(seen.as_deref(), Some("ada"));
        assert_eq!(USER.get().as_deref(), Some("ada"));
        // run_in_executor does not copy the context (as in Python).
        let lp = runner::get_running_loop().unwrap();
        assert_eq!(lp.run_in_executor(|| USER.get()).await.unwrap(), None);
    })
    .unwrap();
}

/// Values of a non-Clone type are read through `with`; `with` may itself set variables.
#[test]
fn r4_1_non_clone_values_with() {
    struct Conn {
        host: String,
    }
    static CONN: ContextVar<Conn> = ContextVar::new("conn");
    static OTHER: ContextVar<u8> = ContextVar::new("other");
    let mut ctx = Context::new();
    ctx.run(|| {
        assert!(CONN.with(|c| c.is_none()));
        CONN.set(Conn { host: "db1".into() });
        let host = CONN.with(|c| {
            OTHER.set(1); // no borrow of the context is held while `f` runs
            c.map(|c| c.host.clone())
        });
        assert_eq!(host.as_deref(), Some("db1"));
        assert_eq!(OTHER.get(), Some(1));
    });
}

/// Callbacks run in a copy of the context they were scheduled from.
#[test]
fn callbacks_run_in_scheduling_context() {
    static V: ContextVar<u8> = ContextVar::new("cb");
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    runner::run(async move {
        let lp = runner::get_running_loop().unwrap();
        V.set(1);
        let s1 = s.clone();
        lp.call_soon(move || {
            s1.borrow_mut().push(V.get());
            V.set(99);
        });
        V.set(2);
        let s2 = s.clone();
        lp.call_later(Duration::from_millis(1), move || {
            s2.borrow_mut().push(V.get())
        });
        let s3 = s.clone();
        common::eventually("both callbacks ran", move || s3.borrow().len() == 2).await;
        s.borrow_mut().push(V.get());
    })
    .unwrap();
    assert_eq!(*seen.borrow(), [Some(1), Some(2), Some(2)]);
}

/// Threadsafe callbacks and remote spawns run in a copy of the calling thread's context.
#[test]
fn threadsafe_work_carries_the_callers_context() {
    static V: ContextVar<&'static str> = ContextVar::new("remote");
    let lp = EventLoop::new();
    let handle = lp.handle();
    let (tx, rx) = std::sync::mpsc::channel();
    let task = std::thread::spawn(move || {
        V.set("from the other thread");
        handle.call_soon_threadsafe(move || tx.send(V.get()).unwrap());
        handle.spawn(async { V.get() })
    })
    .join()
    .unwrap();
    assert_eq!(
        lp.run_until_complete(task).unwrap().unwrap(),
        Some("from the other thread")
    );
    assert_eq!(rx.recv().unwrap(), Some("from the other thread"));
    assert_eq!(V.get(), None);
}

/// The exception handler runs in the context of the task it reports on.
#[test]
fn handler_runs_in_task_context() {
    static REQ: ContextVar<u32> = ContextVar::new("handler_req");
    let (lp, _) = recording_loop();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    lp.set_exception_handler(move |_, ctx| {
        s.borrow_mut().push((ctx.message().to_owned(), REQ.get()))
    });
    lp.run_until_complete(async {
        let task = runner::spawn(async {
            REQ.set(7);
            panic!("request failed");
        });
        let r = task.to_ref();
        drop(task);
        common::eventually("the task panicked", || r.is_finished()).await;
    })
    .unwrap();
    assert_eq!(
        *seen.borrow(),
        [("task panic was never retrieved".to_owned(), Some(7))]
    );
}

/// `get`'s per-thread cache never serves a stale value: after `set`, `reset`, a swap of contexts
/// (`Context::run`, a task's poll) and with more variables than cache slots.
#[test]
fn get_sees_every_change_of_the_current_context() {
    static A: ContextVar<u32> = ContextVar::new("a");
    static VARS: [ContextVar<usize>; 20] = [const { ContextVar::new("v") }; 20];
    let mut ctx = Context::new();
    ctx.run(|| {
        assert_eq!(A.get(), None);
        let token = A.set(1);
        assert_eq!(A.get(), Some(1));
        A.set(2);
        assert_eq!(A.get(), Some(2));
        let mut other = Context::new();
        other.run(|| {
            assert_eq!(A.get(), None, "another context");
            A.set(3);
            assert_eq!(A.get(), Some(3));
        });
        assert_eq!(A.get(), Some(2), "back in the first context");
        A.reset(token).unwrap();
        assert_eq!(
            A.get(),
            None,
            "reset goes back to before the set that made the token"
        );
        for (i, var) in VARS.iter().enumerate() {
            var.set(i);
        }
        for _ in 0..3 {
            for (i, var) in VARS.iter().enumerate() {
                assert_eq!(var.get(), Some(i), "20 variables share 8 cache slots");
            }
        }
    });
    runner::run(async {
        A.set(10);
        let child = runner::spawn(async {
            assert_eq!(A.get(), Some(10));
            A.set(11);
            runner::yield_now().await;
            A.get()
        });
        assert_eq!(A.get(), Some(10));
        runner::yield_now().await;
        assert_eq!(
            A.get(),
            Some(10),
            "the child's set is not seen after its poll"
        );
        assert_eq!(child.await.unwrap(), Some(11));
    })
    .unwrap();
}

/// A `Clone` impl that sets a context variable while `get` clones a cached value is refused
/// with a message, as a nested borrow was before the cache: the value being cloned cannot be
/// dropped under it.
#[test]
fn clone_that_sets_a_variable_during_get_is_refused() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SNEAK: AtomicBool = AtomicBool::new(false);
    struct Sneaky;
    impl Clone for Sneaky {
        fn clone(&self) -> Self {
            if SNEAK.load(Ordering::SeqCst) {
                OTHER.set(1);
            }
            Sneaky
        }
    }
    static SNEAKY: ContextVar<Sneaky> = ContextVar::new("sneaky");
    static OTHER: ContextVar<u8> = ContextVar::new("other");
    let mut ctx = Context::new();
    let caught = ctx.run(|| {
        SNEAKY.set(Sneaky);
        assert!(
            SNEAKY.get().is_some(),
            "an honest clone; the lookup is now cached"
        );
        SNEAK.store(true, Ordering::SeqCst);
        let cached = std::panic::catch_unwind(|| SNEAKY.get().map(|_| ()));
        // The refused set changed nothing: the next lookup is cached again and refused again.
        let again = std::panic::catch_unwind(|| SNEAKY.get().map(|_| ()));
        SNEAK.store(false, Ordering::SeqCst);
        let honest = SNEAKY.get().is_some();
        (
            cached.map_err(|p| common::panic_text(&*p)),
            again.is_err(),
            honest,
            OTHER.get(),
        )
    });
    let message = caught.0.expect_err("the cached get refuses the set");
    assert!(
        message.contains("while ContextVar::get cloned a value"),
        "{message}"
    );
    assert!(caught.1 && caught.2);
    assert_eq!(caught.3, None, "the refused set did not happen");
}

/// A `get` inside a `Clone` impl (not served from the cache, which is marked as cloning) reads
/// the right value, and does not lift the refusal: a set after it, still inside the clone, is
/// refused too, whether the outer `get` was served from the cache or not.
#[test]
fn a_get_inside_a_clone_reads_right_and_keeps_the_refusal() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    static SNEAK: AtomicBool = AtomicBool::new(false);
    static SEEN: Mutex<Vec<Option<u32>>> = Mutex::new(Vec::new());
    struct Reads;
    impl Clone for Reads {
        fn clone(&self) -> Self {
            let inner = INNER.get();
            SEEN.lock().unwrap_or_else(|e| e.into_inner()).push(inner);
            if SNEAK.load(Ordering::SeqCst) {
                INNER.set(3);
            }
            Reads
        }
    }
    static READS: ContextVar<Reads> = ContextVar::new("reads");
    static INNER: ContextVar<u32> = ContextVar::new("inner");
    let mut ctx = Context::new();
    let (honest, cached, uncached) = ctx.run(|| {
        INNER.set(1);
        READS.set(Reads);
        let honest = READS.get().is_some(); // uncached; READS and INNER are cached after it
        SNEAK.store(true, Ordering::SeqCst);
        let cached = std::panic::catch_unwind(|| READS.get().map(|_| ()));
        INNER.set(2); // empties the cache: the next READS.get is uncached
        let uncached = std::panic::catch_unwind(|| READS.get().map(|_| ()));
        SNEAK.store(false, Ordering::SeqCst);
        (
            honest,
            cached.map_err(|p| common::panic_text(&*p)),
            uncached.map_err(|p| common::panic_text(&*p)),
        )
    });
    assert!(honest);
    for refused in [cached, uncached] {
        let message = refused.expect_err("the set after an inner get is refused");
        assert!(
            message.contains("while ContextVar::get cloned a value"),
            "{message}"
        );
    }
    let seen = SEEN.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(seen, vec![Some(1), Some(1), Some(2)]);
    assert_eq!(ctx.get(&INNER), Some(2), "the refused sets did not happen");
}

/// Large contexts: 10,000 variables set, copied, changed in the copy; every value is right.
#[test]
fn large_contexts_keep_every_value() {
    let vars: Vec<&'static ContextVar<usize>> = (0..10_000)
        .map(|_| &*Box::leak(Box::new(ContextVar::new("many"))))
        .collect();
    let mut ctx = Context::new();
    ctx.run(|| {
        for (i, var) in vars.iter().enumerate() {
            var.set(i);
        }
    });
    let mut copy = ctx.clone();
    copy.run(|| {
        for var in vars.iter().step_by(3) {
            var.set(0);
        }
    });
    assert_eq!((ctx.len(), copy.len()), (10_000, 10_000));
    for (i, var) in vars.iter().enumerate() {
        assert_eq!(ctx.get(var), Some(i));
        assert_eq!(copy.get(var), Some(if i % 3 == 0 { 0 } else { i }));
    }
}

/// A value whose destructor logs the request id, as a guard logging its request would.
struct LogsRequest(&'static std::sync::Mutex<Vec<String>>, &'static str);

impl Drop for LogsRequest {
    fn drop(&mut self) {
        let line = format!("{} dropped in request {:?}", self.1, LOG_REQUEST.get());
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
}

static LOG_REQUEST: ContextVar<u64> = ContextVar::new("log_request");

/// Issue 23, item 3: `reset` dropped the value it replaced while the context was still
/// borrowed, so a destructor that reads a variable panicked ("already mutably borrowed").
/// It runs after the change, and sees the context as reset left it.
#[test]
fn reset_drops_the_replaced_value_after_the_change_so_its_destructor_can_read() {
    static LOG: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    static GUARD: ContextVar<LogsRequest> = ContextVar::new("guard");
    let mut ctx = Context::new();
    ctx.run(|| {
        LOG_REQUEST.set(1);
        let token = GUARD.set(LogsRequest(&LOG, "first"));
        LOG_REQUEST.set(2);
        GUARD.reset(token).unwrap();
        assert!(GUARD.with(|g| g.is_none()));
    });
    let log = LOG.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(log, ["first dropped in request Some(2)"]);
}

/// Issue 23, item 3: a generator's answer crossing threads replaced the consumer's values while
/// the context was borrowed. The consumer (a `to_thread` job) held a guard in a variable the
/// body sets: the replaced guard is dropped after the change, reading the adopted values.
#[test]
fn a_generators_answer_from_another_thread_drops_replaced_values_after_the_change() {
    static LOG: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    static GUARD: ContextVar<LogsRequest> = ContextVar::new("guard_across");
    let item = common::finishes_within(Duration::from_secs(30), || {
        runner::run(async {
            let mut gen = runner::AsyncGen::new(|y| async move {
                LOG_REQUEST.set(20);
                GUARD.set(LogsRequest(&LOG, "body's guard"));
                y.yield_(5u32).await?;
                Ok(())
            });
            runner::to_thread(move || {
                LOG_REQUEST.set(10);
                GUARD.set(LogsRequest(&LOG, "consumer's guard"));
                let item = futures_lite::future::block_on(gen.next());
                let seen = (LOG_REQUEST.get(), GUARD.with(|g| g.map(|g| g.1)));
                drop(gen);
                (item, seen)
            })
            .await
            .unwrap()
        })
        .unwrap()
    });
    assert_eq!(item, (Some(5), (Some(20), Some("body's guard"))));
    let log = LOG.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(log[0], "consumer's guard dropped in request Some(20)");
}

/// Issue 23, item 1: a value whose `Clone` finished a pending cross-thread `next` while
/// `ContextVar::get` cloned it. Adopting the body's changes swapped the map and freed the value
/// being cloned (valgrind: "Invalid read" in `Clone::clone`). Every change that can drop a value
/// of the current context is refused while a clone runs: the clone panics with the refusal, the
/// item is not lost, and the next poll outside the clone delivers it with the body's changes.
#[test]
fn a_clone_that_finishes_a_cross_thread_next_is_refused_and_loses_nothing() {
    use futures_lite::Stream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context as Cx, Poll, Wake, Waker};

    static ARMED: AtomicBool = AtomicBool::new(false);
    static PENDING: Mutex<Option<runner::AsyncGen<u32>>> = Mutex::new(None);
    static TRIGGER: ContextVar<Trigger> = ContextVar::new("trigger");

    struct Trigger(u32);
    impl Clone for Trigger {
        fn clone(&self) -> Self {
            if ARMED.swap(false, Ordering::SeqCst) {
                let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(gen) = pending.as_mut() {
                    let waker = Waker::from(Arc::new(Flag(AtomicBool::new(false))));
                    let _ = std::pin::Pin::new(gen).poll_next(&mut Cx::from_waker(&waker));
                }
            }
            Trigger(self.0)
        }
    }
    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    let outcome = common::finishes_within(Duration::from_secs(30), || {
        runner::run(async {
            let gen = runner::AsyncGen::new(|y| async move {
                TRIGGER.set(Trigger(2));
                y.yield_(7u32).await?;
                Ok(())
            });
            runner::to_thread(move || {
                let mut gen = gen;
                let mut ctx = Context::new();
                ctx.run(|| {
                    TRIGGER.set(Trigger(1));
                    // Ask for the item from this thread; the loop thread answers it.
                    let flag = Arc::new(Flag(AtomicBool::new(false)));
                    let waker = Waker::from(flag.clone());
                    let first = std::pin::Pin::new(&mut gen).poll_next(&mut Cx::from_waker(&waker));
                    assert!(first.is_pending());
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    while !flag.0.load(Ordering::SeqCst) {
                        assert!(std::time::Instant::now() < deadline, "the answer came");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    *PENDING.lock().unwrap_or_else(|e| e.into_inner()) = Some(gen);
                    // Cached now; the next get is a cache hit whose clone takes the answer.
                    assert_eq!(TRIGGER.get().map(|t| t.0), Some(1));
                    ARMED.store(true, Ordering::SeqCst);
                    let refused = std::panic::catch_unwind(|| TRIGGER.get().map(|t| t.0));
                    let mut gen = PENDING
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take()
                        .expect("the generator is back");
                    let item =
                        match std::pin::Pin::new(&mut gen).poll_next(&mut Cx::from_waker(&waker)) {
                            Poll::Ready(item) => item,
                            Poll::Pending => panic!("the answer was kept for this poll"),
                        };
                    let after = TRIGGER.get().map(|t| t.0);
                    drop(gen);
                    (refused.map_err(|p| common::panic_text(&*p)), item, after)
                })
            })
            .await
            .unwrap()
        })
        .unwrap()
    });
    let message = outcome.0.expect_err("the clone's change is refused");
    assert!(
        message.contains("while ContextVar::get cloned a value"),
        "{message}"
    );
    assert_eq!(outcome.1, Some(7), "the item is delivered by the next poll");
    assert_eq!(outcome.2, Some(2), "with the body's change adopted");
}

/// Issue 23, item 4: an answer made for a consumer elsewhere and taken back home (a pool task
/// that moved back to the worker that made the generator) was delivered without the body's
/// context changes. Here the consumer's context goes from a `to_thread` job back to the loop
/// thread that made the generator, with the request still out.
#[test]
fn an_answer_taken_at_home_adopts_the_bodys_context_changes() {
    use futures_lite::Stream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::task::{Context as Cx, Poll, Wake, Waker};

    static STEP: ContextVar<u32> = ContextVar::new("step");
    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    let (item, step) = common::finishes_within(Duration::from_secs(30), || {
        runner::run(async {
            let gen = runner::AsyncGen::new(|y| async move {
                STEP.set(STEP.get().unwrap_or(0) + 100);
                y.yield_(3u32).await?;
                Ok(())
            });
            let mut ctx = Context::new();
            ctx.run(|| STEP.set(1));
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            let waker = Waker::from(flag.clone());
            // Asked from another thread, in `ctx`.
            let (mut gen, mut ctx) = runner::to_thread({
                let waker = waker.clone();
                move || {
                    let mut gen = gen;
                    let first = ctx.run(|| {
                        std::pin::Pin::new(&mut gen).poll_next(&mut Cx::from_waker(&waker))
                    });
                    assert!(first.is_pending());
                    (gen, ctx)
                }
            })
            .await
            .unwrap();
            common::eventually("the loop thread answered", || flag.0.load(Ordering::SeqCst)).await;
            // Back home, in the same context, the answer is taken here.
            let item = ctx.run(|| {
                match std::pin::Pin::new(&mut gen).poll_next(&mut Cx::from_waker(&waker)) {
                    Poll::Ready(item) => item,
                    Poll::Pending => None,
                }
            });
            drop(gen);
            (item, ctx.get(&STEP))
        })
        .unwrap()
    });
    assert_eq!(item, Some(3));
    assert_eq!(step, Some(101), "the body's change came back with the item");
}

/// A sweep finding (R4.7): `set` replacing a value whose destructor panics, its token dropped at
/// once (it held the last reference): the panic escaped `set`. It is contained.
#[test]
fn a_replaced_value_whose_destructor_panics_is_contained_when_its_token_drops() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("the replaced value panics in its destructor");
        }
    }
    static PANICS: ContextVar<PanicsOnDrop> = ContextVar::new("panics_on_drop");
    let mut ctx = Context::new();
    let contained = ctx.run(|| {
        PANICS.set(PanicsOnDrop);
        let replaced = std::panic::catch_unwind(|| drop(PANICS.set(PanicsOnDrop)));
        std::mem::forget(PANICS.set(PanicsOnDrop));
        replaced.is_ok()
    });
    std::mem::forget(ctx);
    assert!(
        contained,
        "the panic did not escape set or the token's drop"
    );
}
