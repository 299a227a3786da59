//! Benchmarks of sluice (criterion micro-benchmarks live in `benches/`).
