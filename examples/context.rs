//! Context variables flowing into tasks: each request sets its own request id, and the tasks
//! it spawns (and its blocking work) see that id without it being passed around. Siblings
//! never see each other's.
//!
//! Run it with `cargo run --example context`.

use std::time::Duration;

use runner::ContextVar;

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");

/// Deep inside the call tree: nobody passed the id here.
fn log(msg: &str) {
    match REQUEST_ID.get() {
        Some(id) => println!("[request {id}] {msg}"),
        None => println!("[no request] {msg}"),
    }
}

async fn handle_request(id: u64) -> u64 {
    REQUEST_ID.set(id);
    log("started");
    let lookup = runner::spawn(async move {
        runner::sleep(Duration::from_millis(5 * (4 - id))).await;
        log("database lookup done");
        id * 100
    });
    let checksum = runner::to_thread(move || {
        log("checksum computed on a blocking thread");
        id + 1
    });
    let total = lookup.await.unwrap() + checksum.await.unwrap();
    log(&format!("finished with {total}"));
    total
}

fn main() -> Result<(), runner::RunError> {
    runner::run(async {
        log("server starting");
        let requests: Vec<_> = (1..=3)
            .map(|id| runner::spawn(handle_request(id)))
            .collect();
        for request in requests {
            request.await.unwrap();
        }
        log("all requests done; the server's own context never saw a request id");
    })
}
