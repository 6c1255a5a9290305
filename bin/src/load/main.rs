//! `runnel-load`: the load generator.
fn main() {}
