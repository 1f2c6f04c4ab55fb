//! Debug mode's global switch (R7.1): the environment variable `RUNNER_DEBUG`.
//!
//! In debug mode every task poll and callback is timed and one that takes at least the loop's
//! `slow_callback_duration` is reported, naming the task and where it was spawned:
//!
//! ```
//! use std::{cell::RefCell, rc::Rc, time::Duration};
//! use runner_core::EventLoop;
//!
//! let reports = Rc::new(RefCell::new(Vec::new()));
//! let log = reports.clone();
//! let lp = EventLoop::builder()
//!     .debug(true)
//!     .slow_callback_duration(Duration::from_millis(5))
//!     .exception_handler(move |_, ctx| log.borrow_mut().push(ctx.message().to_owned()))
//!     .build();
//! lp.run_until_complete(async { std::thread::sleep(Duration::from_millis(10)) }).unwrap();
//! assert!(reports.borrow()[0].starts_with("Executing <Task 'main'"));
//! ```
//!
//! When debug is off, a poll pays one flag check.

/// True when `RUNNER_DEBUG` is set to something other than empty or `0`.
///
/// Read by every loop built without a `debug` setting, as CPython's `BaseEventLoop.__init__`
/// calls `coroutines._is_debug_mode()`, which reads `os.environ` each time: a change between two
/// runs takes effect. (A lookup costs about 530 instructions, a fifteenth of a whole
/// `runner::run(async { 1 })`.)
pub(crate) fn enabled_by_env() -> bool {
    std::env::var_os("RUNNER_DEBUG").is_some_and(|v| !v.is_empty() && v != "0")
}
