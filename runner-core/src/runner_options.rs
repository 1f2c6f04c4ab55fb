//! The options of a [`Runner`](crate::Runner): [`RunnerBuilder`]. What they build, and
//! `RunnerBuilder::build` and `run`, are in `runner.rs`.

use std::fmt;
use std::time::Duration;

use crate::event_loop::api::EventLoop;

/// Python's `constants.THREAD_JOIN_TIMEOUT`.
const DEFAULT_EXECUTOR_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(300);

/// Makes a runner's loop, at its first use.
pub(crate) type LoopFactory = Box<dyn FnOnce() -> EventLoop>;

/// Options for a [`Runner`](crate::Runner).
///
/// ```
/// use std::time::Duration;
/// use runner_core::{EventLoop, Runner};
///
/// let out = Runner::builder()
///     .debug(true)
///     .loop_factory(EventLoop::new)
///     .executor_shutdown_timeout(Duration::from_secs(5))
///     .run(async { runner_core::get_running_loop().unwrap().debug() })
///     .unwrap();
/// assert!(out);
/// ```
pub struct RunnerBuilder {
    pub(crate) debug: Option<bool>,
    pub(crate) workers: Option<usize>,
    pub(crate) loop_factory: Option<LoopFactory>,
    pub(crate) executor_shutdown_timeout: Duration,
}

impl Default for RunnerBuilder {
    fn default() -> Self {
        RunnerBuilder {
            debug: None,
            workers: None,
            loop_factory: None,
            executor_shutdown_timeout: DEFAULT_EXECUTOR_SHUTDOWN_TIMEOUT,
        }
    }
}

impl RunnerBuilder {
    /// Debug mode on or off; never called means the global setting (`RUNNER_DEBUG`).
    pub fn debug(mut self, enabled: bool) -> Self {
        self.debug = Some(enabled);
        self
    }

    /// Run [`spawn_send`](crate::spawn_send)'s tasks on a pool of `n` worker threads (at least
    /// one; [`available_workers`](crate::available_workers) gives one per core), started at the
    /// first run. Unset: one thread, every task on it. The main task and
    /// [`spawn`](crate::spawn) stay on the runner's thread either way.
    ///
    /// ```
    /// let cores = runner_core::available_workers();
    /// let seen = runner_core::Runner::builder()
    ///     .workers(cores)
    ///     .run(async { runner_core::spawn_send(async { 1 + 1 }).await.unwrap() })
    ///     .unwrap();
    /// assert_eq!(seen, 2);
    /// ```
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }

    /// Make the loop with `factory` (called once, at first use) instead of `EventLoop::new`.
    pub fn loop_factory<F>(mut self, factory: F) -> Self
    where
        F: FnOnce() -> EventLoop + 'static,
    {
        self.loop_factory = Some(Box::new(factory));
        self
    }

    /// How long close waits for the default executor's threads (default 300 s).
    pub fn executor_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.executor_shutdown_timeout = timeout;
        self
    }
}

impl fmt::Debug for RunnerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerBuilder")
            .field("debug", &self.debug)
            .field("workers", &self.workers)
            .field("loop_factory", &self.loop_factory.is_some())
            .field("executor_shutdown_timeout", &self.executor_shutdown_timeout)
            .finish()
    }
}
