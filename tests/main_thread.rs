//! What happens on a process's main thread: its destructors run at process exit (where a panic
//! aborts the process), and a runner there handles Ctrl-C, which changes what close says. Each
//! scenario runs in a child process, on that process's main thread (this test has no harness),
//! and is checked by its exit status and output. (Ctrl-C itself, with real signals, is
//! `tests/ctrl_c.rs`.)

use std::process::Command;

use runner::ContextVar;

static REQUEST_ID: ContextVar<u64> = ContextVar::with_default("request_id", || 0);
static GUARD: ContextVar<LogOnDrop> = ContextVar::new("guard");
static SECOND: ContextVar<LogOnDrop> = ContextVar::new("second");

/// Logs the request id when dropped, as a guard that logs its request would; sets a variable
/// too, and panics when asked.
struct LogOnDrop {
    name: &'static str,
    panic: bool,
}

impl Drop for LogOnDrop {
    fn drop(&mut self) {
        let seen = REQUEST_ID.get();
        let token = REQUEST_ID.set(99);
        let reset = REQUEST_ID.reset(token).is_ok();
        println!(
            "{} dropped: saw request id {seen:?}, reset {reset}",
            self.name
        );
        if self.panic {
            panic!("{} panics in its destructor", self.name);
        }
    }
}

/// A value whose destructor reads and sets variables, held in the thread's own context, and a
/// second one whose destructor panics. Once the thread's context is being dropped, reads see the
/// defaults (R4.7): request id 0, and a set's token resets nothing.
fn hold_guards_in_the_threads_context(tag: &'static str) {
    REQUEST_ID.set(7);
    GUARD.set(LogOnDrop {
        name: tag,
        panic: false,
    });
    SECOND.set(LogOnDrop {
        name: "panicking guard",
        panic: true,
    });
}

fn scenario(name: &str) {
    match name {
        // Issue 23, item 2: a std::thread exits with such values in its context.
        "thread_exit" => {
            let joined =
                std::thread::spawn(|| hold_guards_in_the_threads_context("thread guard")).join();
            println!("thread joined: {}", joined.is_ok());
        }
        // Issue 23, item 2: the main thread holds them when `main` returns.
        "process_exit" => {
            hold_guards_in_the_threads_context("main thread guard");
            runner::run(async { REQUEST_ID.set(8) }).expect("the run ends");
            println!("main returns");
        }
        // Issue 23, item 15: close waits more than a second (for a `to_thread` job) with no
        // Ctrl-C pressed: its notice says a Ctrl-C stops the waiting, not "press Ctrl-C again".
        "close_notice_without_ctrl_c" => {
            runner::run(async {
                drop(runner::to_thread(|| {
                    std::thread::sleep(std::time::Duration::from_millis(1500))
                }));
            })
            .expect("the run ends");
            println!("closed");
        }
        other => panic!("no scenario {other}"),
    }
}

struct Expect {
    scenario: &'static str,
    /// Lines stdout must hold, in this order.
    lines: &'static [&'static str],
    /// Text stderr must hold, and text it must not.
    stderr: &'static [&'static str],
    not_stderr: &'static [&'static str],
}

const EXPECT: &[Expect] = &[
    Expect {
        scenario: "thread_exit",
        lines: &[
            "dropped: saw request id Some(0), reset false",
            "dropped: saw request id Some(0), reset false",
            "thread joined: true",
        ],
        stderr: &[],
        not_stderr: &[],
    },
    Expect {
        scenario: "process_exit",
        lines: &[
            "main returns",
            "dropped: saw request id Some(0), reset false",
            "dropped: saw request id Some(0), reset false",
        ],
        stderr: &[],
        not_stderr: &[],
    },
    Expect {
        scenario: "close_notice_without_ctrl_c",
        lines: &["closed"],
        stderr: &[
            "runner: still closing after 1 s, waiting for:",
            "a to_thread job started at tests/main_thread.rs:",
            "press Ctrl-C to stop waiting",
        ],
        not_stderr: &["again"],
    },
];

fn main() {
    if let Ok(name) = std::env::var("RUNNER_EXIT_SCENARIO") {
        scenario(&name);
        return;
    }
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let mut failures = Vec::new();
    for expect in EXPECT {
        let child = Command::new(&exe)
            .env("RUNNER_EXIT_SCENARIO", expect.scenario)
            .output()
            .expect("the child starts");
        let stdout = String::from_utf8_lossy(&child.stdout);
        let stderr = String::from_utf8_lossy(&child.stderr);
        let mut rest = &*stdout;
        let mut missing = None;
        for line in expect.lines {
            match rest.find(line) {
                Some(at) => rest = &rest[at + line.len()..],
                None => {
                    missing = Some(*line);
                    break;
                }
            }
        }
        let missing = missing
            .or_else(|| expect.stderr.iter().copied().find(|t| !stderr.contains(t)))
            .or_else(|| {
                expect
                    .not_stderr
                    .iter()
                    .copied()
                    .find(|t| stderr.contains(t))
            });
        let ok = child.status.success() && missing.is_none();
        println!(
            "exit scenario {} ... {}",
            expect.scenario,
            if ok { "ok" } else { "FAILED" }
        );
        if !ok {
            failures.push(format!(
                "{}: status {:?}, missing or unwanted {missing:?}\n--- stdout\n{stdout}--- stderr\n{stderr}",
                expect.scenario, child.status
            ));
        }
    }
    if !failures.is_empty() {
        for failure in &failures {
            eprintln!("{failure}");
        }
        std::process::exit(1);
    }
}
