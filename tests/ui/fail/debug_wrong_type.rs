#[runner::main(debug = "yes")]
async fn main() {}
