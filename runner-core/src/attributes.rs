//! What the code `#[runner::main]` and `#[runner::test]` expand to calls. Not part of the API:
//! reached through `runner_core::__private`, and free to change with the attributes.

use std::future::IntoFuture;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::error::{Elapsed, RunError};
use crate::runner_options::RunnerBuilder;
use crate::time::timeout;

/// Names a function's declared return type `T` as `<fn() -> T as Output>::Output`, which works
/// for `!` on stable Rust too: the expansion binds the body's value to a local of that type, so
/// that a type error points at the user's offending expression.
pub trait Output {
    /// The `T` of `fn() -> T`.
    type Output;

    /// A value of type `T`, for the expansion's `if false { return <..>::declared() }`, which
    /// fixes the output of the `async` block around the body to `T` before the body is checked,
    /// so that a `return` of another type in the body is one error, at its value, as in an
    /// `async fn`. Never called.
    fn declared() -> Self::Output;
}

impl<T> Output for fn() -> T {
    type Output = T;

    fn declared() -> T {
        unreachable!("never called: it only gives the type of a `return` that never runs")
    }
}

/// A `#[runner::main]` function's run failed. Ctrl-C ends the process as killed by SIGINT (the
/// runner is closed by then); any other error is a panic, as with `#[tokio::main]`, so that the
/// caller's destructors and deferred cleanups still run when it unwinds.
#[track_caller]
pub fn entry_failed(error: RunError, function: &str) -> ! {
    match error {
        RunError::Interrupted => error.exit(),
        other => panic!("#[runner::main] could not run `{function}`: {other}"),
    }
}

/// A `#[runner::test]` could not run its body.
#[track_caller]
pub fn test_failed(error: RunError) -> ! {
    panic!("#[runner::test] could not run the test: {error}")
}

/// A test's `timeout`: raced against the body while it runs, checked again when the run returns
/// (a body that blocks without yielding cannot be stopped in the middle), and the runner's close
/// gets what is left of it (R9.2: the timeout bounds the whole test). The expansion calls
/// `check` spanned at the test's `timeout = ".."`, so a failure points there.
#[derive(Debug)]
pub struct TestTimeout {
    limit: Duration,
    text: &'static str,
    started: Instant,
}

impl TestTimeout {
    /// Start timing a test body that may take `ms` milliseconds (`text` as the user wrote it).
    pub fn start(ms: u64, text: &'static str) -> Self {
        TestTimeout {
            limit: Duration::from_millis(ms),
            text,
            started: Instant::now(),
        }
    }

    /// How long the body may take.
    pub fn duration(&self) -> Duration {
        self.limit
    }

    /// Run `body` on a runner `builder` builds, for at most the timeout, then close the runner
    /// within what is left of it.
    #[track_caller]
    pub fn run<F: IntoFuture>(&self, builder: RunnerBuilder, body: F) -> TestRun<F::Output> {
        let runner = builder.build();
        let ran = catch_unwind(AssertUnwindSafe(|| runner.run(timeout(self.limit, body))));
        let cut_short = runner.close_by(self.started + self.limit);
        match ran {
            Ok(result) => TestRun { result, cut_short },
            Err(payload) => resume_unwind(payload),
        }
    }

    /// The body's value, or the test's failure: the run could not be made, or the test ran
    /// out of time in its body or in the close after it.
    #[track_caller]
    pub fn check<T>(&self, run: TestRun<T>) -> T {
        let result = match run.result {
            Ok(result) => result,
            Err(error) => test_failed(error),
        };
        if result.is_ok() && !run.cut_short.is_empty() {
            panic!(
                "test exceeded its timeout of {}: its body returned, then close waited for: {}",
                self.text,
                run.cut_short.join("; ")
            );
        }
        let took = self.started.elapsed();
        match result {
            Err(Elapsed) => panic!("test exceeded its timeout of {}", self.text),
            Ok(_) if took > self.limit => panic!(
                "test exceeded its timeout of {}: its body ran for {:.3} s without yielding to \
                 the loop, so it could not be stopped sooner",
                self.text,
                took.as_secs_f64()
            ),
            Ok(value) => value,
        }
    }
}

/// How a test with a timeout ran: the body's value (or `Elapsed`), and what close stopped
/// waiting for when the timeout ran out.
#[derive(Debug)]
pub struct TestRun<T> {
    result: Result<Result<T, Elapsed>, RunError>,
    cut_short: Vec<String>,
}
