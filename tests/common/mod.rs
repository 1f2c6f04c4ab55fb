//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::cell::RefCell;
use std::process::{Command, Output};
use std::rc::Rc;

use runner::{EventLoop, ExceptionContext};

/// Reports an exception handler received.
#[derive(Clone, Default)]
pub struct Reports(Rc<RefCell<Vec<ExceptionContext>>>);

impl Reports {
    pub fn messages(&self) -> Vec<String> {
        self.0
            .borrow()
            .iter()
            .map(|c| c.message().to_owned())
            .collect()
    }

    pub fn all(&self) -> Vec<ExceptionContext> {
        self.0.borrow().clone()
    }

    pub fn with_message(&self, prefix: &str) -> Vec<ExceptionContext> {
        self.0
            .borrow()
            .iter()
            .filter(|c| c.message().starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// A loop whose exception handler records every report.
pub fn recording_loop() -> (EventLoop, Reports) {
    let reports = Reports::default();
    let log = reports.clone();
    let lp = EventLoop::builder()
        .exception_handler(move |_, ctx| log.0.borrow_mut().push(ctx.clone()))
        .build();
    (lp, reports)
}

/// A loop factory that records reports and counts its calls.
pub fn counting_factory() -> (
    impl FnOnce() -> EventLoop,
    Reports,
    Rc<RefCell<Vec<EventLoop>>>,
) {
    let made = Rc::new(RefCell::new(Vec::new()));
    let (lp, reports) = recording_loop();
    let record = made.clone();
    let factory = move || {
        record.borrow_mut().push(lp.clone());
        lp
    };
    (factory, reports, made)
}

/// Run one `#[ignore]`d test of this test binary in a child process, with extra environment.
pub fn run_child(test: &str, env: &[(&str, Option<&str>)]) -> Output {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let mut cmd = Command::new(exe);
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd.output().expect("the child test process starts")
}

/// The child's stdout and stderr, for assertions and failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Sets a flag when dropped: observes destructors running.
pub struct DropFlag(pub Rc<std::cell::Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

pub fn flag() -> (Rc<std::cell::Cell<bool>>, DropFlag) {
    let f = Rc::new(std::cell::Cell::new(false));
    (f.clone(), DropFlag(f))
}

/// Records, when dropped, whether an event loop was running: a task cancelled by close's
/// cancel-and-wait step drops with the loop running, one merely torn down with the loop does not.
pub struct RunningAtDrop(pub Rc<std::cell::Cell<Option<bool>>>);

impl Drop for RunningAtDrop {
    fn drop(&mut self) {
        self.0.set(Some(runner::get_running_loop().is_some()));
    }
}

pub fn running_at_drop() -> (Rc<std::cell::Cell<Option<bool>>>, RunningAtDrop) {
    let f = Rc::new(std::cell::Cell::new(None));
    (f.clone(), RunningAtDrop(f))
}

/// The text of a panic payload (`&str` or `String`).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<not a string>".into())
}

/// Wait (on the loop) until `cond` holds, checking every millisecond, at most 10 s. Tests wait
/// for outcomes this way instead of sleeping a fixed time: CI machines are shared and noisy.
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        runner::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Run `f` on a fresh thread and return its result; panic if it has not finished after `limit`.
/// A guard against hangs (a broken scheduler hangs rather than fails), not a speed check: keep
/// `limit` far above the time `f` needs on a loaded machine.
#[allow(dead_code)]
pub fn finishes_within<T: Send + 'static>(
    limit: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => std::panic::resume_unwind(payload),
        Err(_) => panic!("still running after {limit:?}: hung"),
    }
}

/// Adds one to a counter when dropped (on the loop thread).
pub struct CountOnDrop(pub Rc<std::cell::Cell<usize>>);

impl Drop for CountOnDrop {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// Adds one to a counter when dropped, on any thread.
pub struct CountOnDropSync(pub std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for CountOnDropSync {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Run one `#[ignore]`d test of this test binary in a child process whose stderr is a pipe
/// closed before the child writes to it (as in `prog 2>&1 | head -1`). Killed after `limit`.
pub fn run_child_without_stderr(test: &str, limit: std::time::Duration) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let mut child = Command::new(exe)
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the child test process starts");
    drop(child.stderr.take());
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("the killed child can be waited for");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    Output {
        status,
        stdout: reader.join().unwrap_or_default(),
        stderr: b"(closed by the test)".to_vec(),
    }
}

/// Assert that a child process exited successfully and printed each of `lines` on stdout.
pub fn assert_child_printed(out: &Output, lines: &[&str]) {
    assert!(out.status.success(), "{}", text(out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in lines {
        assert!(
            stdout.contains(line),
            "expected {line:?} on stdout; {}",
            text(out)
        );
    }
}

/// Pushes its line to a log when dropped (on the loop thread): observes a future being dropped,
/// by a cancellation or a teardown.
pub struct LogOnDrop(pub Rc<RefCell<Vec<String>>>, pub String);

impl Drop for LogOnDrop {
    fn drop(&mut self) {
        self.0.borrow_mut().push(std::mem::take(&mut self.1));
    }
}
