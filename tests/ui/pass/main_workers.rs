//! `workers = N` runs `spawn_send`'s tasks on N worker threads; main stays on its own thread.

#[runner::main(workers = 2)]
async fn main() {
    let main_thread = std::thread::current().id();
    let on = runner::spawn_send(async { std::thread::current().id() }).await.unwrap();
    assert_ne!(on, main_thread);
}
