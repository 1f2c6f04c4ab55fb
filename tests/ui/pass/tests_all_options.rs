//! Test functions only exist under `cargo test`; here the attribute must expand without error.

#[runner::test]
async fn plain() {}

#[runner::test]
#[should_panic(expected = "boom")]
async fn should_panic_kept() {
    panic!("boom");
}

#[runner::test]
async fn returns_result() -> Result<(), std::num::ParseIntError> {
    let _: u8 = "1".parse()?;
    Ok(())
}

#[runner::test(debug = false, timeout = "2s", loop_factory = runner::EventLoop::new)]
async fn every_option() {}

#[runner::test(shutdown_timeout = "500ms")]
async fn with_shutdown_timeout() {}

#[runner::test(debug, timeout = "1m", crate = "runner")]
#[ignore]
async fn ignored() {}

fn main() {}
