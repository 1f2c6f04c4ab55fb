//! [`LoopHandle`]: the `Send + Sync` way into a loop from other threads.

use std::fmt;
use std::future::Future;
use std::panic::Location;

use crate::context::Context;
use crate::post::job;
use crate::queue::Inbox;
use crate::task::handle::Task;
use crate::task::spawn::spawn_remote;

/// A `Send + Sync` handle to a loop, for other threads.
///
/// ```
/// runner_core::run(async {
///     let handle = runner_core::get_running_loop().unwrap().handle();
///     let task = std::thread::spawn(move || handle.spawn(async { 5 })).join().unwrap();
///     assert_eq!(task.await.unwrap(), 5);
/// })
/// .unwrap();
///
/// fn send_and_sync<T: Send + Sync>() {}
/// send_and_sync::<runner_core::LoopHandle>();
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    inbox: Inbox,
}

impl LoopHandle {
    pub(crate) fn new(inbox: Inbox) -> Self {
        LoopHandle { inbox }
    }

    /// Run `f` on the loop thread soon, in a copy of the calling thread's context. Dropped
    /// silently if the loop is closed.
    pub fn call_soon_threadsafe<F: FnOnce() + Send + 'static>(&self, f: F) {
        let mut ctx = Context::current();
        let _ = self.inbox.post(job(move || ctx.run(f)));
    }

    /// Spawn a `Send` future on the loop from any thread, in a copy of the calling thread's
    /// context. On a closed loop the task is cancelled at once.
    #[track_caller]
    pub fn spawn<F>(&self, fut: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        spawn_remote(&self.inbox, fut, Location::caller())
    }

    /// True once the loop is closed.
    pub fn is_closed(&self) -> bool {
        self.inbox.is_closed()
    }
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle")
            .field("closed", &self.is_closed())
            .finish()
    }
}
