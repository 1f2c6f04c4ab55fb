#[runner::main(debug)]
async fn main() {
    assert!(runner::get_running_loop().unwrap().debug());
}
