//! A body that never returns expands without a single warning.
#![deny(warnings)]

#[runner::main]
async fn main() {
    runner::yield_now().await;
    std::process::exit(0)
}
