//! Issue 12, item 2: inner attributes at the top of the body are lifted to the function.
#![deny(warnings)]

#[runner::main]
async fn main() {
    #![allow(unused_variables)]
    #![deny(clippy::all)]
    let unused = 1;
}
