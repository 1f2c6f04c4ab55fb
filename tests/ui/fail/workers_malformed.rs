#[runner::main(workers = "many")]
async fn main() {}
