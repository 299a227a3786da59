//! A full data disk: produce fails with an error that says the disk is full, the broker
//! stays up and keeps serving reads, nothing acknowledged is lost, and produce works again
//! once space is freed. The data directory is a small tmpfs the test mounts, so it needs
//! root; without root it says why it skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_integration_tests::{cli, cli_ok, BrokerProcess};

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root, cannot mount a tmpfs".into());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_produce_keeps_reads_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount).unwrap();
    let _tmpfs = match Tmpfs::mount(&mount, "16m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED a_full_disk_refuses_produce_keeps_reads_and_recovers: {why}");
            return;
        }
    };
    let mut broker = BrokerProcess::start(&mount.join("data"), &["--segment-bytes", "1048576"]);
    let bootstrap = broker.bootstrap();
    cli_ok(&bootstrap, &["topic", "create", "fill"], "");
    // Fill most of the disk with a file we can delete later.
    let filler = mount.join("filler");
    let free = {
        let stat = nix_statvfs(&mount);
        stat.0 * stat.1
    };
    std::fs::write(&filler, vec![1u8; (free as usize).saturating_sub(2 << 20)]).unwrap();

    // Produce 4 KiB lines until the disk is full.
    let line = "x".repeat(4096);
    let mut acked = 0usize;
    let error = loop {
        let out = cli(&bootstrap, &["produce", "fill"], &format!("{line}\n"));
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).to_string();
        }
        acked += 1;
        assert!(acked < 10_000, "the disk never filled up");
    };
    eprintln!("disk full after {acked} acknowledged records: {error}");
    assert!(
        error.to_lowercase().contains("disk") && error.contains("full"),
        "{error}"
    );

    // Reads still work and return every acknowledged record.
    let out = cli_ok(
        &bootstrap,
        &[
            "consume",
            "fill",
            "--from-beginning",
            "-n",
            &acked.to_string(),
            "--timeout-ms",
            "10000",
        ],
        "",
    );
    assert_eq!(out.lines().count(), acked);

    // Free space: produce works again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    cli_ok(&bootstrap, &["produce", "fill"], "after\n");
    let out = cli_ok(
        &bootstrap,
        &[
            "consume",
            "fill",
            "--from-beginning",
            "-n",
            &(acked + 1).to_string(),
            "--timeout-ms",
            "10000",
        ],
        "",
    );
    assert_eq!(out.lines().last(), Some("after"));
    assert!(broker.terminate().success());
}

/// (block size, free blocks) of the filesystem holding `path`.
fn nix_statvfs(path: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    assert_eq!(rc, 0, "statvfs {}", path.display());
    (stat.f_frsize as u64, stat.f_bavail as u64)
}
