#[runner::test(timeout = "5 hours")]
async fn slow() {}

#[runner::test(timeout = 500)]
async fn number() {}

fn main() {}
