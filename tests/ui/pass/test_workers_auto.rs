//! `workers = "auto"`: one worker per core.

#[runner::test(workers = "auto")]
async fn pool_runs_send_tasks() {
    let name = runner::spawn_send(async { std::thread::current().name().map(str::to_owned) });
    assert!(name.await.unwrap().unwrap().starts_with("runner-worker-"));
}

fn main() {}
