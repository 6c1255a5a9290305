//! Micro-benchmarks of runnel hot paths live under `benches/benches/`; run `cargo bench -p runnel-benches`.
