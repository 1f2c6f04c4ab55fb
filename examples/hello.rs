//! A small program on `#[runner::main]`: spawn a few tasks, sleep, hand blocking work to a thread.
//!
//! Run it with `cargo run --example hello`.

use std::time::{Duration, Instant};

#[runner::main]
async fn main() {
    let started = Instant::now();
    println!("main: spawning three workers");
    let workers: Vec<_> = (1..=3u64)
        .map(|n| {
            runner::spawn(async move {
                runner::sleep(Duration::from_millis(10 * n)).await;
                println!("worker {n}: woke after {} ms", 10 * n);
                n * n
            })
        })
        .collect();

    println!("main: hashing on a blocking thread while the workers sleep");
    let (thread, digest) = runner::to_thread(|| {
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        let sum = (1..=1_000_000u64).fold(0u64, |acc, x| acc.wrapping_mul(31).wrapping_add(x));
        (name, sum)
    })
    .await
    .expect("the blocking job does not panic");
    println!("main: thread {thread:?} computed {digest:#x}");

    let mut total = 0;
    for worker in workers {
        total += worker.await.expect("workers do not panic");
    }
    println!(
        "main: sum of squares = {total} (in {:?})",
        started.elapsed()
    );
}
