#[runner::main(debug = true, loop_factory = || runner::EventLoop::builder().max_blocking_threads(2).build())]
async fn main() {
    assert!(runner::get_running_loop().unwrap().debug());
}
