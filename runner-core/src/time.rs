//! Time: sleeping, yielding to other tasks, and putting a deadline on a future.
//!
//! ```
//! use std::time::Duration;
//! use runner_core::{sleep, timeout, Elapsed};
//!
//! runner_core::run(async {
//!     assert_eq!(timeout(Duration::from_secs(5), async { 7 }).await, Ok(7));
//!     let late = timeout(Duration::from_millis(5), sleep(Duration::from_secs(5))).await;
//!     assert_eq!(late, Err(Elapsed));
//! })
//! .unwrap();
//! ```
//!
//! A sleep's deadline is kept by the loop it waits on (its reactor's timers, `driver`), whichever
//! thread of the loop polls it, and the loop's threads fold the earliest deadline into their
//! wait for I/O. A sleep polled outside any loop falls back to an `async_io::Timer`. A sleep
//! polled by another loop than the one it waited on before (or outside any loop) moves there:
//! the first loop may be closed, or not running.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as Cx, Poll};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

use crate::driver::timers::TimerKey;
use crate::driver::{self, ReactorHome};
use crate::error::Elapsed;

/// Wait for `d`. Other tasks run meanwhile.
pub async fn sleep(d: Duration) {
    Sleep::new(d).await;
}

/// Let every other ready task run once before going on.
pub async fn yield_now() {
    futures_lite::future::yield_now().await;
}

/// Run `fut` for at most `d`: its output, or `Err(Elapsed)` after dropping it.
pub async fn timeout<F: IntoFuture>(d: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let fut = fut.into_future();
    async { Ok(fut.await) }
        .or(async {
            Sleep::new(d).await;
            Err(Elapsed)
        })
        .await
}

/// A future that completes at a deadline. See the module documentation.
pub(crate) struct Sleep {
    deadline: Instant,
    timer: Timer,
}

enum Timer {
    /// Not waiting yet.
    Unset,
    /// In a loop's timers.
    Set(Arc<dyn ReactorHome>, TimerKey),
    /// First polled outside any loop.
    AsyncIo(async_io::Timer),
}

impl Sleep {
    /// Completes after `d`.
    pub(crate) fn new(d: Duration) -> Sleep {
        let deadline = Instant::now().checked_add(d).unwrap_or_else(far_future);
        Sleep::until(deadline)
    }

    /// Completes at `deadline`.
    pub(crate) fn until(deadline: Instant) -> Sleep {
        Sleep {
            deadline,
            timer: Timer::Unset,
        }
    }

    /// Complete at `deadline` instead.
    pub(crate) fn reset(&mut self, deadline: Instant) {
        if deadline != self.deadline {
            self.cancel();
            self.deadline = deadline;
        }
    }

    fn cancel(&mut self) {
        if let Timer::Set(home, key) = std::mem::replace(&mut self.timer, Timer::Unset) {
            home.reactor().timers.remove(key);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.cancel();
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        match &mut self.timer {
            Timer::Set(home, key) if driver::is_current(home) => {
                home.reactor().timers.update(*key, cx.waker())
            }
            Timer::AsyncIo(timer) if driver::current().is_none() => {
                return Pin::new(timer).poll(cx).map(|_| ())
            }
            Timer::Set(..) | Timer::AsyncIo(_) => {
                // Polled elsewhere than where it waits: wait here instead.
                self.cancel();
                self.timer = Timer::Unset;
                return self.poll(cx);
            }
            Timer::Unset => {
                self.timer = match driver::current() {
                    Some(home) => {
                        let key = home.reactor().timers.insert(deadline, cx.waker());
                        Timer::Set(home, key)
                    }
                    None => {
                        let mut timer = async_io::Timer::at(deadline);
                        if Pin::new(&mut timer).poll(cx).is_ready() {
                            return Poll::Ready(());
                        }
                        Timer::AsyncIo(timer)
                    }
                };
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// For a delay too long to represent: about thirty years from now.
pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}
