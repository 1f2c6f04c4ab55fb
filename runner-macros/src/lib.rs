//! The attributes of `runner`: `#[runner::main]` and `#[runner::test]`. Use them through the
//! `runner` crate, which re-exports them.
//!
//! ```
//! #[runner::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let n = runner::spawn(async { 21 }).await?;
//!     println!("{}", n * 2);
//!     Ok(())
//! }
//! ```

mod entry;

use proc_macro::TokenStream;

/// Turn `async fn main` into a `fn main` that runs the body on a fresh `runner::Runner` and
/// closes it: cancel what is left, run the async cleanups, join the `to_thread` threads.
///
/// ```
/// #[runner::main]
/// async fn main() -> Result<(), std::num::ParseIntError> {
///     let n: u32 = runner::to_thread(|| "21".parse()).await.unwrap()?;
///     assert_eq!(runner::spawn(async move { n * 2 }).await.unwrap(), 42);
///     Ok(())
/// }
/// ```
///
/// `main` returns the body's value: `()`, a `Result` (so `?` works), an `ExitCode`, `!`,
/// `impl Termination`: anything `main` may return. On Ctrl-C the runner is closed, then the
/// process ends as killed by SIGINT (status 130 in a shell). Any other run error (called while
/// a loop runs on this thread, say) is a panic with the reason.
///
/// Options, each optional:
///
/// | option | example | meaning |
/// |---|---|---|
/// | `debug` | `#[runner::main(debug)]` | debug mode on (unset: follow `RUNNER_DEBUG`) |
/// | `debug = <bool>` | `#[runner::main(debug = false)]` | debug mode on or off |
/// | `loop_factory = <expr>` | `#[runner::main(loop_factory = my_loop)]` | build the loop with any `FnOnce() -> EventLoop` |
/// | `shutdown_timeout = "<n>ms\|s\|m"` | `#[runner::main(shutdown_timeout = "5s")]` | how long close waits for `to_thread` work (default 300 s) |
/// | `crate = "<path>"` | `#[runner::main(crate = "my_runner")]` | where `runner` is, if renamed |
///
/// On a function other than `main` the attribute makes a sync function that runs its body on a
/// fresh runner; such a function may take parameters (and `self`):
///
/// ```
/// #[runner::main(shutdown_timeout = "2s")]
/// async fn fetch_all(ids: &[u32]) -> Vec<u32> {
///     let tasks: Vec<_> = ids.iter().map(|&id| runner::spawn(async move { id * 10 })).collect();
///     let mut out = Vec::new();
///     for task in tasks {
///         out.push(task.await.unwrap());
///     }
///     out
/// }
///
/// assert_eq!(fetch_all(&[1, 2]), [10, 20]);
/// ```
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::main(args.into(), item.into()).into()
}

/// Turn an `async fn` into a test that runs its body on a fresh runner, with debug mode on.
///
/// ```
/// #[runner::test(timeout = "5s")]
/// async fn spawns_and_joins() {
///     assert!(runner::get_running_loop().unwrap().debug()); // tests run in debug mode
///     assert_eq!(runner::spawn(async { 1 }).await.unwrap(), 1);
/// }
/// ```
///
/// The test fails when the body panics, returns `Err`, or takes longer than its `timeout`
/// ("test exceeded its timeout of 5s"), even a body that blocks without ever yielding (checked
/// when it returns). The runner is closed in every case. Other attributes (`#[ignore]`,
/// `#[should_panic]`) keep working.
///
/// Options: those of [`macro@main`], and `timeout`:
///
/// | option | example | meaning |
/// |---|---|---|
/// | `debug = <bool>` | `#[runner::test(debug = false)]` | debug mode off (on by default in tests) |
/// | `loop_factory = <expr>` | `#[runner::test(loop_factory = || EventLoop::new())]` | build the loop |
/// | `shutdown_timeout = "<n>ms\|s\|m"` | `#[runner::test(shutdown_timeout = "1s")]` | how long close waits for `to_thread` work |
/// | `timeout = "<n>ms\|s\|m"` | `#[runner::test(timeout = "500ms")]` | fail the test after this long |
/// | `crate = "<path>"` | `#[runner::test(crate = "my_runner")]` | where `runner` is, if renamed |
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::test(args.into(), item.into()).into()
}
