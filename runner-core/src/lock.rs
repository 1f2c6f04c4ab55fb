//! The one way runner takes a lock. A thread that panicked while holding one of runner's locks
//! left data that is still consistent (every critical section is a few pushes or takes), so a
//! poisoned lock is used as it is: poisoning must never turn one panic into a second one.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `mutex`, ignoring poisoning.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
