//! The runtime behind `runner`: Python's `asyncio.run` and `asyncio.Runner` for Rust, built on
//! smol's components (`async-task` for tasks, `async-io` for the reactor and timers).
//!
//! ```
//! use std::time::Duration;
//!
//! let total = runner_core::run(async {
//!     let tasks: Vec<_> = (1..=3u64)
//!         .map(|i| runner_core::spawn(async move {
//!             runner_core::sleep(Duration::from_millis(i)).await;
//!             i * 10
//!         }))
//!         .collect();
//!     let mut total = 0;
//!     for task in tasks {
//!         total += task.await.unwrap();
//!     }
//!     total
//! })
//! .unwrap();
//! assert_eq!(total, 60);
//! ```
//!
//! Most programs use the `runner` facade crate and its `#[runner::main]` attribute instead of
//! this crate directly; the items are the same.

#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
// The one exception, with its SAFETY comment: signal.rs restores SIGINT's default action.
#![deny(unsafe_code)]

mod asyncgen;
mod attributes;
mod blocking;
mod callback;
mod context;
mod debug;
mod defer;
mod error;
mod event_loop;
mod exception;
mod executor;
mod runner;
mod signal;
mod task;
mod time;

pub use asyncgen::{finalize, AsyncGen, AsyncGenError, Finalized, GeneratorExit, Yielder};
pub use callback::CallbackHandle;
pub use context::{copy_context, Context, ContextVar, Token};
pub use defer::{defer, Defer};
pub use error::{ContextError, Elapsed, RunError, TaskError};
pub use event_loop::{get_running_loop, EventLoop, LoopBuilder, LoopHandle};
pub use exception::ExceptionContext;
pub use runner::{run, Runner, RunnerBuilder};
pub use signal::ctrl_c;
pub use task::{current_task, spawn, Task, TaskInfo, TaskRef};
pub use time::{sleep, timeout, yield_now};

use std::panic::Location;

/// Used by the code `#[runner::main]` and `#[runner::test]` expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::attributes::{entry_failed, test_failed, Output, TestTimeout};
}

/// Run the blocking function `f` on the running loop's default executor, in a copy of the
/// caller's context (Python's `asyncio.to_thread`).
///
/// # Panics
/// Outside a running loop, or once the loop's default executor was shut down ("executor
/// shutdown has been called").
///
/// ```
/// use runner_core::ContextVar;
/// static USER: ContextVar<&'static str> = ContextVar::new("user");
/// runner_core::run(async {
///     USER.set("ada");
///     let seen = runner_core::to_thread(|| USER.get()).await.unwrap();
///     assert_eq!(seen, Some("ada"));
/// })
/// .unwrap();
/// ```
#[track_caller]
pub fn to_thread<F, T>(f: F) -> Task<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match get_running_loop() {
        Some(lp) => lp.spawn_blocking(f, Context::current(), Location::caller()),
        None => panic!(
            "runner::to_thread() was called outside a running event loop: call it from code \
             running inside runner::run(), Runner::run() or #[runner::main]"
        ),
    }
}
