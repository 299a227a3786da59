//! The `sluice-bench` binary as `cargo test` builds it (this test is also why it does: the
//! bench tests run `target/<profile>/sluice-bench`, and without a test of the binary in this
//! package `cargo test --workspace` would leave a stale one there): its help names the three
//! workloads INTERFACES.md promises.

use std::process::Command;

#[test]
fn the_bench_help_names_its_workloads() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .arg("--help")
        .output()
        .expect("run sluice-bench --help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).expect("utf-8 help");
    for workload in ["produce", "consume", "e2e"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(workload)),
            "{workload} missing from:\n{help}"
        );
    }
}
