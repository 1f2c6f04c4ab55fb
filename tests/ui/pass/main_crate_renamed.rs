extern crate runner as my_runner;

#[my_runner::main(crate = "my_runner")]
async fn main() {
    my_runner::sleep(std::time::Duration::from_millis(1)).await;
}
