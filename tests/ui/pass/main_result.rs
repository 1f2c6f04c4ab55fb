/// `?` works in a Result-returning main; doc comments and attributes are kept.
#[runner::main]
#[allow(unused_mut)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut n: u32 = "41".parse()?;
    n += runner::to_thread(|| 1).await?;
    assert_eq!(n, 42);
    Ok(())
}
