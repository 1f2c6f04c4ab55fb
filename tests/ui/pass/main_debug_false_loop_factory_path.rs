use std::time::Duration;

fn my_loop() -> runner::EventLoop {
    runner::EventLoop::builder().slow_callback_duration(Duration::from_millis(5)).build()
}

#[runner::main(debug = false, loop_factory = my_loop)]
async fn main() {
    let lp = runner::get_running_loop().unwrap();
    assert!(!lp.debug());
    assert_eq!(lp.slow_callback_duration(), Duration::from_millis(5));
}
