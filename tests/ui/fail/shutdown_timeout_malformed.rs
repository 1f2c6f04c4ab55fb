#[runner::main(shutdown_timeout = "soon")]
async fn main() {}
