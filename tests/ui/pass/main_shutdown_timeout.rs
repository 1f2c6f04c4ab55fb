//! `shutdown_timeout` bounds how long close waits for `to_thread` work (the builder's
//! `executor_shutdown_timeout`).

#[runner::main(shutdown_timeout = "2s")]
async fn main() {
    assert_eq!(runner::to_thread(|| 1).await.unwrap(), 1);
}
