//! Issue 12, item 4: an unused function is reported under `deny(dead_code)`, once.
#![deny(dead_code)]

#[runner::main]
async fn helper() {}

fn main() {}
