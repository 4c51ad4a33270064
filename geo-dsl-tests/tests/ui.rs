//! Compile-fail and pass cases for `#[replicable]` (trybuild). Compiler diagnostics change between
//! releases, so the `.stderr` files are pinned to the compiler they were written with: rustc 1.95.
//! Bless new output with `TRYBUILD=overwrite cargo test -p geo-dsl-tests --test ui` and review it.

#[rustversion::stable(1.95)]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}

#[rustversion::not(stable(1.95))]
#[test]
fn ui() {
    eprintln!(
        "SKIPPED: the UI tests' .stderr files are pinned to rustc 1.95; this is another compiler"
    );
}
