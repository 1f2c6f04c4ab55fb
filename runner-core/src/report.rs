//! What the loop reports to its exception handler, and the last resort when no loop can take a
//! report: panics nobody retrieved, slow polls, failures during shutdown (Python's
//! `loop.call_exception_handler(context)`).
//!
//! ```
//! use runner_core::{EventLoop, ExceptionContext};
//! use std::{cell::RefCell, rc::Rc};
//!
//! let seen = Rc::new(RefCell::new(Vec::new()));
//! let log = seen.clone();
//! let lp = EventLoop::builder()
//!     .exception_handler(move |_, ctx| log.borrow_mut().push(ctx.message().to_owned()))
//!     .build();
//! lp.call_exception_handler(ExceptionContext::new("something went wrong").with_error("disk full"));
//! assert_eq!(*seen.borrow(), ["something went wrong"]);
//! ```

use std::fmt;
use std::panic::Location;
use std::sync::Arc;

/// One report: a message, optionally an error's text and the task it concerns.
#[derive(Clone, Debug)]
pub struct ExceptionContext {
    message: String,
    error: Option<String>,
    task: Option<TaskInfo>,
}

impl ExceptionContext {
    /// A report with only a message.
    pub fn new(message: impl Into<String>) -> Self {
        ExceptionContext {
            message: message.into(),
            error: None,
            task: None,
        }
    }

    /// Attach an error (or a panic's message).
    pub fn with_error(mut self, error: impl fmt::Display) -> Self {
        self.error = Some(error.to_string());
        self
    }

    /// Attach the task the report is about.
    pub fn with_task(mut self, task: TaskInfo) -> Self {
        self.task = Some(task);
        self
    }

    /// The message, e.g. "task panic was never retrieved".
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error's text or the panic's message, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The task the report is about, if any.
    pub fn task(&self) -> Option<&TaskInfo> {
        self.task.as_ref()
    }
}

/// The default handler's format: the message, then one indented line per detail.
impl fmt::Display for ExceptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(task) = &self.task {
            write!(f, "\n  task: {task}")?;
        }
        if let Some(error) = &self.error {
            write!(f, "\n  error: {error}")?;
        }
        Ok(())
    }
}

/// What identifies a task in reports: its id, its name and where it was spawned.
#[derive(Clone, Debug)]
pub struct TaskInfo {
    id: u64,
    name: Option<Arc<str>>,
    spawned_at: Option<&'static Location<'static>>,
}

impl TaskInfo {
    pub(crate) fn new(
        id: u64,
        name: Option<Arc<str>>,
        spawned_at: Option<&'static Location<'static>>,
    ) -> Self {
        TaskInfo {
            id,
            name,
            spawned_at,
        }
    }

    /// A number unique in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The task's name; the main task is called "main".
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Where `spawn` (or `run`, for the main task) was called.
    pub fn spawned_at(&self) -> Option<&'static Location<'static>> {
        self.spawned_at
    }
}

/// `Task 'main' #1 spawned at src/main.rs:4:5`
impl fmt::Display for TaskInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "Task '{name}' #{}", self.id)?,
            None => write!(f, "Task #{}", self.id)?,
        }
        if let Some(at) = self.spawned_at {
            write!(f, " spawned at {}", source_location(at))?;
        }
        Ok(())
    }
}

/// How reports name a place in the source: `file:line:column`.
pub(crate) fn source_location(at: &Location<'_>) -> String {
    format!("{}:{}:{}", at.file(), at.line(), at.column())
}

/// Write a report to stderr: what the default handler does, and the last resort when no loop
/// is left to take a report.
pub(crate) fn write_to_stderr(ctx: &ExceptionContext) {
    write_stderr(format_args!("runner: {ctx}"));
}

/// Write one line to stderr. A line that cannot be written (stderr closed, a broken pipe, a full
/// disk) is dropped: `eprintln!` would panic instead, and runner's own output must never panic.
pub(crate) fn write_stderr(line: fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
