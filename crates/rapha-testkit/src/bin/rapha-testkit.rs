//! `rapha-testkit`: test-data tools.
fn main() {}
