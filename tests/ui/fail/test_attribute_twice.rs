//! Issue 12, item 6: `#[runner::test]` written twice gives one error.
#[runner::test]
#[runner::test]
async fn twice() {}

fn main() {}
