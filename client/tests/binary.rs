//! The `sluice` binary as `cargo test` builds it (this test is also why it does: the
//! integration tests run `target/<profile>/sluice`, and without a test of the binary in this
//! package `cargo test --workspace` would leave a stale one there): its help names every
//! command the README's tour and the contract use.

use std::process::Command;

#[test]
fn the_cli_help_names_every_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--help")
        .output()
        .expect("run sluice --help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).expect("utf-8 help");
    for command in [
        "topic", "produce", "consume", "group", "cluster", "user", "acl",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} missing from:\n{help}"
        );
    }
}
