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

use std::future::IntoFuture;
use std::time::Duration;

use async_io::Timer;
use futures_lite::FutureExt;

use crate::error::Elapsed;

/// Wait for `d`. Other tasks run meanwhile.
pub async fn sleep(d: Duration) {
    Timer::after(d).await;
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
            Timer::after(d).await;
            Err(Elapsed)
        })
        .await
}
