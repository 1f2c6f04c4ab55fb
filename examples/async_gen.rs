//! Async generators with async cleanup: a paginated source whose connection is closed
//! asynchronously when the consumer stops early.
//!
//! Run it with `cargo run --example async_gen`.

use std::time::Duration;

use runner::{AsyncGen, GeneratorExit};

/// A pretend database connection whose `close` is asynchronous (it says goodbye to the server).
struct Connection {
    name: &'static str,
}

impl Connection {
    async fn open(name: &'static str) -> Connection {
        runner::sleep(Duration::from_millis(2)).await;
        println!("  [{name}] connection opened");
        Connection { name }
    }

    async fn fetch_page(&self, page: u32) -> Vec<u32> {
        runner::sleep(Duration::from_millis(2)).await;
        println!("  [{}] fetched page {page}", self.name);
        (page * 3..page * 3 + 3).collect()
    }

    async fn close(self) {
        runner::sleep(Duration::from_millis(5)).await; // the goodbye round trip
        println!("  [{}] connection closed (async cleanup)", self.name);
    }
}

/// Every row of every page, fetched lazily, one page at a time.
fn rows(name: &'static str) -> AsyncGen<u32> {
    AsyncGen::new(move |y| async move {
        let conn = Connection::open(name).await;
        let result: Result<(), GeneratorExit> = async {
            for page in 0.. {
                for row in conn.fetch_page(page).await {
                    y.yield_(row).await?;
                }
            }
            Ok(())
        }
        .await;
        conn.close().await; // runs on exhaustion, on aclose(), and when the generator is dropped
        result
    })
}

#[runner::main]
async fn main() {
    println!("consumer 1: reads until it finds a row above 4, then breaks");
    let mut source = rows("db-1");
    while let Some(row) = source.next().await {
        println!("consumer 1: row {row}");
        if row > 4 {
            println!("consumer 1: break");
            break;
        }
    }
    drop(source); // a started, unfinished generator: its cleanup is scheduled on the loop
    runner::sleep(Duration::from_millis(20)).await;

    println!("consumer 2: takes two rows and closes explicitly");
    let mut source = rows("db-2");
    let (a, b) = (source.next().await, source.next().await);
    println!("consumer 2: rows {a:?} {b:?}");
    source.aclose().await.expect("the generator closes cleanly");
    println!(
        "consumer 2: closed; next() now gives {:?}",
        source.next().await
    );
}
