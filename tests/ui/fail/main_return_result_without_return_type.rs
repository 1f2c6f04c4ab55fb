//! Issue 23, item 18: `return Ok(())` in a `main` that returns `()` is one error, at `Ok(())`,
//! as for a plain `async fn`.
#[runner::main]
async fn main() {
    return Ok(());
}
