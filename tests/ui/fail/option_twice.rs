#[runner::main(debug, debug = false)]
async fn main() {}
