//! Work handed to a loop from any thread, and the trait of whoever takes it. A task's header
//! keeps its loop as a [`Post`] so that a report made about the task on another thread reaches
//! the loop's exception handler.

/// A job posted to a loop from any thread (`call_soon_threadsafe`, a report made elsewhere).
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// A loop's cross-thread way in, as its tasks see it.
pub(crate) trait Post: Send + Sync {
    /// Queue `job` to run on the loop's thread; gives it back if the loop is closed.
    fn post(&self, job: Job) -> Result<(), Job>;
}
