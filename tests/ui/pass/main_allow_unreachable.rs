//! Issue 12, item 3: the user's `#[allow(unreachable_code)]` is not overridden.
#![deny(warnings)]

#[runner::main]
#[allow(unreachable_code)]
async fn main() {
    std::process::exit(0);
    println!("never");
}
