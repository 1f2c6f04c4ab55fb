//! Issue 23, item 18: on a function with a declared return type, `return` of a value of another
//! type is one error, at the value, as for a plain `async fn`.
#[runner::main]
async fn one() -> i32 {
    return "one";;
}

fn main() {
    let _ = one();
}
