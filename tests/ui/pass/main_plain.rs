#[runner::main]
async fn main() {
    let task = runner::spawn(async { 1 });
    assert_eq!(task.await.unwrap(), 1);
}
