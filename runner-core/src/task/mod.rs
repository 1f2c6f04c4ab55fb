//! Tasks: futures spawned on an event loop, with cancellation at scheduling points, panics caught
//! per task, the spawner's context copied in, and async cleanup run as part of the task.
//!
//! ```
//! use std::time::Duration;
//!
//! runner_core::run(async {
//!     let slow = runner_core::spawn(runner_core::sleep(Duration::from_secs(60)));
//!     let quick = runner_core::spawn(async { 6 * 7 });
//!     assert_eq!(quick.await.unwrap(), 42);
//!     slow.cancel();
//!     assert!(slow.await.unwrap_err().is_cancelled());
//! })
//! .unwrap();
//! ```
//!
//! Layers, each file importing only from those above it in this list (a task's shared state, its
//! `Header`, lives below the executor, in `crate::header`): `registry` (what close cancels), `scope` (the part of a loop tasks use),
//! `current` (the task being polled), `worker_local` (a worker thread's own cleanups), `cleanup` (scheduling async cleanups), `bound` (values kept on the thread that made them, behind handles that travel), `handle` (`Task`),
//! `future` (the future every task runs in), `spawn`.

pub(crate) mod bound;
pub(crate) mod cleanup;
pub(crate) mod current;
pub(crate) mod future;
pub(crate) mod handle;
pub(crate) mod registry;
pub(crate) mod scope;
pub(crate) mod spawn;
pub(crate) mod worker_local;
