//! R9: `#[runner::test]` at run time (compile errors are in tests/ui.rs; `#[runner::main]` at
//! run time in tests/ctrl_c.rs and the examples).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use runner::{get_running_loop, EventLoop};

mod common;

/// R9.2: a test body runs on a running loop, in debug mode.
#[runner::test]
async fn test_body_sees_debug_on() {
    let lp = get_running_loop().expect("the body runs on a loop");
    assert!(lp.debug());
    assert_eq!(runner::spawn(async { 2 }).await.unwrap(), 2);
}

/// R9.2: `debug = false` turns it off.
#[runner::test(debug = false)]
async fn debug_false_turns_it_off() {
    assert!(!get_running_loop().unwrap().debug());
}

fn marked_loop() -> EventLoop {
    EventLoop::builder()
        .slow_callback_duration(Duration::from_millis(7))
        .build()
}

/// R9.3: `loop_factory` as a path is the loop the body runs on.
#[runner::test(loop_factory = marked_loop)]
async fn loop_factory_path_is_used() {
    assert_eq!(
        get_running_loop().unwrap().slow_callback_duration(),
        Duration::from_millis(7)
    );
}

/// R9.3: and as a closure; debug is still on by default.
#[runner::test(loop_factory = || EventLoop::builder().slow_callback_duration(Duration::from_millis(9)).build())]
async fn loop_factory_closure_is_used() {
    let lp = get_running_loop().unwrap();
    assert_eq!(lp.slow_callback_duration(), Duration::from_millis(9));
    assert!(lp.debug());
}

/// R9.2: a test may return a Result; `?` works.
#[runner::test]
async fn returns_result() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = runner::to_thread(|| "42".parse()).await??;
    assert_eq!(n, 42);
    Ok(())
}

/// R9.2: #[should_panic] keeps working: a panicking body fails the test.
#[runner::test]
#[should_panic(expected = "the body panicked")]
async fn panicking_body_fails() {
    runner::yield_now().await;
    panic!("the body panicked");
}

/// R9.2: a body over its timeout fails with the message.
#[runner::test(timeout = "50ms")]
#[should_panic(expected = "test exceeded its timeout of 50ms")]
async fn timeout_fails_the_test() {
    runner::sleep(Duration::from_secs(30)).await;
}

/// R9.2: #[ignore] keeps working.
#[runner::test]
#[ignore = "checks that #[ignore] is kept; it would fail if it ran"]
async fn ignored_is_kept() {
    panic!("an ignored test must not run");
}

static LEFTOVER_CANCELLED: AtomicBool = AtomicBool::new(false);

struct SetOnDrop;
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        // Cancelled by close while the loop runs (not merely torn down).
        if get_running_loop().is_some() {
            LEFTOVER_CANCELLED.store(true, Ordering::SeqCst);
        }
    }
}

#[runner::test(timeout = "30ms")]
#[ignore = "called by timed_out_test_closes_its_runner"]
async fn times_out_with_a_leftover_task() {
    drop(runner::spawn(async {
        let _guard = SetOnDrop;
        runner::sleep(Duration::from_secs(30)).await;
    }));
    runner::sleep(Duration::from_secs(30)).await;
}

/// R9.2: the runner is closed in every case, a timed-out test included: its leftover task is
/// cancelled by close.
#[test]
fn timed_out_test_closes_its_runner() {
    let caught = std::panic::catch_unwind(times_out_with_a_leftover_task);
    let payload = caught.expect_err("the timed-out test fails");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert_eq!(msg, "test exceeded its timeout of 30ms");
    assert!(LEFTOVER_CANCELLED.load(Ordering::SeqCst));
}

/// R9.2: the test runs on a fresh runner each time.
#[runner::test]
async fn fresh_runner_each_time() {
    static FIRST: runner::ContextVar<u8> = runner::ContextVar::new("first");
    assert_eq!(FIRST.get(), None);
    FIRST.set(1);
}

