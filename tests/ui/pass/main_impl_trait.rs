//! Issue 12, item 1: return types with `impl Trait` in them.
#![deny(warnings)]

#[runner::main]
async fn evens() -> impl Iterator<Item = u32> {
    runner::yield_now().await;
    (0..10).filter(|n| n % 2 == 0)
}

#[runner::main]
async fn fallible() -> Result<(), impl std::fmt::Debug> {
    if runner::spawn(async { 1 }).await.unwrap() == 2 {
        return Err("two");
    }
    Ok(())
}

#[runner::main]
async fn exit_code() -> impl std::process::Termination {
    runner::yield_now().await;
    std::process::ExitCode::SUCCESS
}

fn main() -> impl std::process::Termination {
    assert_eq!(evens().sum::<u32>(), 20);
    fallible().unwrap();
    exit_code()
}
