//! Issue 23, item 18: `return 1;` (and a stray `;`) in a `main` that returns `()` is one error,
//! at the `1`, as for a plain `async fn`; the stray `;` keeps its own warning.
#[runner::main]
async fn main() {
    return 1;;
}