/// Issue 12, item 8: a body that blocks past its timeout without yielding fails the test when
/// the run returns, and the failure points at the test's `timeout`, not into runner.
#[runner::test(timeout = "100ms")]
#[ignore = "run by blocking_body_over_its_timeout_fails in a child process"]
async fn blocking_body_over_timeout() {
    std::thread::sleep(Duration::from_millis(400));
}

#[test]
fn blocking_body_over_its_timeout_fails() {
    let out = common::run_child("blocking_body_over_timeout", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", common::text(&out));
    assert!(
        stderr.contains("test exceeded its timeout of 100ms: its body ran for"),
        "{}",
        common::text(&out)
    );
    let line = include_str!("macros.rs")
        .lines()
        .position(|l| l.contains("#[runner::test(timeout = \"100ms\")]"))
        .map(|i| i + 1)
        .expect("the test's attribute is in this file");
    assert!(
        stderr.contains(&format!("panicked at tests/macros.rs:{line}:")),
        "the failure points at the test's timeout (line {line}): {}",
        common::text(&out)
    );
}

/// An entry point other than `main`: a sync function that runs its body on a fresh runner.
#[runner::main]
async fn entry_point(n: u32) -> u32 {
    runner::spawn(async move { n + 1 }).await.unwrap()
}

#[test]
fn entry_point_runs_on_a_fresh_runner() {
    assert_eq!(entry_point(6), 7);
}

/// Issue 12, item 7: a `#[runner::main]` function called while a loop runs panics with the
/// reason; it no longer ends the process, so the caller's cleanups still run.
#[test]
fn entry_point_inside_running_loop_panics() {
    let out = common::run_child("entry_point_inside_running_loop_child", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(
        stdout.contains(
            "caught: #[runner::main] could not run `entry_point`: run() cannot be called from a \
             running event loop"
        ),
        "{}",
        common::text(&out)
    );
    let cleanup = stdout.find("outer cleanup ran");
    let returned = stdout.find("outer run returned Ok(())");
    assert!(
        cleanup.is_some() && returned.is_some() && cleanup < returned,
        "{}",
        common::text(&out)
    );
}

#[test]
#[ignore = "run by entry_point_inside_running_loop_panics in a child process"]
fn entry_point_inside_running_loop_child() {
    let result = runner::run(async {
        let _cleanup = runner::defer(async { println!("outer cleanup ran") });
        let caught = std::panic::catch_unwind(|| entry_point(1));
        let payload = caught.expect_err("calling an entry point inside a loop panics");
        println!("caught: {}", common::panic_text(&*payload));
    });
    println!("outer run returned {result:?}");
}

/// Issue 23, item 25: a test's `timeout` bounds the whole test, close included. The body drops a
/// `to_thread` job that sleeps 8 s and returns at once; close would wait for the job (for the
/// default shutdown timeout, 300 s). The test fails when its timeout runs out, saying that close
/// overran and what it was waiting for, and pointing at the test's `timeout`.
#[runner::test(timeout = "200ms")]
#[ignore = "run by a_timeout_bounds_close_too in a child process"]
async fn stuck_job_at_close() {
    drop(runner::to_thread(|| {
        std::thread::sleep(Duration::from_secs(8))
    }));
}

#[test]
fn a_timeout_bounds_close_too() {
    let started = std::time::Instant::now();
    let out = common::run_child("stuck_job_at_close", &[]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", common::text(&out));
    assert!(
        stderr.contains(
            "test exceeded its timeout of 200ms: its body returned, then close waited for:"
        ) && stderr.contains("a to_thread job started at tests/macros.rs:"),
        "{}",
        common::text(&out)
    );
    let line = include_str!("macros.rs")
        .lines()
        .position(|l| l.contains("#[runner::test(timeout = \"200ms\")]"))
        .map(|i| i + 1)
        .expect("the test's attribute is in this file");
    assert!(
        stderr.contains(&format!("panicked at tests/macros.rs:{line}:")),
        "the failure points at the test's timeout (line {line}): {}",
        common::text(&out)
    );
    // Not a speed check: the job sleeps 8 s, and the test must not have waited for it.
    assert!(
        took < Duration::from_secs(7),
        "the test waited for the job: {took:?}"
    );
}
