//! The errors a run, a task, a timeout or a context variable can end with.
//!
//! ```
//! let runner = runner_core::Runner::new();
//! runner.close();
//! let err = runner.run(async { 1 }).unwrap_err();
//! assert_eq!(err, runner_core::RunError::Closed);
//! assert!(err.to_string().contains("Runner is closed"));
//! ```

use std::any::Any;
use std::fmt;

/// Why [`Runner::run`](crate::Runner::run) or [`run`](crate::run) returned no value.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunError {
    /// Ctrl-C (SIGINT) ended the run: Python's `KeyboardInterrupt`.
    Interrupted,
    /// The main task was cancelled by code, not (only) by Ctrl-C.
    Cancelled,
    /// `run` was called while an event loop is running on this thread.
    NestedRun,
    /// The runner (or its loop) was closed.
    Closed,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunError::Interrupted => "the run was interrupted by Ctrl-C (SIGINT)",
            RunError::Cancelled => "the main task was cancelled",
            RunError::NestedRun => {
                "run() cannot be called from a running event loop; \
                 inside async code `.await` the future or `runner::spawn` it instead"
            }
            RunError::Closed => "Runner is closed; build a new Runner to run more work",
        })
    }
}

impl RunError {
    /// End the process the way a program's entry point should for this error:
    /// `Interrupted` ends it as killed by SIGINT (Unix: SIGINT's default action re-raised, so
    /// shells see status 130; Windows: exit code 0xC000013A); any other error prints
    /// `error: <message>` to stderr and exits with status 1. For a program that drives a
    /// `Runner` by hand; `#[runner::main]` calls it on `Interrupted` and panics on the others.
    pub fn exit(self) -> ! {
        match self {
            RunError::Interrupted => crate::process::end_as_interrupted(),
            other => {
                use std::io::Write;
                // A closed or full stderr must not turn the exit into a panic.
                let _ = writeln!(std::io::stderr(), "error: {other}");
                std::process::exit(1)
            }
        }
    }
}

impl std::error::Error for RunError {}

/// Why awaiting a [`Task`](crate::Task) gave no value.
pub enum TaskError {
    /// The task was cancelled before it finished.
    Cancelled,
    /// The task panicked; this is the panic's payload.
    Panicked(Box<dyn Any + Send>),
}

impl TaskError {
    /// True if the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, TaskError::Cancelled)
    }

    /// True if the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, TaskError::Panicked(_))
    }

    /// The panic payload, to re-raise it with [`std::panic::resume_unwind`].
    ///
    /// # Panics
    /// If the task was cancelled rather than panicked.
    pub fn into_panic(self) -> Box<dyn Any + Send> {
        match self {
            TaskError::Panicked(payload) => payload,
            TaskError::Cancelled => panic!("TaskError::into_panic called on a cancelled task"),
        }
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Cancelled => f.write_str("Cancelled"),
            TaskError::Panicked(payload) => debug_panicked(f, &**payload),
        }
    }
}

/// `Panicked("the panic's message")`: how errors that carry a panic payload show it in `Debug`.
pub(crate) fn debug_panicked(
    f: &mut fmt::Formatter<'_>,
    payload: &(dyn Any + Send),
) -> fmt::Result {
    f.debug_tuple("Panicked")
        .field(&panic_message(payload))
        .finish()
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Cancelled => f.write_str("task was cancelled"),
            TaskError::Panicked(p) => write!(f, "task panicked: {}", panic_message(&**p)),
        }
    }
}

impl std::error::Error for TaskError {}

/// An error that is one fixed message: the type, its `Display` and its `Error`.
macro_rules! message_error {
    ($(#[$doc:meta])* $name:ident, $message:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name;

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($message)
            }
        }

        impl std::error::Error for $name {}
    };
}

message_error!(
    /// [`timeout`](crate::timeout) ran out before the future finished.
    Elapsed,
    "deadline has elapsed"
);

message_error!(
    /// A [`Token`](crate::Token) was given to [`ContextVar::reset`](crate::ContextVar::reset)
    /// of another variable, or in another context than the one it was made in.
    ContextError,
    "the token was created by another context variable or in another context; reset a \
     variable in the same context that set it"
);

message_error!(
    /// What `yield_` returns when the generator is being closed: return it (with `?`) to run the
    /// cleanup after the loop and finish.
    GeneratorExit,
    "the async generator was closed"
);

/// Why closing a generator failed.
pub enum AsyncGenError {
    /// The body yielded another value after it was told to close.
    IgnoredExit,
    /// The body panicked while closing; this is the panic's payload.
    Panicked(Box<dyn Any + Send>),
}

impl fmt::Debug for AsyncGenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsyncGenError::IgnoredExit => f.write_str("IgnoredExit"),
            AsyncGenError::Panicked(payload) => debug_panicked(f, &**payload),
        }
    }
}

impl fmt::Display for AsyncGenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsyncGenError::IgnoredExit => f.write_str(
                "async generator ignored GeneratorExit: its body yielded again after `yield_` \
                 returned Err(GeneratorExit); return that error instead",
            ),
            AsyncGenError::Panicked(payload) => write!(
                f,
                "async generator panicked while closing: {}",
                panic_message(&**payload)
            ),
        }
    }
}

impl std::error::Error for AsyncGenError {}

/// The text of a panic payload: the `&str` or `String` given to `panic!`.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "Box<dyn Any> (a panic payload that is not a string)"
    }
}

/// Run `f`, containing a panic: runner's own work (reports, destructors it runs on a task's
/// behalf) must never unwind into the loop. The panic's payload is dropped quietly too.
pub(crate) fn catch_quietly<R>(f: impl FnOnce() -> R) -> Option<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(value) => Some(value),
        Err(payload) => {
            drop_quietly(payload);
            None
        }
    }
}

/// Drop a panic payload whose own destructor may panic (`panic_any` of such a value): that
/// second panic is contained and its payload leaked, since dropping it could panic again.
pub(crate) fn drop_quietly(payload: Box<dyn Any + Send>) {
    if let Err(again) =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload)))
    {
        std::mem::forget(again);
    }
}
