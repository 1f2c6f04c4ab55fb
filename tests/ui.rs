//! R9.3: the attributes' compile errors (one case per error, each with its expected `.stderr`)
//! and the forms that must compile. Regenerate the `.stderr` files after a deliberate change
//! with `TRYBUILD=overwrite cargo test --test ui`, then read them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
