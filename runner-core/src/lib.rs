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
//! this crate directly; the items are the same. The rules the runtime follows, numbered, are in
//! the repository's `docs/behaviour.md`.
//!
//! # Layers
//!
//! Each module imports only from the modules listed before it (`tests/layers.rs` checks this):
//!
//! 1. `lock`, `process`, `error`, `report`, `post`, `pruned`, `refused`, `context_map`,
//!    `context_cache`, `context`, `debug`, `time`: the leaves.
//! 2. `driver` (the loop's I/O driver and timers, and `block_on`), `header` (what every task's
//!    allocation carries, and `TaskRef`), then `queue`, `executor`, `blocking`: running tasks
//!    and blocking jobs.
//! 3. `net` (sockets on the loop's driver), `task`: tasks, the per-loop scope they use, and
//!    async cleanup scheduling.
//! 4. `defer`, `kept_stream` (a stream kept on the thread that made it, usable from any),
//!    `asyncgen`, `finalize`, `callback`, `signal`, `workers`: built on tasks.
//! 5. `event_loop`: the loop.
//! 6. `runner_options`, `runner`: `Runner` and `run`, Python's `runners.py`; then `attributes`,
//!    what `#[runner::main]` and `#[runner::test]` expand to.

#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
// The exceptions, each with its SAFETY comment: process.rs restores SIGINT's default action;
// header.rs, task/future.rs and task/spawn.rs reach a task's header, which lives in async-task's
// allocation as its metadata (one allocation per task: spawn-join went from 1.8 to 1.1 times the
// raw executor's time); task/current.rs makes a counted handle to the task being polled;
// context_cache.rs reads a cached context variable's value.
#![deny(unsafe_code)]

mod asyncgen;
mod attributes;
mod blocking;
mod callback;
mod context;
mod context_cache;
mod context_map;
mod debug;
mod defer;
mod driver;
mod error;
mod event_loop;
mod executor;
mod finalize;
mod header;
#[cfg(unix)]
mod interim_sigint;
mod kept_stream;
mod lock;
pub mod net;
mod pool;
mod post;
mod process;
mod pruned;
mod queue;
mod refused;
mod report;
mod runner;
mod runner_options;
mod signal;
mod task;
mod time;
mod workers;

pub use asyncgen::{AsyncGen, Yielder};
pub use callback::CallbackHandle;
pub use context::{copy_context, Context, ContextVar, Token};
pub use defer::{defer, Defer};
pub use error::{AsyncGenError, ContextError, Elapsed, GeneratorExit, RunError, TaskError};
pub use event_loop::api::EventLoop;
pub use event_loop::builder::LoopBuilder;
pub use event_loop::handle::LoopHandle;
pub use event_loop::run::{get_running_loop, to_thread};
pub use finalize::{finalize, Finalized};
pub use header::TaskRef;
pub use report::{ExceptionContext, TaskInfo};
pub use runner::{run, Runner};
pub use runner_options::RunnerBuilder;
pub use signal::ctrl_c;
pub use task::current::current_task;
pub use task::handle::Task;
pub use task::spawn::spawn;
pub use time::{sleep, timeout, yield_now};
pub use workers::{available_workers, spawn_send};

/// Used by the code `#[runner::main]` and `#[runner::test]` expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::attributes::{entry_failed, test_failed, Output, TestRun, TestTimeout};
}
