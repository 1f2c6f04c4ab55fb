//! The attributes of `runner`: `#[runner::main]` and `#[runner::test]`. Use them through the
//! `runner` crate, which re-exports them.
//!
//! ```ignore
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
/// closes it (R9.1).
///
/// Options: `debug`, `debug = <bool>` (unset: follow `RUNNER_DEBUG`), `loop_factory = <expr>`
/// (any `FnOnce() -> EventLoop`), `crate = "<path>"` (where `runner` is, if renamed).
///
/// `main` returns the body's value: `()`, a `Result` (so `?` works), an `ExitCode`, anything
/// `main` may return. If Ctrl-C ended the run, the process ends as killed by SIGINT after the
/// runner is closed; any other run error prints `error: <message>` and exits with status 1.
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::main(args.into(), item.into()).into()
}

/// Turn an `async fn` into a test that runs its body on a fresh runner, with debug mode on
/// (R9.2).
///
/// Options: those of `main`, plus `timeout = "<n>ms|s|m"`: the test fails with "test exceeded
/// its timeout of <n>" when the body takes longer. `debug = false` turns debug mode off. Other
/// attributes (`#[ignore]`, `#[should_panic]`) keep working; the test fails when the body
/// panics or returns `Err`, and the runner is closed in every case.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::test(args.into(), item.into()).into()
}
