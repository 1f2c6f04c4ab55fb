//! Issue 12, item 1: `main` may return `!`.
#![deny(warnings)]

#[runner::main]
async fn main() -> ! {
    runner::yield_now().await;
    std::process::exit(0)
}
