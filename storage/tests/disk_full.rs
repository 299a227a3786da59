//! A full disk: appends fail cleanly with `DiskFull`, nothing acknowledged is lost, the log
//! reopens with every acknowledged batch, and appends resume once space is freed, without a
//! restart. Runs on a 4 MiB tmpfs that the test mounts, so it needs root; otherwise it says
//! why it skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::*;
use sluice_protocol::LeaderEpoch;
use sluice_storage::{Clock, LogConfig, PartitionLog, SharedLog, StorageError};

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
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_fails_cleanly_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let _mount = match Tmpfs::mount(dir.path(), "4m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED disk_full_fails_cleanly_and_recovers: {why}");
            return;
        }
    };
    let filler = dir.path().join("filler");
    std::fs::write(&filler, vec![0u8; 512 << 10]).unwrap();
    let config = LogConfig {
        segment_bytes_max: 256 << 10,
        index_bytes_max: 64 << 10,
        ..LogConfig::default()
    };
    let clock = clock();
    let log_dir = dir.path().join("t-0");
    let log = SharedLog::new(
        PartitionLog::open(&log_dir, config.clone(), clock.clone() as Arc<dyn Clock>).unwrap(),
    );
    let mut acked = Vec::new();
    let mut failures = 0;
    for i in 0..2000 {
        match log.append(
            batch(&format!("r{i}"), 16, 1000, 1_700_000_000_000 + i),
            LeaderEpoch(0),
        ) {
            Ok(info) => acked.push(info),
            Err(e) => {
                assert!(e.is_disk_full(), "a full disk is reported as such: {e}");
                assert!(
                    e.to_string().contains("disk") && e.to_string().contains("full"),
                    "{e}"
                );
                failures += 1;
                if failures == 5 {
                    break;
                }
            }
        }
    }
    assert_eq!(failures, 5, "the 4 MiB disk filled up");
    assert!(!acked.is_empty());
    let end = acked.last().unwrap().last_offset.plus(1);
    assert_eq!(
        log.read().log_end_offset(),
        end,
        "failed appends leave nothing behind"
    );
    assert_eq!(read_all(&log.read(), 1 << 20).len(), acked.len());

    // Space comes back: appends succeed again, same process, same log.
    std::fs::remove_file(&filler).unwrap();
    let info = log
        .append(batch("after", 16, 1000, 1_700_000_100_000), LeaderEpoch(0))
        .expect("appends resume once space is freed");
    assert_eq!(info.base_offset, end);
    acked.push(info);

    // Crash and reopen: every acknowledged batch is there.
    drop(log);
    let log = PartitionLog::open(&log_dir, config, clock as Arc<dyn Clock>).unwrap();
    let back = read_all(&log, 1 << 20);
    assert_eq!(back.len(), acked.len());
    for (batch, info) in back.iter().zip(&acked) {
        assert_eq!(batch.header().base_offset, info.base_offset);
    }
    // Errors that are not a full disk are not reported as one.
    let not_full = StorageError::BatchTooLarge { size: 2, max: 1 };
    assert!(!not_full.is_disk_full());
}
